"""Sweeps: the cartesian product of lists over axes, each combination one run.

Axes on the command line are comma lists (`--conditioner random,proto-frozen --seed 0,1,2`). A `-o` value is
swept with `|` (`-o lr=1e-4|2e-4`), because commas belong to tuple values (`-o denoiser.channel_mult=1,2|1,2,2`).
A sweep TOML holds the run keys of a run TOML plus a `[sweep]` table of lists (`conditioner = ["random", ...]`,
`seed = [0, 1, 2]`, `"denoiser.dropout" = [0.0, 0.1]`). Command-line lists replace the TOML's for the same key.

Also what every executor (the local pool, Slurm) lists for a combination: its record, finished or failed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from protobench.config import check_key, flatten_toml, read_toml
from protobench.errors import UsageError
from protobench.io import json_digest
from protobench.vocabulary import AXES as RUN_AXES

#: axes a sweep takes as comma lists on the command line
AXES = (*RUN_AXES, "seed")  # a sweep also varies the seed

#: `protobench sweep` with no axes: the paper's comparison on the embedded dataset
DEFAULT_SWEEP: dict[str, list[Any]] = {
    "dataset": ["digits"],
    "conditioner": ["none", "random", "proto-frozen", "proto-unfrozen"],
    "seed": [0, 1, 2],
}


def split_list(text: str, sep: str = ",") -> list[str]:
    items = [v.strip() for v in str(text).split(sep)]
    if not all(items):
        raise UsageError(f"empty item in sweep list {text!r}")
    return items


def split_overrides(pairs: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`-o` pairs -> (fixed pairs, {key: swept values}); a value containing `|` is swept."""
    fixed, swept = [], {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"-o expects key=value, got {pair!r}")
        key, value = (s.strip() for s in pair.split("=", 1))
        if "|" in value:
            check_key(key)
            swept[key] = split_list(value, "|")
        else:
            fixed.append(pair)
    return fixed, swept


def load_sweep_toml(path: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A sweep TOML -> (fixed flat keys, {key: list of values}) from its `[sweep]` table."""
    data = read_toml(path)
    table = data.get("sweep", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [sweep] must be a table of lists")
    lists: dict[str, list[Any]] = {}
    for key, values in table.items():
        check_key(key)
        lists[key] = list(values) if isinstance(values, list) else [values]
        if not lists[key]:
            raise UsageError(f"{path}: [sweep] {key} is an empty list")
    return flatten_toml(data, str(path)), lists


def expand(lists: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, seed outermost: a sweep stopped early has whole comparisons for its first seeds."""
    keys = sorted(lists, key=lambda k: (k != "seed", AXES.index(k) if k in AXES else len(AXES), k))
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(lists[k] for k in keys))]


def sweep_id(combos: list[dict[str, Any]], fixed: dict[str, Any]) -> str:
    return json_digest({"combos": combos, "fixed": fixed}, 10)


def describe(combo: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items())


def failed_record(error: str | None, config: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """A combination that left no readable record of its own, as the sweep lists it."""
    return {"run_id": run_id, "status": "failed", "error": error, "combination": None, "config": config,
            "evals": [], "best": None}


def spread(jobs: list[Any]) -> list[Any]:
    """Within each (dataset, seed), interleave the second and the first half of the arms.

    Neighbours in a sweep's order often share a cached prepare step (proto-frozen and proto-unfrozen share
    Stage I): run side by side both would compute it, spread apart the second finds it in the cache. The arms
    listed last (in the default sweep, those with a prepare step) start first, so that two jobs at a time
    finish together (measured on the default sweep: 150 s vs 181 s per seed when they started second)."""
    groups: dict[tuple, list[Any]] = {}
    for job in jobs:
        groups.setdefault((job.cfg.dataset, job.cfg.seed), []).append(job)
    ordered: list[Any] = []
    for group in groups.values():
        half = len(group) // 2
        first, second = group[half:], group[:half]
        for i, job in enumerate(first):
            ordered.append(job)
            if i < len(second):
                ordered.append(second[i])
    return ordered


def finished_record(out: Path, cfg) -> dict[str, Any] | None:
    """The record of `cfg`'s run if it has already completed (indexed), else None: a sweep skips it."""
    from protobench import store
    from protobench.runfolder import RunFolder

    folder = RunFolder(out, cfg.run_id())
    prior = folder.completed()
    return None if prior is None else (store.index_run(out, folder.path) or prior)


def indexed_record(out: Path, cfg) -> dict[str, Any] | None:
    """`cfg`'s run record, (re)indexed, once its job has ended: None if it never started, a failed record saying
    so if its folder cannot be read (the sweep lists it and goes on)."""
    from protobench import store
    from protobench.diskspace import is_no_space
    from protobench.runfolder import RunFolder

    try:
        return store.index_run(out, RunFolder(out, cfg.run_id()).path)
    except Exception as exc:
        if is_no_space(exc):  # the index could not be written: the sweep stops (resumably), the run is not failed
            raise
        return failed_record(f"unreadable run: {exc}", cfg.to_dict(), cfg.run_id())
