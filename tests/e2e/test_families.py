"""The other conditioning families: conditional norm (`cbn`), the auxiliary classifier (`aux-classifier`)
and guidance from the denoiser's own features (`feature`, with rejection sampling)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from protobench import NULL_LABEL, ConditionedNet, LossContext, PrepareContext
from protobench.cli import main
from protobench.config import RunConfig
from protobench.diffusion import NoiseSchedule
from protobench.plugins import get_registry
from protobench.training.generation import generate

TINY = ["-o", "denoiser.base_channels=8", "-o", "sampler.steps=3", "--eval-samples", "20", "--quiet"]
# a classifier that trains in a second or two: the tests check behaviour, not accuracy
TINY_AUX = {"classifier_width": 8, "classifier_epochs": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = os.environ.get("PROTOBENCH_CACHE") or str(tmp_path_factory.mktemp("cache"))
    old = os.environ.get("PROTOBENCH_CACHE")
    os.environ["PROTOBENCH_CACHE"] = path
    yield Path(path)
    if old is None:
        os.environ.pop("PROTOBENCH_CACHE", None)


@pytest.fixture(scope="module")
def digits():
    ds = get_registry().build("dataset", "digits", {}, {})
    train, test = ds.load()
    return ds, train, test


def _ctx(digits, cache_dir, seed=0, **extra):
    ds, train, test = digits
    return PrepareContext(train=train, test=test, num_classes=10, image_shape=(1, 8, 8),
                          dataset_checksum=ds.checksum(), seed=seed, device=torch.device("cpu"),
                          cache_dir=Path(cache_dir), **extra)


def _build(conditioner, options=None):
    reg = get_registry()
    torch.manual_seed(0)
    cond = reg.build("conditioner", conditioner, options or {}, {"num_classes": 10, "image_shape": (1, 8, 8)})
    den = reg.build("denoiser", "unet", {"base_channels": 8, "dropout": 0.0}, {"image_shape": (1, 8, 8), "cond": cond.spec})
    return cond, den


def _run(args, out):
    result = CliRunner().invoke(main, ["run", *args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[: result.stdout.rindex("}") + 1])


# -- cbn ---------------------------------------------------------------------------------------


def test_cbn_label_alone_changes_the_output_through_the_norm_layers():
    cond, den = _build("cbn", {"dim": 16})
    assert (cond.spec.norm_dim, cond.spec.emb_dim, cond.spec.planes) == (16, 0, 0)
    norms = [m for m in den.modules() if type(m).__name__ == "CondNorm"]
    assert norms and all(not n.norm.affine and n.norm.weight is None and n.modulation is not None for n in norms)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([10, 200, 500, 900])
    with torch.no_grad():
        out3 = den(x, t, cond(torch.full((4,), 3)))
        out7 = den(x, t, cond(torch.full((4,), 7)))
        out_null = den(x, t, cond(torch.full((4,), NULL_LABEL)))
        again = den(x, t, cond(torch.full((4,), 3)))
    assert torch.equal(out3, again)
    assert (out3 - out7).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample moves
    assert not torch.allclose(out3, out_null)


# -- aux-classifier ----------------------------------------------------------------------------


def test_aux_classifier_adds_one_plane_and_a_nonzero_weighted_loss(digits, cache):
    cond, den = _build("aux-classifier", {**TINY_AUX, "aux_weight": 0.5, "aux_max_t": 300})
    assert cond.spec.planes == 1 and den.conv_in.in_channels == 1 + 1
    planes = cond(torch.tensor([0, 1, NULL_LABEL])).planes
    assert planes.shape == (3, 1, 8, 8) and not torch.equal(planes[0], planes[1])
    assert not torch.equal(planes[2], planes[0]) and not torch.equal(planes[2], planes[1])
    ctx = _ctx(digits, cache)
    cond.prepare(ctx)
    assert all(not p.requires_grad for p in cond.classifier.parameters())
    _, train, _ = digits
    x0 = train.as_float()[:8]
    labels = train.labels[:8].clone()
    x0_pred = (x0 + 0.3 * torch.randn_like(x0)).requires_grad_(True)

    def loss_for(labels, t):
        return cond.extra_loss(LossContext(x0, x0, t, labels, x0, x0, x0_pred))

    low_t = torch.full((8,), 50)
    loss = loss_for(labels, low_t)
    assert loss.item() > 0 and math.isfinite(loss.item())
    loss.backward()
    assert x0_pred.grad.abs().sum() > 0  # the loss reaches the denoiser's x̂0...
    assert all(p.grad is None for p in cond.classifier.parameters())  # ...and not the frozen classifier
    # null-label samples and high-noise samples are skipped; the weight scales the loss
    assert loss_for(torch.full((8,), NULL_LABEL), low_t).item() == 0.0
    assert loss_for(labels, torch.full((8,), 900)).item() == 0.0
    mixed = labels.clone()
    mixed[4:] = NULL_LABEL
    only_first = cond.extra_loss(LossContext(x0[:4], x0[:4], low_t[:4], labels[:4], x0[:4], x0[:4], x0_pred[:4]))
    assert loss_for(mixed, low_t).item() == pytest.approx(only_first.item(), rel=1e-5)
    cond.aux_weight = 1.0
    assert loss_for(labels, low_t).item() == pytest.approx(2 * loss.item(), rel=1e-5)


def test_aux_classifier_cache_hit_reuses_the_weights_and_charges_the_time(digits, tmp_path):
    tmp_path = tmp_path / "fresh-cache"
    first, _ = _build("aux-classifier", TINY_AUX)
    ctx1 = _ctx(digits, tmp_path)
    first.prepare(ctx1)
    assert ctx1.cached_device_seconds == 0.0
    torch.manual_seed(123)  # a different global RNG state must not change the cached classifier's use
    second, _ = _build("aux-classifier", TINY_AUX)
    ctx2 = _ctx(digits, tmp_path)
    second.prepare(ctx2)
    recorded = ctx1.results["aux_classifier"]["train_seconds"]
    assert recorded > 0 and ctx2.cached_device_seconds == pytest.approx(recorded)
    for (k, a), (_, b) in zip(first.classifier.state_dict().items(), second.classifier.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # another seed is another classifier
    third, _ = _build("aux-classifier", TINY_AUX)
    ctx3 = _ctx(digits, tmp_path, seed=1)
    third.prepare(ctx3)
    assert ctx3.cached_device_seconds == 0.0
    assert ctx3.results["aux_classifier"]["key"] != ctx1.results["aux_classifier"]["key"]


@pytest.mark.slow
def test_training_run_leaves_the_aux_classifier_untouched(tmp_path, cache):
    opts = [f"conditioner.{k}={v}" for k, v in TINY_AUX.items()]
    record = _run(["--conditioner", "aux-classifier", "--budget", "256", "--eval-every", "256", *TINY,
                   *[a for o in opts for a in ("-o", o)]], tmp_path)
    assert record["status"] == "completed"
    key = record["prepare"]["aux_classifier"]["key"]
    trained = load_file(str(cache / "aux-classifiers" / key / "tensors.safetensors"))
    run_dir = Path(record["path"])
    ckpt = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    tensors = load_file(str(run_dir / "checkpoints" / ckpt["file"]))
    for prefix in ("model", "ema"):
        for name, value in trained.items():
            assert torch.equal(tensors[f"{prefix}.conditioner.classifier.{name}"], value), (prefix, name)
    # the optimizer was built over every parameter but the classifier's
    n_params = sum(1 for k in tensors if k.startswith("model.") and ".classifier." not in k
                   and not k.endswith("classifier_ready"))  # the one buffer
    assert sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"]) == n_params


# -- feature guidance --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory, cache, digits):
    """A briefly trained unconditional digits model (a real run through the engine) and a fitted guidance."""
    out = tmp_path_factory.mktemp("uncond")
    # lr 2e-4 (not the digits preset's 3e-3): a model that is still rough, whose samples the classifier doubts
    record = _run(["--conditioner", "none", "--guidance", "none", "--budget", "2560", "--eval-every", "2560",
                   "-o", "lr=2e-4", "-o", "denoiser.base_channels=16", "-o", "sampler.steps=3", "--eval-samples", "20",
                   "--quiet"], out)
    run_dir = Path(record["path"])
    cfg = RunConfig.from_dict(record["config"])
    reg = get_registry()
    ctx = {"num_classes": 10, "image_shape": (1, 8, 8)}
    cond = reg.build("conditioner", "none", cfg.options["conditioner"], ctx)
    den = reg.build("denoiser", "unet", cfg.options["denoiser"], {**ctx, "cond": cond.spec})
    ckpt = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    tensors = load_file(str(run_dir / "checkpoints" / ckpt["file"]))
    den.load_state_dict({k[len("ema.denoiser."):]: v for k, v in tensors.items() if k.startswith("ema.denoiser.")})
    net = ConditionedNet(cond.eval(), den.eval().requires_grad_(False), 10)
    schedule = NoiseSchedule(cfg.schedule, cfg.timesteps)
    return net, schedule


def _guidance(net, schedule, digits, cache_dir, **options):
    g = get_registry().build("guidance", "feature", {"fit_draws": 1, "fit_epochs": 8, **options}, {"num_classes": 10})
    ctx = _ctx(digits, cache_dir, net=net, schedule=schedule)
    g.prepare(ctx)
    return g, ctx


@pytest.mark.slow
def test_feature_guidance_raises_the_log_probability_of_the_requested_class(unconditional, digits, tmp_path):
    net, schedule = unconditional
    guided, ctx = _guidance(net, schedule, digits, tmp_path, guidance_scale=3.0)
    assert ctx.results["feature_classifier"]["test_accuracy"] > 0.3  # well above chance (0.1)
    unguided, _ = _guidance(net, schedule, digits, tmp_path, guidance_scale=0.0)
    sampler = get_registry().build("sampler", "ddim", {"steps": 5}, {})
    labels = torch.arange(40) % 10

    def draw(g):
        return sampler.sample(lambda x, t: g.eps(net, x, t, labels), schedule, (40, 1, 8, 8), torch.Generator().manual_seed(7))

    with torch.no_grad():
        x_guided, x_plain = draw(guided), draw(unguided)
        # judged by the guided run's classifier (both fits are identical: same seed, same data)
        lp_guided = guided.log_prob(net, x_guided, labels)
        lp_plain = guided.log_prob(net, x_plain, labels)
    assert not torch.equal(x_guided, x_plain)
    assert lp_guided.mean() > lp_plain.mean() + 0.5, (lp_guided.mean(), lp_plain.mean())


@pytest.mark.slow
def test_rejection_sampling_returns_only_samples_above_the_threshold(unconditional, digits, tmp_path):
    net, schedule = unconditional
    threshold = 0.5
    g, _ = _guidance(net, schedule, digits, tmp_path, guidance_scale=3.0, reject_threshold=threshold)
    sampler = get_registry().build("sampler", "ddim", {"steps": 5}, {})
    samples, labels, rate = generate(net, g, sampler, schedule, 30, 10, (1, 8, 8), seed=3,
                                     device=torch.device("cpu"), max_rounds=30)
    assert samples.dtype == torch.uint8 and samples.shape == (30, 1, 8, 8)
    with torch.no_grad():
        p = g.log_prob(net, samples.float().div(127.5).sub(1.0), labels).exp()
    assert (p >= threshold - 1e-5).all(), p
    assert rate is not None and 0.0 < rate <= 1.0
    # the same draws without rejection include some the classifier doubts: rejection did something
    plain, _ = _guidance(net, schedule, digits, tmp_path, guidance_scale=3.0)
    raw, raw_labels, raw_rate = generate(net, plain, sampler, schedule, 30, 10, (1, 8, 8), seed=3,
                                         device=torch.device("cpu"))
    assert raw_rate is None  # no rejection: no acceptance rate to report
    with torch.no_grad():
        p_raw = g.log_prob(net, raw.float().div(127.5).sub(1.0), raw_labels).exp()
    assert (p_raw < threshold).any() == (rate < 1.0)


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--conditioner", "cbn", "--guidance", "cfg", "-o", "conditioner.dim=16"],
    ["--conditioner", "none", "--guidance", "feature", "-o", "guidance.reject_threshold=0.2",
     "-o", "guidance.fit_draws=1", "-o", "guidance.fit_epochs=2"],
], ids=["cbn", "feature-reject"])
def test_cli_runs_each_family(args, tmp_path, cache):
    record = _run([*args, "--budget", "256", "--eval-every", "128", *TINY], tmp_path)
    assert record["status"] == "completed"
    assert [e["images_seen"] for e in record["evals"]] == [128, 256]
    # rejection may drop every sample of a 2-step model: such an evaluation scores nothing, the others score
    assert all(math.isfinite(e["metrics"]["fid[digits-evaluator]"]) if e["samples"] > 0
               and "fid" not in e.get("metrics_unscored", {}) else "fid[digits-evaluator]" not in e["metrics"]
               for e in record["evals"])
    if "feature" in args:
        # a 2-step model may have most draws rejected: those never accepted are dropped and counted
        assert all(0.0 <= e["acceptance_rate"] <= 1.0 for e in record["evals"])
        assert all(e["samples_dropped"] >= 0 and 0 <= e["samples"] <= 20 for e in record["evals"])
        assert "test_accuracy" in record["prepare"]["feature_classifier"]
        # the feature classifier is fitted before every evaluation, and charged to the run as prepare
        assert 0 < record["evals"][0]["device_seconds"]["prepare"] < record["evals"][1]["device_seconds"]["prepare"]
