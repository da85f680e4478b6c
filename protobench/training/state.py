"""The train state: the model and its EMA, the optimizer (or DeepSpeed's engine around both), precision, the
training generator and the counters. Built whole in one constructor; a checkpoint restores it."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from protobench.config import RunConfig
from protobench.data_parallel import initialize_engine
from protobench.ledger import Ledger
from protobench.training.checkpoints import restore_state
from protobench.training.context import RunContext
from protobench.training.objective import DiffusionModel
from protobench.training.parts import Parts
from protobench.training.precision import Precision


class EMA:
    """Exponential moving average of the trained weights, used for evaluation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # warm-up so that short runs are not dominated by the initial weights
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters(), strict=True)]
        torch._foreach_lerp_(ema_params, params, 1 - decay)  # one multi-tensor update
        ema_buffers = list(self.model.buffers())
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, [b.detach() for b in model.buffers()])


class TrainState:
    """Everything training changes, from the config and a prepared `model`, restored from `checkpoint` when
    there is one. `ledger` and `prepare_work` carry what the run booked before training (Stage I)."""

    def __init__(self, cfg: RunConfig, ctx: RunContext, parts: Parts, model: DiffusionModel, ledger: Ledger,
                 prepare_work: dict[str, float], checkpoint: dict[str, Any] | None = None):
        self.cfg = cfg
        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]
        # the fused kernel: one call per step instead of ~12 per parameter tensor (the per-step fixed cost)
        fused = all(p.device.type in ("cpu", "cuda") for p in trainable) or None
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        deepspeed = ctx.dist.world > 1 or cfg.zero_stage > 0  # ZeRO asked for on one process too: DeepSpeed's engine
        self.precision = Precision(cfg.precision, ctx.device, deepspeed=deepspeed)
        self.engine = None
        if deepspeed:
            # DeepSpeed broadcasts rank 0's weights; the EMA is taken after, so it starts equal on every rank
            self.engine = initialize_engine(model, self.optimizer, cfg, ctx.dist)
            torch.manual_seed(cfg.seed * 1000 + ctx.dist.rank)  # dropout differs per rank, as its slice does
        self.ema = EMA(model, cfg.ema_decay)
        self.train_gen = torch.Generator().manual_seed(cfg.seed)
        self.images_seen = 0
        self.step = 0
        self.evals: list[dict[str, Any]] = []
        self.ledger = ledger
        #: work in machine-independent units done before training (Stage I, guidance fitting)
        self.prepare_work = prepare_work
        self.last_loss = (math.nan, math.nan)  # (loss, mse) last read from the device
        self.world = ctx.dist.world
        if checkpoint is not None:
            restore_state(self, checkpoint)
        self.flops_per_image = self._count_flops_per_image(parts, ctx)

    @property
    def module(self) -> DiffusionModel:
        """The model whose weights are saved: DeepSpeed's wrapped module, or the model itself."""
        return self.engine.module if self.engine is not None else self.model

    @property
    def deepspeed_owns_optimizer(self) -> bool:
        """ZeRO or mixed precision: DeepSpeed wraps (and may shard) the optimizer, so it saves its state itself."""
        return self.engine is not None and self.engine.optimizer is not self.optimizer

    def work(self) -> dict[str, dict[str, float]]:
        """Machine-independent work so far: images through the networks and training FLOPs, prepare apart."""
        return {"images": {"prepare": self.prepare_work["images"], "train": float(self.images_seen)},
                "flops": {"prepare": self.prepare_work["flops"], "train": self.images_seen * self.flops_per_image}}

    def _count_flops_per_image(self, parts: Parts, ctx: RunContext) -> float:
        """Training FLOPs (forward + backward) per image, counted once on a small batch of this config."""
        from protobench.flops import count_flops

        n, device = 4, ctx.device
        gen = torch.Generator().manual_seed(0)
        shape = tuple(parts.dataset.image_shape)
        x0 = torch.randn((n, *shape), generator=gen).to(device)
        labels = torch.arange(n).remainder(parts.dataset.num_classes).to(device)
        t = torch.randint(0, self.cfg.timesteps, (n,), generator=gen).to(device)
        noise = torch.randn((n, *shape), generator=gen).to(device)
        model = self.module
        was_training = model.training
        model.train()

        def fwd_bwd() -> None:
            total, _ = model(x0, labels, t, noise)
            # gradients returned, not accumulated: ZeRO's reduce hooks on .grad must not see this backward
            torch.autograd.grad(total, [p for p in model.parameters() if p.requires_grad], allow_unused=True)

        # its own RNG stream (dropout) and no gradients left behind: the run continues as if never counted
        with ctx.fork_rng():
            flops = count_flops(fwd_bwd)
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
        return flops / n

    def param_digests(self) -> list[str]:
        """A hash of the trained and EMA weights from every rank, in rank order: data parallel keeps them equal."""
        import hashlib

        import torch.distributed as tdist

        h = hashlib.sha256()
        for prefix, module in (("model", self.model), ("ema", self.ema.model)):
            for key, value in sorted(module.state_dict().items()):
                h.update(f"{prefix}.{key}".encode())
                h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        digests: list[Any] = [None] * self.world
        tdist.all_gather_object(digests, h.hexdigest())
        return digests
