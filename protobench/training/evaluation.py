"""Evaluation: a run's evaluations (instruments, generation, metrics, grids), and what `protobench eval` and
`protobench sample` do with the same parts: score any generator's samples against a dataset, draw from a
trained run. Heavy imports (torch) happen inside the functions: the command line imports this module."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protobench.errors import UsageError

if TYPE_CHECKING:  # torch: imported by the functions that run
    from protobench.config import RunConfig
    from protobench.plugins import Registry
    from protobench.training.context import RunContext
    from protobench.training.parts import Parts
    from protobench.training.state import TrainState

DEFAULT_METRICS = ("fid", "kid", "precision-recall")
LABELLED_METRICS = ("class-accuracy",)  # added by default when the file has labels


def load_samples(path: Path) -> tuple[Any, Any]:
    """(images uint8 N×C×H×W, labels int64 N or None) from an .npz; any problem is one UsageError line."""
    import numpy as np
    import torch

    if not path.is_file():
        raise UsageError(f"samples file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise UsageError(f"{path}: not an .npz archive (a single .npy array)")
        with data:
            if "images" not in data.files:
                raise UsageError(f"{path}: no 'images' array (found: {', '.join(data.files) or 'none'})")
            images = data["images"]
            labels = data["labels"] if "labels" in data.files else None
    except UsageError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    if images.dtype != np.uint8:
        raise UsageError(f"{path}: 'images' must be uint8 (0..255), got {images.dtype}")
    if images.ndim != 4:
        raise UsageError(f"{path}: 'images' must be N×H×W×C or N×C×H×W (rank 4), got shape {images.shape}")
    if images.shape[0] == 0 or 0 in images.shape:
        raise UsageError(f"{path}: 'images' is empty (shape {images.shape})")
    channels_first, channels_last = images.shape[1] in (1, 3), images.shape[-1] in (1, 3)
    if channels_last and not channels_first:
        images = images.transpose(0, 3, 1, 2)
    elif not channels_first:
        raise UsageError(f"{path}: cannot tell the channel axis of shape {images.shape} (expected 1 or 3 channels)")
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if labels is None:
        return tensor, None
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UsageError(f"{path}: 'labels' must have one entry per image ({images.shape[0]}), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    return tensor, torch.from_numpy(labels.astype(np.int64))


def evaluate_file(samples: Path, dataset_name: str, metric_names: tuple[str, ...], inception_weights: Path | None,
                  data_root: str | None, out: Path, overrides: tuple[str, ...] = (), show_progress: bool = True
                  ) -> dict[str, Any]:
    """Score an .npz of samples against a dataset: the record `protobench eval --json` prints."""
    from protobench.config import build_config, build_metrics, parse_overrides
    from protobench.device import device_info, pick_device
    from protobench.interfaces import Reference
    from protobench.paths import cache_dir
    from protobench.plugins import get_registry
    from protobench.rank import current_dist
    from protobench.training.parts import inception_weights as weights_from_config

    registry = get_registry()
    images, labels = load_samples(samples)
    user = parse_overrides(overrides)
    unknown = [k for k in user if not k.startswith(("dataset.", "metric."))]
    if unknown:
        raise UsageError(f"eval accepts -o dataset.<option> and metric.<option>, got {unknown[0]!r}")
    if not metric_names:
        metric_names = DEFAULT_METRICS + (LABELLED_METRICS if labels is not None else ())
    for name in metric_names:
        if getattr(registry.get("metric", name).cls, "needs_labels", False) and labels is None:
            raise UsageError(f"metric {name!r} needs class labels: add a 'labels' array to {samples}")
    # the same resolution as a run's: options checked and typed, unknown ones named
    cfg = build_config({**user, "dataset": dataset_name, "metrics": ",".join(metric_names)}, registry)
    data_root = data_root or os.environ.get("PROTOBENCH_DATA_ROOT")
    dataset = registry.build("dataset", dataset_name, cfg.options["dataset"], {"data_root": data_root})
    dataset.load()
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= dataset.num_classes):
        raise UsageError(f"{samples}: labels must be in [0, {dataset.num_classes}) for {dataset_name}, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    try:
        images = dataset.resize(images)
    except ValueError as exc:
        raise UsageError(f"{samples}: {exc}") from None
    built = build_metrics(cfg, registry, {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape)})
    metrics = list(zip(cfg.metrics, built, strict=True))
    device = pick_device(current_dist())
    inception_weights = inception_weights or weights_from_config(cfg)
    reference = Reference(dataset, cache_dir(out), device, seed=0, inception_weights=inception_weights,
                          show_progress=show_progress)
    start = time.perf_counter()
    for _name, metric in metrics:
        metric.prepare(reference)
    prepare_seconds = time.perf_counter() - start
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name, metric in metrics:
        t0 = time.perf_counter()
        values.update(metric.compute(images, labels, reference))
        seconds[name] = time.perf_counter() - t0
    record: dict[str, Any] = {
        "samples": str(samples), "dataset": dataset_name, "dataset_checksum": dataset.checksum(),
        "n": int(images.shape[0]), "labels": labels is not None, "metrics": values,
        "metric_seconds": seconds, "prepare_seconds": prepare_seconds, "device": device_info(device, 1),
        "inception_weights": str(inception_weights) if inception_weights else None,
    }
    # the measuring instruments, through the metric interface: their digests, and how good each one is
    instruments: dict[str, str] = {}
    details: dict[str, dict] = {}
    for _name, metric in metrics:
        instruments.update(metric.instruments(reference))
        details.update(metric.instrument_details(reference))
    record["instruments"] = instruments
    evaluator = next((d for label, d in details.items() if label.endswith("-evaluator")), None)
    if evaluator is not None:
        record["evaluator"] = evaluator
    return record


def _write_npz(path: Path, images, labels) -> None:
    import numpy as np

    from protobench.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())  # N×H×W×C, the common layout
    atomic_write_bytes(path, buf.getvalue())


def sample_run(run_id: str, out: Path, class_k: int | None, n: int | None, output: Path | None,
               seed: int = 0) -> dict[str, Any]:
    """Draw samples from a run's latest checkpoint (EMA weights) with its own guidance and sampler."""
    import torch

    from protobench.plugins import get_registry
    from protobench.runfolder import RunFolder
    from protobench.training.generation import load_trained, save_grid

    folder = RunFolder(out, run_id)
    if not folder.config_path.is_file():
        raise UsageError(f"no run {run_id!r} under {folder.path.parent} (missing {folder.config_path})")
    trained = load_trained(folder.path, get_registry())
    cfg, num_classes = trained.parts.cfg, trained.parts.dataset.num_classes
    if class_k is not None and not 0 <= class_k < num_classes:
        raise UsageError(f"--class must be in [0, {num_classes}) for {cfg.dataset}, got {class_k}")
    if n is None:
        n = 10 if class_k is not None else 10 * min(num_classes, 10)
    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    labels = torch.full((n,), class_k) if class_k is not None else torch.arange(n) % num_classes
    samples, labels, acceptance = trained.draw(n, seed, labels=labels)
    if not len(samples):
        raise UsageError(f"rejection sampling accepted none of the {n} samples (rate 0); nothing written")
    if output is None:
        output = folder.path / f"sample-{'all' if class_k is None else f'class{class_k}'}-n{n}-s{seed}.png"
    if output.suffix == ".npz":
        _write_npz(output, samples, labels)
    elif class_k is not None:  # one class: fill rows of 10 rather than a single class row
        layout = torch.arange(len(samples)) // 10  # rejection may have dropped some
        save_grid(samples[:100], layout[:100], int(layout[:100].max()) + 1, output)
    else:
        save_grid(samples, labels, num_classes, output)
    return {"run_id": run_id, "output": str(output), "n": n, "class": class_k,
            "images_seen": trained.checkpoint["images_seen"], "checkpoint": trained.checkpoint["file"],
            "guidance": cfg.guidance, "sampler": cfg.sampler, "acceptance_rate": acceptance,
            "samples_dropped": n - len(samples)}


# ---------------------------------------------------------------------------------------------
# a run's evaluations


def final_sample_count(cfg, dataset, metrics, reference) -> int:
    """The samples of the last evaluation; refuses (UsageError) sample counts the metrics cannot score."""
    classes = dataset.num_classes
    for metric in metrics:  # refused now, not after training
        need = metric.min_samples_per_class * classes
        if cfg.eval_samples < need:
            raise UsageError(f"metric {metric.name} needs at least {metric.min_samples_per_class} samples per "
                             f"class: eval_samples >= {need} for {cfg.dataset}'s {classes} classes "
                             f"(got {cfg.eval_samples})")
    # a per-class covariance from fewer samples than feature dimensions is rank-deficient (and biased):
    # final_eval_samples=0 draws what the metrics need; fewer, asked for explicitly, is refused unless allowed
    need = max([metric.per_class_dimension(reference) for metric in metrics] or [0])
    final = cfg.final_eval_samples or max(cfg.eval_samples, need * classes)
    if final // classes < need and not cfg.few_final_samples:
        raise UsageError(f"final_eval_samples {final} is {final // classes} samples per "
                         f"class, fewer than the evaluator's {need} feature dimensions that per-class metrics "
                         f"need: final_eval_samples >= {need * classes}, or -o few_final_samples=true")
    return final


class Evaluator:
    """A run's evaluations: sample counts checked when built, the measuring instruments (`prepare_instruments`),
    and each evaluation (`evaluate`): samples from the EMA net, scores, a grid, the `eval` event."""

    def __init__(self, ctx: RunContext, parts: Parts):
        self.ctx = ctx
        self.parts = parts
        self.instruments: dict[str, str] = {}
        self.final_samples = final_sample_count(parts.cfg, parts.dataset, parts.metrics, self.reference())
        self._compiled = None  # one compiled sampler per run: later evaluations reuse it

    def reference(self):
        from protobench.interfaces import Reference
        from protobench.paths import cache_dir
        from protobench.training.parts import inception_weights

        return Reference(self.parts.dataset, cache_dir(self.ctx.out), self.ctx.device, seed=0, show_progress=False,
                         inception_weights=inception_weights(self.parts.cfg))

    def prepare_instruments(self) -> dict[str, str]:
        """The measuring instruments (evaluator, real statistics): cached, not charged, and drawing no random
        numbers from the training stream, so a cold cache and a warm one give the same run."""
        self.instruments = {}
        with self.ctx.fork_rng():
            for metric in self.parts.metrics:
                metric.prepare(self.reference())
                self.instruments.update(metric.instruments(self.reference()))
        return self.instruments

    def _net(self, ema):
        """The EMA net to sample from, compiled with `-o compile` (and the clock of its compiling calls)."""
        from protobench.interfaces import ConditionedNet
        from protobench.training import compiled

        ctx = self.ctx
        net = ConditionedNet(ema.conditioner, ema.denoiser, self.parts.dataset.num_classes)
        if compiled.enabled(self.parts.cfg.compile, ctx.device):
            self._compiled = self._compiled or compiled.CompiledNet(net, ctx.device)
            return self._compiled, self._compiled.clock
        return net, None

    def _prepare_guidance(self, net, state: TrainState) -> None:
        """Fit the guidance on the trained net (feature guidance's classifier), charged to prepare."""
        from protobench.training.parts import prepare_context

        ctx, parts = self.ctx, self.parts
        pctx = prepare_context(parts, ctx.show_progress and ctx.dist.main, net=net, schedule=parts.schedule)
        with state.ledger.phase("prepare", ctx.sync):
            parts.guidance.prepare(pctx)
        ctx.charge_prepare(state.ledger, state.prepare_work, pctx)
        ctx.event("prepare", component="guidance", images_seen=state.images_seen, results=pctx.results,
                  device_seconds=state.ledger.device_seconds["prepare"], work=dict(state.prepare_work))

    def sample_count(self, images_seen: int) -> int:
        """Samples the evaluation at `images_seen` draws: eval_samples, and the final count at the budget."""
        cfg = self.parts.cfg
        return self.final_samples if images_seen >= cfg.budget else cfg.eval_samples

    def evaluate(self, state: TrainState) -> None:
        """Sample from the EMA net, score, save the grid; append to `state.evals` and record the `eval` event."""
        from protobench.training import compiled
        from protobench.training.generation import generate

        cfg, ctx, parts = self.parts.cfg, self.ctx, self.parts
        net, clock = self._net(state.ema.model)
        if parts.guidance.prepares:
            self._prepare_guidance(net, state)
        # the last evaluation may draw more samples (final_eval_samples): per-class metrics scored on all of them
        # go to `final`; `metrics` keep the first eval_samples, so the curve has one sample count throughout
        count = self.sample_count(state.images_seen)
        ctx.event("stage", name=f"evaluating: sampling {count} images", images_seen=state.images_seen)
        scores: dict[str, Any] = {"metrics": {}, "metrics_se": {}, "unscored": {}, "final": {}}
        with ctx.fork_rng(), state.ledger.phase("eval", ctx.sync):
            samples, labels, acceptance = generate(net, parts.guidance, parts.sampler, parts.schedule, count,
                                                   parts.dataset.num_classes, tuple(parts.dataset.image_shape),
                                                   seed=cfg.seed + 12345, device=ctx.device, dist=ctx.dist)
            if ctx.dist.main and len(samples):  # rejection may have dropped every sample: nothing to score
                scores = self._score(samples, labels, count)
                self._save_grid(samples, labels, state.images_seen)
        compiled.move_to_compile(state.ledger, clock, "eval")
        ev = {"images_seen": state.images_seen, "step": state.step, "device_seconds": state.ledger.snapshot(),
              "work": state.work(), "metrics": scores["metrics"], "metrics_se": scores["metrics_se"],
              "samples": min(cfg.eval_samples, len(samples)), "instruments": self.instruments,
              # rejection sampling: the share of draws accepted (None: nothing rejects) and the samples dropped
              "acceptance_rate": acceptance, "samples_dropped": count - len(samples),
              "metrics_unscored": scores["unscored"],
              "conditioner": state.model.conditioner.diagnostics(),
              "grid": f"samples/{state.images_seen:09d}.png",  # the grid saved above: what loggers show
              **({"final": scores["final"]} if scores["final"] else {})}
        state.evals.append(ev)
        ctx.event("eval", **ev)

    def _score(self, samples, labels, count: int) -> dict[str, Any]:
        """Every metric on the first eval_samples, and (`final`) on all samples when there are more."""
        ref = self.reference()
        n = self.parts.cfg.eval_samples
        metrics: dict[str, float] = {}
        metrics_se: dict[str, float] = {}
        unscored: dict[str, str] = {}
        for metric in self.parts.metrics:
            try:
                metrics.update(metric.compute(samples[:n], labels[:n], ref))
                metrics_se.update(metric.standard_errors(samples[:n], labels[:n], ref))
            except UsageError as exc:  # too few accepted samples (of some class) for this metric
                if len(samples) == count:
                    raise
                unscored[metric.name] = str(exc)
        final: dict[str, Any] = {}
        if len(samples) > n:
            final = {"samples": len(samples), "metrics": {}, "metrics_se": {}}
            for metric in self.parts.metrics:
                if metric.name in unscored:
                    continue
                try:
                    final["metrics"].update(metric.compute(samples, labels, ref))
                    final["metrics_se"].update(metric.standard_errors(samples, labels, ref))
                except UsageError as exc:  # as above: too few accepted samples
                    if len(samples) == count:
                        raise
                    unscored[metric.name] = str(exc)
        return {"metrics": metrics, "metrics_se": metrics_se, "unscored": unscored, "final": final}

    def _save_grid(self, samples, labels, images_seen: int) -> None:
        from protobench.io import copy_file
        from protobench.training.generation import save_grid

        run_dir, dataset = self.ctx.dir, self.parts.dataset
        grid = run_dir / "samples" / f"{images_seen:09d}.png"
        save_grid(samples, labels, dataset.num_classes, grid, class_names=dataset.class_names)
        copy_file(grid, run_dir / "samples.png", within=run_dir)


def build_evaluator(cfg: RunConfig, registry: Registry, out: Path, show_progress: bool = True) -> Evaluator:
    """The evaluator `cfg`'s run would have, its parts built as the run builds them; UsageError when the config's
    parts refuse to build (or its sample counts are too few for its metrics)."""
    from protobench.training.context import RunContext
    from protobench.training.parts import build_parts, load_data

    ctx = RunContext(cfg, registry, out, show_progress=show_progress)
    return Evaluator(ctx, build_parts(cfg, registry, load_data(cfg, registry), ctx.out, ctx.device))
