"""A conditioner's prepare step before training (Stage I for the proto arms), booked on the ledger: the device
time it took here, or the time a cached result took when it was made, and its work in machine-independent units."""

from __future__ import annotations

from protobench.events import PREPARE, STAGE
from protobench.ledger import Ledger
from protobench.training.context import RunContext
from protobench.training.objective import DiffusionModel
from protobench.training.parts import Parts, prepare_context


def prepare_conditioner(ctx: RunContext, model: DiffusionModel, parts: Parts, ledger: Ledger,
                        work: dict[str, float]) -> None:
    """Run the conditioner's prepare step, if it has one (one without is charged 0), and write the `prepare`
    event; `work` gains its images and FLOPs."""
    pctx = prepare_context(parts, ctx.show_progress and ctx.dist.main)
    if model.conditioner.prepares:
        ctx.event(STAGE, name=model.conditioner.prepare_stage)
        ctx.say(f"{ctx.cfg.conditioner}: prepare (e.g. Stage I) ...")
        with ledger.phase("prepare", ctx.sync):
            model.conditioner.prepare(pctx)
    ctx.charge_prepare(ledger, work, pctx)
    model.to(ctx.device)
    ctx.event(PREPARE, component="conditioner", device_seconds=ledger.device_seconds["prepare"],
              results=pctx.results, work=dict(work))
