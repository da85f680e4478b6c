"""Where a config comes from besides defaults: `-o key=value` pairs and TOML files, read into flat overrides;
and the results folder they are written to, checked before anything is."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from protobench.errors import UsageError
from protobench.vocabulary import flatten_options


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"-o expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or invalid file is one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}): a TOML file must be UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise UsageError(f"{path}: nested too deeply to be a config (arrays or tables inside each other)") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """A run TOML: top-level keys, plus `[options.<kind>]` tables. Returns flat overrides."""
    return flatten_toml(read_toml(path), str(path))


def flatten_toml(data: dict[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "options":
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [options] must be a table of [options.<kind>] tables")
            for kind, opts in value.items():
                if not isinstance(opts, dict):
                    raise UsageError(f"{where}: options.{kind} must be a table")
                plain = {k: v for k, v in opts.items() if not isinstance(v, dict)}
                flat.update(flatten_options({kind: plain}))
                for name, table in opts.items():  # [options.conditioner.proto-unfrozen]: only when that plugin runs
                    if isinstance(table, dict):
                        flat.update({f"{kind}:{name}.{k}": v for k, v in table.items()})
        elif key in ("sweep", "slurm", "description", "name"):
            continue
        else:
            flat[key] = value
    return flat


def check_out(out: str | Path, write: bool = True) -> None:
    """`--out` must be a folder, or a path where one can be made (with `write`, by this user, on a writable
    disk: tried, then undone). Checked after the config and before anything is written."""
    import os
    import tempfile

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    missing = []
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, so no folder can be made below it")
    if not write:
        return
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()
