"""config.json, a run's provenance: the resolved config and its hash, the plugins' versions, the data's checksum,
the machine, and the instruments its metrics are measured with."""

from __future__ import annotations

from protobench.device import device_info
from protobench.io import atomic_write_json
from protobench.training.context import RunContext
from protobench.training.parts import Data
from protobench.vocabulary import AXES


def write_config(ctx: RunContext, data: Data | None, instruments: dict[str, str]) -> None:
    """Write the run's config.json (the main process only); `data` is None when the dataset could not be built."""
    if not ctx.dist.main:
        return
    from protobench import __version__

    cfg = ctx.cfg
    atomic_write_json(ctx.folder.config_path, {
        "run_id": cfg.run_id(), "config": cfg.to_dict(), "config_hash": cfg.hash(),
        "combination": cfg.combination(), "plugins": plugin_versions(ctx),
        "dataset_checksum": data.checksum if data else None, "protobench_version": __version__,
        "device": device_info(ctx.device, ctx.dist.world), "instruments": instruments,
        "target": data.dataset.target if data else None,  # a preset's declared target, for the report
    }, within=ctx.dir)


def plugin_versions(ctx: RunContext) -> dict[str, dict[str, str]]:
    """{"<kind>:<name>": {"plugin", "version"}} of every plugin the run's config names."""
    cfg = ctx.cfg
    chosen = [(axis, getattr(cfg, axis)) for axis in AXES] + [("metric", m) for m in cfg.metrics]
    out: dict[str, dict[str, str]] = {}
    for kind, name in chosen:
        entry = ctx.registry.get(kind, name)
        out[f"{kind}:{name}"] = {"plugin": entry.plugin, "version": entry.version}
    return out
