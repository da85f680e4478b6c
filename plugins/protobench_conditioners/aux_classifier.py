"""The auxiliary classifier (`aux-classifier`): a frozen classifier's cross-entropy on the denoiser's x̂0 as a
way of conditioning a diffusion U-Net, from "Towards Conditionality for Probabilistic Diffusion Models"
(paper 003), after Odena et al. 2017 (AC-GAN)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protobench import NULL_LABEL, Conditioner, Conditioning, ConditionSpec, LossContext, PrepareContext
from protobench.kit import cache, json_digest, random_shift
from protobench_conditioners._labels import add_null_token, check_null, checked_labels, embed_with_null

#: the auxiliary classifier's own seed (offset by the run's seed): not the metrics' evaluator seed
AUX_CLASSIFIER_SEED = 3_000_017


class AuxClassifierNet(nn.Module):
    """The auxiliary classifier: a small CNN on images in [-1, 1]. GroupNorm and no dropout, so train and
    eval mode compute the same function (the frozen net sits inside a model that is put in train mode)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]

        self.stem = nn.Sequential(*block(in_channels, width))
        self.body = nn.Sequential(*block(width, 2 * width), *block(2 * width, 2 * width))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        if min(h.shape[-2:]) >= 8:  # halve once: the deeper layers work at half resolution
            h = F.avg_pool2d(h, 2)
        return self.head(self.body(h).mean(dim=(2, 3)))


class AuxClassifierConditioner(Conditioner):
    """M_AC (paper 003): the label embedded as one image-sized plane concatenated to the input channels,
    plus `aux_weight` × the cross-entropy of a frozen, pre-trained classifier on the denoiser's x̂0.

    The classifier is trained in `prepare` on the training split (own CNN, own seed) and then frozen, as the
    report found a jointly trained one co-adapts with the denoiser. The cross-entropy is applied only where
    t < `aux_max_t` (timestep units) and never to null-label samples: at high noise x̂0 is a blurred mean that
    no classifier can read, and pushing class evidence into it is the artefact-making "tricking" the report saw.
    """

    name = "aux-classifier"

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], null: str = "learned",
                 aux_weight: float = 0.1, aux_max_t: int = 300, classifier_width: int = 32,
                 classifier_epochs: int = 12, classifier_lr: float = 1e-3, classifier_batch_size: int = 64):
        super().__init__()
        check_null(null)
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if classifier_epochs < 1:
            raise ValueError(f"classifier_epochs must be >= 1, got {classifier_epochs}")
        c, h, w = image_shape
        self.num_classes = num_classes
        self.image_shape = (c, h, w)
        self.spec = ConditionSpec(planes=1)
        self.aux_weight, self.aux_max_t = float(aux_weight), int(aux_max_t)
        self.classifier_options = {"width": classifier_width, "epochs": classifier_epochs, "lr": classifier_lr,
                                   "batch_size": classifier_batch_size}
        self.label_plane = nn.Embedding(num_classes, h * w)  # the label embedded to one w×h channel
        add_null_token(self, "null_plane", null, h * w)
        self.classifier = AuxClassifierNet(c, num_classes, classifier_width)
        self.classifier.requires_grad_(False)  # frozen: AdamW is built over parameters that require grad
        # a buffer, so a resumed run (which skips prepare) knows its checkpointed classifier is the trained one
        self.register_buffer("classifier_ready", torch.zeros((), dtype=torch.bool))

    def forward(self, labels: Tensor) -> Conditioning:
        labels = checked_labels(labels, self.num_classes)
        planes = embed_with_null(self.label_plane, self.null_plane, labels)
        _, h, w = self.image_shape
        return Conditioning(planes=planes.view(-1, 1, h, w))

    # -- the frozen classifier -----------------------------------------------------------------
    def cache_key(self, ctx: PrepareContext) -> str:
        ident = {"dataset": ctx.dataset_checksum, "options": self.classifier_options, "seed": self._seed(ctx),
                 "shape": list(self.image_shape), "classes": self.num_classes}
        return json_digest(ident, 16)

    def _seed(self, ctx: PrepareContext) -> int:
        return AUX_CLASSIFIER_SEED + ctx.seed

    def prepare(self, ctx: PrepareContext) -> None:
        key = self.cache_key(ctx)
        found = cache.load_tensors(ctx.cache_dir, "aux-classifiers", key)
        if found is not None:
            tensors, meta, _path = found
            self.classifier.load_state_dict(tensors)
            ctx.charge(meta["train_seconds"])  # the run still pays for the cached training
        else:
            meta = self._train(ctx)
            cache.save_tensors(ctx.cache_dir, "aux-classifiers", key, self.classifier.state_dict(), meta)
        self.classifier.requires_grad_(False)
        self.classifier_ready.fill_(True)
        ctx.results["aux_classifier"] = {"test_accuracy": meta["test_accuracy"], "key": key,
                                         "train_seconds": meta["train_seconds"]}

    def _train(self, ctx: PrepareContext) -> dict:
        from rich.console import Console
        from rich.progress import track

        opts = self.classifier_options
        device = next(self.classifier.parameters()).device
        start = time.perf_counter()
        net = self.classifier
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self._seed(ctx))
            gen = torch.Generator().manual_seed(self._seed(ctx))
            fresh = AuxClassifierNet(self.image_shape[0], self.num_classes, opts["width"]).to(device)
            net.load_state_dict(fresh.state_dict())  # the seed, not the order of construction, fixes the init
            net.requires_grad_(True)
            opt = torch.optim.Adam(net.parameters(), lr=opts["lr"])
            x_all, y_all = ctx.train.as_float(), ctx.train.labels.long()
            n, bs = len(x_all), opts["batch_size"]
            epochs = track(range(opts["epochs"]), description="aux classifier", transient=True,
                           console=Console(stderr=True), disable=not ctx.show_progress)
            for _ in epochs:
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, bs):
                    idx = perm[i:i + bs]
                    loss = F.cross_entropy(net(random_shift(x_all[idx], gen).to(device)), y_all[idx].to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            net.requires_grad_(False)
            for p in net.parameters():
                p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return {"dataset_checksum": ctx.dataset_checksum, "options": opts, "seed": self._seed(ctx),
                "train_seconds": seconds, "test_accuracy": self.accuracy(ctx.test.as_float(), ctx.test.labels)}

    @torch.no_grad()
    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        device = next(self.classifier.parameters()).device
        logits = torch.cat([self.classifier(images[i:i + 512].to(device)) for i in range(0, len(images), 512)])
        return float((logits.argmax(1).cpu() == labels.long()).float().mean())

    def extra_loss(self, ctx: LossContext) -> Tensor | None:
        if self.aux_weight == 0:
            return None
        if not bool(self.classifier_ready):
            raise RuntimeError("aux-classifier: prepare() must train or load the classifier before training")
        keep = (ctx.labels != NULL_LABEL) & (ctx.t < self.aux_max_t)
        if not bool(keep.any()):
            return ctx.x0_pred.sum() * 0.0  # keeps the graph shape the same on every step
        logits = self.classifier(ctx.x0_pred[keep].float())
        # L = L_simple + λ · CE(classifier(x̂0), y)  (paper 003, "weighted sum" of the two losses)
        return self.aux_weight * F.cross_entropy(logits, ctx.labels[keep].long())
