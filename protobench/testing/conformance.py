"""One conformance test class per plugin kind (in the spirit of diffusers' model/scheduler test mixins).

A subclass names the plugin (``plugin_name``) and, if needed, small options (``options``); every
``test_*`` method then checks one part of the contract the core relies on. To opt out of one check
for a good reason, set it to None in the subclass (``test_real_beats_noise = None``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from protobench.errors import UsageError
from protobench.interfaces import (
    BASES,
    NULL_LABEL,
    Conditioner,
    Conditioning,
    ConditionSpec,
    DataSplit,
    Guidance,
    LossContext,
    PrepareContext,
    Reference,
)
from protobench.testing.tiny import TinyDataset, context_for, tiny_config, tiny_net

#: metric keys carry their feature extractor: ``fid[digits-evaluator]``, per class ``fid-per-class[...]/3``
METRIC_KEY = re.compile(r"[A-Za-z0-9_.\-]+\[[A-Za-z0-9_.\-]+\](/[A-Za-z0-9_.\-]+)?")


def overrides(cls: type, method: str, base: type) -> bool:
    """Does plugin class `cls` implement `method` itself (rather than inherit the base's no-op)?"""
    return getattr(cls, method) is not getattr(base, method)


def unregistered_tensors(module: nn.Module) -> list[str]:
    """Tensor attributes that are neither parameters nor buffers: `.to(device)` would leave them behind."""
    found = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, Tensor):
                found.append(f"{prefix + '.' if prefix else ''}{attr}")
    return found


def round_trip(module: nn.Module, path: Path) -> dict[str, Tensor]:
    """The state dict as a checkpoint stores it: safetensors, every tensor on the CPU and contiguous."""
    from safetensors.torch import load_file, save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
    return load_file(str(path))


def conditioning_fields(c: Conditioning) -> dict[str, Tensor | None]:
    return {"emb": c.emb, "norm": c.norm, "planes": c.planes}


def assert_same_conditioning(a: Conditioning, b: Conditioning, atol: float = 1e-6) -> None:
    for (field, x), y in zip(conditioning_fields(a).items(), conditioning_fields(b).values(), strict=True):
        assert (x is None) == (y is None), f"conditioning.{field}: present in one output only"
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=f"conditioning.{field} differs")


def one_line_usage_error(excinfo, *must_mention: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message.strip(), f"the error must be one line, got:\n{message}"
    for word in must_mention:
        assert word in message, f"the error should mention {word!r}: {message}"
    return message


class PluginTests:
    """What every plugin of every kind satisfies. Subclasses set `kind`; authors set `plugin_name`."""

    kind: ClassVar[str] = ""
    plugin_name: ClassVar[str] = ""
    #: user options (`-o <kind>.<key>=value`) to build the plugin with: keep them small
    options: ClassVar[dict[str, Any]] = {}
    #: the dataset whose subset (`TinyDataset`) gives the context: num_classes, image_shape, data
    dataset: ClassVar[str] = "digits"

    # -- fixtures ----------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def plugin_registry(self, protobench_registry):
        return protobench_registry

    @pytest.fixture(scope="class")
    def plugin_entry(self, plugin_registry):
        if not self.plugin_name:
            pytest.fail(f"{type(self).__name__} must set `plugin_name` to the {self.kind} it tests")
        return plugin_registry.get(self.kind, self.plugin_name)

    @pytest.fixture(scope="class")
    def plugin_dataset(self, plugin_registry, tiny_dataset):
        if self.dataset == "digits":
            return tiny_dataset
        return TinyDataset(plugin_registry.build("dataset", self.dataset, {}, {}))

    @pytest.fixture(scope="class")
    def plugin_context(self, plugin_dataset):
        return context_for(plugin_dataset)

    def build(self, registry, context: dict[str, Any], seed: int = 0, **extra_options):
        torch.manual_seed(seed)
        return registry.build(self.kind, self.plugin_name, {**self.options, **extra_options}, context)

    # -- the contract ------------------------------------------------------------------------
    def test_registered(self, plugin_entry):
        """Registered under its own `name`, as a subclass of the kind's base class, with a version."""
        assert issubclass(plugin_entry.cls, BASES[self.kind])
        assert plugin_entry.cls.name == self.plugin_name
        assert plugin_entry.plugin and plugin_entry.version

    def test_unknown_option_rejected(self, plugin_registry, plugin_entry, plugin_context):
        """A misspelt option is one line naming it and listing the options that exist, at build and in config."""
        from protobench.config import build_config
        from protobench.plugins import CONTEXT_KEYS, plugin_options

        known = sorted(plugin_options(plugin_entry.cls, CONTEXT_KEYS))
        with pytest.raises(UsageError) as excinfo:
            self.build(plugin_registry, plugin_context, no_such_option=1)
        one_line_usage_error(excinfo, "no_such_option", *known)
        selector = {"metrics": self.plugin_name} if self.kind == "metric" else {self.kind: self.plugin_name}
        with pytest.raises(UsageError) as excinfo:
            build_config({**selector, f"{self.kind}.no_such_option": "1"}, plugin_registry)
        one_line_usage_error(excinfo, "no_such_option", *known)

    def test_options_are_plain_values(self, plugin_entry):
        """Option defaults are what `-o key=value` and TOML can express (the resolved config is JSON)."""
        from protobench.plugins import CONTEXT_KEYS, plugin_options

        for key, value in plugin_options(plugin_entry.cls, CONTEXT_KEYS).items():
            assert value is None or isinstance(value, (bool, int, float, str, tuple)), (
                f"option {key}: default {value!r} cannot be set from the command line")


# ---------------------------------------------------------------------------------------------


class _ModuleChecks:
    """Checks shared by the nn.Module kinds (conditioner, denoiser)."""

    def test_tensors_are_registered(self, plugin_registry, plugin_context):
        """Every tensor is a parameter or a buffer, so `.to(device)`, EMA and checkpoints carry it."""
        module = self.build(plugin_registry, plugin_context)
        assert isinstance(module, nn.Module)
        assert unregistered_tensors(module) == [], "register these with register_buffer / nn.Parameter"


class ConditionerTests(PluginTests, _ModuleChecks):
    kind = "conditioner"
    batch_labels: ClassVar[tuple[int, ...]] = (0, 1, 2, NULL_LABEL, 1, NULL_LABEL, 9)

    @pytest.fixture(scope="class")
    def prepared(self, plugin_registry, plugin_context, plugin_dataset, tmp_path_factory):
        """Built with seed 0 and, if it has a `prepare` stage, prepared on the tiny dataset."""
        conditioner = self.build(plugin_registry, plugin_context, seed=0)
        if overrides(type(conditioner), "prepare", Conditioner):
            conditioner.prepare(prepare_context(plugin_dataset, tmp_path_factory.mktemp("prepare-cache")))
        return conditioner.eval()

    def labels(self, num_classes: int) -> Tensor:
        return torch.tensor([y if y == NULL_LABEL else y % num_classes for y in self.batch_labels])

    def test_spec_and_output_shapes(self, prepared, plugin_dataset):
        """Each conditioning field is present exactly when the spec sizes it, (B, dim) or (B, planes, H, W), float32."""
        spec = prepared.spec
        assert isinstance(spec, ConditionSpec)
        assert min(spec.emb_dim, spec.norm_dim, spec.planes) >= 0
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            out = prepared(labels)
        assert isinstance(out, Conditioning)
        _, h, w = plugin_dataset.image_shape
        b = labels.shape[0]
        expected = {"emb": (b, spec.emb_dim), "norm": (b, spec.norm_dim), "planes": (b, spec.planes, h, w)}
        sizes = {"emb": spec.emb_dim, "norm": spec.norm_dim, "planes": spec.planes}
        for field, value in conditioning_fields(out).items():
            if sizes[field] == 0:
                assert value is None, f"spec.{field} is 0 but the conditioner emits {field}"
                continue
            assert value is not None, f"spec sizes {field} but the conditioner emits none"
            assert tuple(value.shape) == expected[field]
            assert value.dtype == torch.float32
            assert torch.isfinite(value).all()

    def test_null_label(self, prepared, plugin_dataset):
        """NULL_LABEL is one token: every null row is equal, and (if it conditions at all) unlike some class."""
        spec = prepared.spec
        c = plugin_dataset.num_classes
        labels = torch.tensor([NULL_LABEL, 0, NULL_LABEL, *range(c)])
        with torch.no_grad():
            out = prepared(labels)
        for field, value in conditioning_fields(out).items():
            if value is None:
                continue
            torch.testing.assert_close(value[0], value[2], msg=f"two null rows of {field} differ")
        if spec == ConditionSpec():
            return
        differs = any((value[0] - value[3:]).flatten(1).abs().amax(1).gt(1e-6).any()
                      for value in conditioning_fields(out).values() if value is not None)
        assert differs, "the null label conditions exactly like every class: classifier-free guidance would be a no-op"

    def test_rows_are_independent(self, prepared, plugin_dataset):
        """A label's conditioning does not depend on the rest of the batch (eval is sharded over ranks)."""
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            full = prepared(labels)
            part = prepared(labels[:3])
        for field, value in conditioning_fields(full).items():
            if value is not None:
                torch.testing.assert_close(value[:3], getattr(part, field), atol=1e-5, rtol=1e-5)

    def test_deterministic_under_seed(self, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """Built (and prepared) twice under one seed, a conditioner is the same conditioner."""
        labels = self.labels(plugin_dataset.num_classes)
        outs = []
        for i in range(2):
            conditioner = self.build(plugin_registry, plugin_context, seed=3)
            if overrides(type(conditioner), "prepare", Conditioner):
                conditioner.prepare(prepare_context(plugin_dataset, tmp_path / f"cache{i}", seed=3))
            with torch.no_grad():
                outs.append(conditioner.eval()(labels))
        assert_same_conditioning(*outs)

    def test_state_dict_round_trip(self, prepared, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """A fresh, unprepared instance loading a checkpoint behaves exactly like the prepared one
        (a resumed run does not prepare again)."""
        fresh = self.build(plugin_registry, plugin_context, seed=1)
        fresh.load_state_dict(round_trip(prepared, tmp_path / "conditioner.safetensors"))
        labels = self.labels(plugin_dataset.num_classes)
        with torch.no_grad():
            assert_same_conditioning(prepared(labels), fresh.eval()(labels))
        ctx = loss_context(plugin_dataset, labels)
        a, b = prepared.extra_loss(ctx), fresh.extra_loss(ctx)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)

    def test_moves_with_to(self, prepared, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """`.to(dtype/device)` moves all its state: float64 in, float64 out (and CUDA when there is one)."""
        targets: list[Any] = [torch.float64] + (["cuda"] if torch.cuda.is_available() else [])
        labels = self.labels(plugin_dataset.num_classes)
        for target in targets:
            moved = self.build(plugin_registry, plugin_context, seed=1)
            moved.load_state_dict(round_trip(prepared, tmp_path / "c.safetensors"))
            moved = moved.to(target).eval()
            device = torch.device(target) if isinstance(target, str) else torch.device("cpu")
            with torch.no_grad():
                out = moved(labels.to(device))
            for field, value in conditioning_fields(out).items():
                if value is None:
                    continue
                assert value.device.type == device.type, f"{field} stayed on {value.device}"
                if target is torch.float64:
                    assert value.dtype == torch.float64, f"{field} is {value.dtype} after .to(torch.float64)"

    def test_extra_loss(self, prepared, plugin_dataset):
        """`extra_loss` is None or a finite scalar the optimiser can differentiate."""
        labels = self.labels(plugin_dataset.num_classes)
        loss = prepared.train().extra_loss(loss_context(plugin_dataset, labels, requires_grad=True))
        prepared.eval()
        if loss is None:
            return
        assert isinstance(loss, Tensor) and loss.ndim == 0 and loss.is_floating_point()
        assert torch.isfinite(loss)
        if loss.requires_grad:
            loss.backward()

    def test_prepare_reuses_cache_and_still_charges(self, plugin_registry, plugin_context, plugin_dataset, tmp_path):
        """Work `prepare` keeps in the cache is charged again (`ctx.charge`) when a later run reuses it."""
        conditioner = self.build(plugin_registry, plugin_context, seed=0)
        if not overrides(type(conditioner), "prepare", Conditioner):
            pytest.skip("no prepare stage")
        cache = tmp_path / "cache"
        conditioner.prepare(prepare_context(plugin_dataset, cache))
        if not cache.exists() or not any(cache.rglob("*")):
            pytest.skip("prepare caches nothing")
        again = self.build(plugin_registry, plugin_context, seed=0)
        ctx = prepare_context(plugin_dataset, cache)
        again.prepare(ctx)
        assert ctx.cached_device_seconds > 0, "prepare reused cached work without charging its device-seconds"

    def test_trains_in_a_run_and_prepare_is_timed(self, plugin_registry, tmp_path, protobench_cache):
        """A tiny run with this conditioner completes; its prepare stage is booked under `prepare`."""
        from protobench.engine import Run

        user = {"conditioner": self.plugin_name, "metrics": "", **{f"conditioner.{k}": v for k, v in self.options.items()}}
        record = Run(tiny_config(plugin_registry, **user), plugin_registry, tmp_path / "out", show_progress=False).execute()
        assert record["status"] == "completed", record.get("error")
        assert record["evals"], "the run evaluated nothing"
        if overrides(plugin_registry.get("conditioner", self.plugin_name).cls, "prepare", Conditioner):
            events = [json.loads(line) for line in (Path(record["path"]) / "events.jsonl").read_text().splitlines()]
            prepared = [e for e in events if e["event"] == "prepare" and e.get("component") == "conditioner"]
            assert prepared and prepared[0]["device_seconds"] > 0
            assert record["device_seconds"]["prepare"] > 0
            assert record["evals"][0]["device_seconds"]["prepare"] == record["device_seconds"]["prepare"]


def prepare_context(dataset, cache_dir: Path, seed: int = 0, **extra: Any) -> PrepareContext:
    train, test = dataset.load()
    from protobench.interfaces.dataset import content_checksum

    return PrepareContext(train=train, test=test, num_classes=dataset.num_classes,
                          image_shape=tuple(dataset.image_shape), dataset_checksum=content_checksum(train, test),
                          seed=seed, device=torch.device("cpu"), cache_dir=Path(cache_dir), **extra)


def loss_context(dataset, labels: Tensor, requires_grad: bool = False) -> LossContext:
    from protobench.diffusion import NoiseSchedule

    train, _ = dataset.load()
    gen = torch.Generator().manual_seed(0)
    b = labels.shape[0]
    x0 = train.as_float()[:b]
    schedule = NoiseSchedule("linear", 1000)
    t = torch.randint(0, 1000, (b,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = schedule.q_sample(x0, t, eps)
    eps_pred = (eps + 0.1 * torch.randn(x0.shape, generator=gen)).requires_grad_(requires_grad)
    return LossContext(x0=x0, x_t=x_t, t=t, labels=labels, eps=eps, eps_pred=eps_pred,
                       x0_pred=schedule.x0_from_eps(x_t, t, eps_pred))


# ---------------------------------------------------------------------------------------------


class DenoiserTests(PluginTests, _ModuleChecks):
    kind = "denoiser"
    #: the conditioning kinds the denoiser must accept: embedding, CBN modulation, input planes, none
    cond_specs: ClassVar[tuple[ConditionSpec, ...]] = (
        ConditionSpec(), ConditionSpec(emb_dim=8), ConditionSpec(norm_dim=8), ConditionSpec(planes=1),
    )
    batch: ClassVar[int] = 4

    def build_for(self, registry, context, spec: ConditionSpec, seed: int = 0):
        return self.build(registry, {**context, "cond": spec}, seed=seed).eval()

    def inputs(self, spec: ConditionSpec, image_shape, seed: int = 0, dtype=torch.float32):
        gen = torch.Generator().manual_seed(seed)
        c, h, w = image_shape
        b = self.batch
        x_t = torch.randn((b, c, h, w), generator=gen, dtype=dtype)
        t = torch.randint(0, 1000, (b,), generator=gen)

        def field(n, *shape):
            return torch.randn((b, n, *shape), generator=gen, dtype=dtype) if n else None

        return x_t, t, Conditioning(emb=field(spec.emb_dim), norm=field(spec.norm_dim), planes=field(spec.planes, h, w))

    def test_tensors_are_registered(self, plugin_registry, plugin_context):
        for spec in self.cond_specs:
            module = self.build_for(plugin_registry, plugin_context, spec)
            assert unregistered_tensors(module) == [], f"with {spec}: register these as buffers"

    def test_output_shape_and_dtype(self, plugin_registry, plugin_context):
        """ε has the shape of x_t, float32, finite, for every kind of conditioning."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            net = self.build_for(plugin_registry, plugin_context, spec)
            x_t, t, cond = self.inputs(spec, shape)
            with torch.no_grad():
                eps = net(x_t, t, cond)
            assert eps.shape == x_t.shape, f"with {spec}"
            assert eps.dtype == torch.float32 and torch.isfinite(eps).all()

    def test_uses_its_conditioning(self, plugin_registry, plugin_context):
        """Different conditioning gives a different ε (weights perturbed: zero-initialised layers are allowed)."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            if spec == ConditionSpec():
                continue
            net = self.build_for(plugin_registry, plugin_context, spec)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
                x_t, t, cond_a = self.inputs(spec, shape, seed=0)
                _, _, cond_b = self.inputs(spec, shape, seed=1)
                diff = (net(x_t, t, cond_a) - net(x_t, t, cond_b)).abs().max()
            assert diff > 1e-6, f"ε ignores the conditioning with {spec}"

    def test_rows_are_independent(self, plugin_registry, plugin_context):
        """In eval mode a sample's ε does not depend on the rest of the batch (sharded evaluation)."""
        shape = plugin_context["image_shape"]
        for spec in self.cond_specs:
            net = self.build_for(plugin_registry, plugin_context, spec)
            x_t, t, cond = self.inputs(spec, shape)
            part = Conditioning(**{k: (v[:2] if v is not None else None) for k, v in conditioning_fields(cond).items()})
            with torch.no_grad():
                torch.testing.assert_close(net(x_t, t, cond)[:2], net(x_t[:2], t[:2], part), atol=1e-5, rtol=1e-4)

    def test_deterministic_under_seed(self, plugin_registry, plugin_context):
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        x_t, t, cond = self.inputs(spec, shape)
        with torch.no_grad():
            a = self.build_for(plugin_registry, plugin_context, spec, seed=5)(x_t, t, cond)
            b = self.build_for(plugin_registry, plugin_context, spec, seed=5)(x_t, t, cond)
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    def test_state_dict_round_trip(self, plugin_registry, plugin_context, tmp_path):
        shape = plugin_context["image_shape"]
        for i, spec in enumerate(self.cond_specs):
            a = self.build_for(plugin_registry, plugin_context, spec, seed=0)
            b = self.build_for(plugin_registry, plugin_context, spec, seed=1)
            b.load_state_dict(round_trip(a, tmp_path / f"d{i}.safetensors"))
            x_t, t, cond = self.inputs(spec, shape)
            with torch.no_grad():
                torch.testing.assert_close(a(x_t, t, cond), b(x_t, t, cond), atol=0, rtol=0)

    def test_moves_with_to(self, plugin_registry, plugin_context):
        """After `.to(torch.float64)` (and to CUDA when there is one) ε follows the weights."""
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        net = self.build_for(plugin_registry, plugin_context, spec).to(torch.float64)
        x_t, t, cond = self.inputs(spec, shape, dtype=torch.float64)
        with torch.no_grad():
            assert net(x_t, t, cond).dtype == torch.float64
        if torch.cuda.is_available():
            net = net.float().to("cuda")
            x_t, t, cond = self.inputs(spec, shape)
            cond = Conditioning(**{k: (v.cuda() if v is not None else None) for k, v in conditioning_fields(cond).items()})
            with torch.no_grad():
                assert net(x_t.cuda(), t.cuda(), cond).device.type == "cuda"

    def test_features(self, plugin_registry, plugin_context):
        """`features` is optional: NotImplementedError, or (B, C', H', W') activations."""
        shape = plugin_context["image_shape"]
        spec = self.cond_specs[-1]
        net = self.build_for(plugin_registry, plugin_context, spec)
        x_t, t, cond = self.inputs(spec, shape)
        try:
            with torch.no_grad():
                feats = net.features(x_t, t, cond)
        except NotImplementedError:
            return
        assert feats.ndim == 4 and feats.shape[0] == self.batch and torch.isfinite(feats).all()


# ---------------------------------------------------------------------------------------------


class GuidanceTests(PluginTests):
    kind = "guidance"

    @pytest.fixture(scope="class")
    def net(self, plugin_registry, plugin_dataset):
        return tiny_net(plugin_registry, plugin_dataset.num_classes, plugin_dataset.image_shape)

    @pytest.fixture(scope="class")
    def prepared(self, plugin_registry, plugin_context, plugin_dataset, net, tmp_path_factory):
        from protobench.diffusion import NoiseSchedule

        guidance = self.build(plugin_registry, plugin_context)
        if overrides(type(guidance), "prepare", Guidance):
            guidance.prepare(prepare_context(plugin_dataset, tmp_path_factory.mktemp("guidance-cache"), net=net,
                                             schedule=NoiseSchedule("linear", 1000)))
        return guidance

    def inputs(self, dataset, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.tensor([0, 1, NULL_LABEL, 3, dataset.num_classes - 1])
        x_t = torch.randn((labels.shape[0], *dataset.image_shape), generator=gen)
        t = torch.randint(0, 1000, (labels.shape[0],), generator=gen)
        return x_t, t, labels

    def test_eps_shape_and_dtype(self, prepared, net, plugin_dataset):
        """The guided ε has x_t's shape and dtype, finite, for real and null labels alike."""
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            eps = prepared.eps(net, x_t, t, labels)
        assert eps.shape == x_t.shape and eps.dtype == x_t.dtype and torch.isfinite(eps).all()

    def test_deterministic(self, prepared, net, plugin_dataset):
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            torch.testing.assert_close(prepared.eps(net, x_t, t, labels), prepared.eps(net, x_t, t, labels))

    def test_rows_are_independent(self, prepared, net, plugin_dataset):
        """A sample's guided ε does not depend on the rest of the batch (sharded sampling)."""
        x_t, t, labels = self.inputs(plugin_dataset)
        with torch.no_grad():
            full = prepared.eps(net, x_t, t, labels)
            part = prepared.eps(net, x_t[:2], t[:2], labels[:2])
        torch.testing.assert_close(full[:2], part, atol=1e-5, rtol=1e-4)

    def test_accept(self, prepared, net, plugin_dataset):
        """`accept` (rejection sampling) is None or one bool per sample."""
        x0 = torch.rand((4, *plugin_dataset.image_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
        labels = torch.tensor([0, 1, 2, 3]) % plugin_dataset.num_classes
        with torch.no_grad():
            keep = prepared.accept(net, x0, labels)
        if keep is not None:
            assert keep.dtype == torch.bool and keep.shape == (4,)

    def test_samples_in_a_run_and_prepare_is_timed(self, plugin_registry, tmp_path, protobench_cache):
        """A tiny run sampling through this guidance completes; its prepare stage is booked under `prepare`."""
        from protobench.engine import Run

        user = {"guidance": self.plugin_name, "metrics": "", **{f"guidance.{k}": v for k, v in self.options.items()}}
        record = Run(tiny_config(plugin_registry, **user), plugin_registry, tmp_path / "out", show_progress=False).execute()
        assert record["status"] == "completed", record.get("error")
        if overrides(plugin_registry.get("guidance", self.plugin_name).cls, "prepare", Guidance):
            events = [json.loads(line) for line in (Path(record["path"]) / "events.jsonl").read_text().splitlines()]
            assert any(e["event"] == "prepare" and e.get("component") == "guidance" for e in events)
            assert record["evals"][0]["device_seconds"]["prepare"] > 0


# ---------------------------------------------------------------------------------------------


class SamplerTests(PluginTests):
    kind = "sampler"
    #: timesteps of the schedule the checks sample with (T=1000 in runs; fewer keeps ancestral samplers fast)
    timesteps: ClassVar[int] = 100
    shape: ClassVar[tuple[int, ...]] = (3, 1, 8, 8)

    @pytest.fixture(scope="class")
    def sampler(self, plugin_registry, plugin_context):
        return self.build(plugin_registry, plugin_context)

    @pytest.fixture(scope="class")
    def schedule(self):
        from protobench.diffusion import NoiseSchedule

        return NoiseSchedule("linear", self.timesteps)

    def test_output(self, sampler, schedule):
        """x0 of the asked shape, float, finite, in [-1, 1]."""
        calls = []

        def eps_fn(x_t, t):
            calls.append((tuple(x_t.shape), t.dtype, t.min().item(), t.max().item()))
            return 0.5 * x_t

        x0 = sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(0))
        assert tuple(x0.shape) == self.shape and x0.is_floating_point() and torch.isfinite(x0).all()
        assert x0.min() >= -1 and x0.max() <= 1
        assert calls, "the sampler never called eps_fn"
        for shape, dtype, lo, hi in calls:
            assert shape == self.shape and dtype == torch.long and 0 <= lo <= hi < schedule.timesteps

    def test_deterministic_under_seed(self, sampler, schedule):
        def eps_fn(x_t, t):
            return 0.3 * x_t

        runs = [sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
        torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
        assert not torch.equal(runs[0], runs[2]), "different seeds gave the same samples"

    def test_recovers_a_point_mass(self, sampler, schedule):
        """With the exact ε of data that is one point c, ε(x_t) = (x_t − √ᾱ_t c)/√(1−ᾱ_t), every sample is c."""
        c = torch.linspace(-0.6, 0.6, math.prod(self.shape[1:])).view(1, *self.shape[1:])
        abar = schedule.alpha_bar.float()

        def eps_fn(x_t, t):
            a = abar[t].view(-1, *([1] * (x_t.ndim - 1)))
            return (x_t - a.sqrt() * c) / (1 - a).sqrt()  # from q(x_t | x0), eq. 4 of Ho et al. 2020

        x0 = sampler.sample(eps_fn, schedule, self.shape, torch.Generator().manual_seed(0))
        torch.testing.assert_close(x0, c.expand(self.shape), atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------


class MetricTests(PluginTests):
    kind = "metric"

    @pytest.fixture(scope="class")
    def reference(self, plugin_dataset, protobench_cache_dir):
        return Reference(plugin_dataset, protobench_cache_dir, torch.device("cpu"), seed=0)

    @pytest.fixture(scope="class")
    def metric(self, plugin_registry, plugin_context, reference):
        metric = self.build(plugin_registry, plugin_context)
        metric.prepare(reference)
        return metric

    @pytest.fixture(scope="class")
    def real(self, plugin_dataset) -> DataSplit:
        return plugin_dataset.load()[1]

    @pytest.fixture(scope="class")
    def noise(self, real) -> DataSplit:
        gen = torch.Generator().manual_seed(0)
        return DataSplit(torch.randint(0, 256, real.images.shape, generator=gen, dtype=torch.uint8), real.labels)

    def test_values(self, metric, reference, real):
        """A dict of finite floats whose keys carry their feature extractor: `name[extractor]`."""
        values = metric.compute(real.images, real.labels, reference)
        assert isinstance(values, dict) and values
        for key, value in values.items():
            assert METRIC_KEY.fullmatch(key), f"metric key {key!r} should look like 'fid[digits-evaluator]'"
            assert isinstance(value, float) and math.isfinite(value), f"{key} = {value!r}"

    def test_deterministic(self, metric, reference, real):
        assert metric.compute(real.images, real.labels, reference) == metric.compute(real.images, real.labels, reference)

    def test_real_beats_noise(self, metric, reference, real, noise):
        """Held-out real images score better than uniform noise, in the direction `higher_is_better` says."""
        on_real = metric.compute(real.images, real.labels, reference)
        on_noise = metric.compute(noise.images, noise.labels, reference)
        for key, value in on_real.items():
            better = value > on_noise[key] if metric.higher_is_better else value < on_noise[key]
            assert better, f"{key}: real {value} vs noise {on_noise[key]} (higher_is_better={metric.higher_is_better})"


# ---------------------------------------------------------------------------------------------


class DatasetTests(PluginTests):
    kind = "dataset"
    #: folder holding the dataset's files, for datasets read from --data-root
    data_root: ClassVar[str | None] = None

    @pytest.fixture(scope="class")
    def plugin_context(self):
        return {"data_root": self.data_root}

    @pytest.fixture(scope="class")
    def loaded(self, plugin_registry, plugin_context):
        dataset = self.build(plugin_registry, plugin_context)
        return dataset, dataset.load()

    def test_splits(self, loaded):
        """Train and test splits: uint8 N×C×H×W of `image_shape`, int64 labels in [0, num_classes)."""
        dataset, splits = loaded
        assert len(splits) == 2
        for split in splits:
            assert isinstance(split, DataSplit) and len(split) > 0
            assert split.images.dtype == torch.uint8
            assert tuple(split.images.shape[1:]) == tuple(dataset.image_shape)
            assert split.labels.dtype == torch.int64
            assert 0 <= int(split.labels.min()) and int(split.labels.max()) < dataset.num_classes
        assert set(splits[0].labels.unique().tolist()) == set(range(dataset.num_classes)), "a class has no training image"

    def test_class_names(self, loaded):
        dataset, _ = loaded
        assert len(dataset.class_names) == dataset.num_classes
        assert all(isinstance(n, str) and n for n in dataset.class_names)

    def test_deterministic(self, loaded, plugin_registry, plugin_context):
        """Two instances hold the same data, hence the same checksum (every cache keys on it)."""
        dataset, (train, test) = loaded
        other = self.build(plugin_registry, plugin_context, seed=123)
        train2, test2 = other.load()
        assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
        assert dataset.checksum() == other.checksum()
        assert re.fullmatch(r"[0-9a-f]{8,64}", dataset.checksum())

    def test_presets_are_config_keys(self, plugin_registry, plugin_entry):
        """Presets name real config keys, and a config with only this dataset chosen resolves."""
        from protobench.config import build_config, check_key

        for key in plugin_entry.cls.presets:
            check_key(key)
        build_config({"dataset": self.plugin_name, **({"data_root": self.data_root} if self.data_root else {})},
                     plugin_registry)

    def test_resize(self, loaded):
        """Images of another size and channel count come back as this dataset's uint8 `image_shape`."""
        dataset, _ = loaded
        c, h, w = dataset.image_shape
        for channels in {1, 3}:
            images = torch.randint(0, 256, (2, channels, 2 * h + 3, 2 * w + 1), dtype=torch.uint8)
            out = dataset.resize(images)
            assert out.dtype == torch.uint8 and tuple(out.shape) == (2, c, h, w)
