"""Metrics on real digits, through real torch-fidelity: ordering, agreement with a direct Fréchet
computation, the checksummed real-statistics cache, class accuracy, CAS and the Inception plumbing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from protobench_datasets.digits import DigitsDataset
from protobench_metrics import extractors

from protobench import Reference, UsageError
from protobench.plugins import get_registry


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """2 shared cores: tiny 8×8 work only thrashes with more threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return Reference(DigitsDataset(), tmp_path_factory.mktemp("cache"), torch.device("cpu"))


@pytest.fixture(scope="module")
def splits(reference):
    return reference.dataset.load()


def metric(name: str, **options):
    return get_registry().build("metric", name, options, {})


def blurred(images: torch.Tensor) -> torch.Tensor:
    x = F.avg_pool2d(images.float(), 3, stride=1, padding=1, count_include_pad=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def noise_like(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_fid_and_kid_order_real_blurred_noise(reference, splits):
    _train, test = splits
    fid, kid = metric("fid"), metric("kid")
    fid.prepare(reference)
    f = [fid.compute(x, test.labels, reference)["fid[digits-evaluator]"]
         for x in (test.images, blurred(test.images), noise_like(test.images))]
    k = [kid.compute(x, test.labels, reference)["kid[digits-evaluator]"]
         for x in (test.images, blurred(test.images), noise_like(test.images))]
    assert f[0] < f[1] < f[2], f
    assert k[0] < k[1] < k[2], k


def test_fid_equals_direct_frechet_on_the_same_features(reference, splits):
    train, test = splits
    value = metric("fid").compute(test.images, test.labels, reference)["fid[digits-evaluator]"]
    net, _meta = extractors.domain_evaluator(reference)
    with torch.no_grad():
        a = net.features(test.as_float()).double().numpy()
        b = net.features(train.as_float()).double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert value == pytest.approx(direct, rel=1e-4)
    # and torch-fidelity's own end-to-end entry point agrees with the cached path
    import torch_fidelity

    ext = extractors.resolve(reference)
    e2e = torch_fidelity.calculate_metrics(
        input1=extractors.UInt8Images(test.images), input2=extractors.UInt8Images(train.images),
        feature_extractor=ext.fidelity_name, fid=True, cuda=False, save_cpu_ram=True, verbose=False, cache=False)
    assert value == pytest.approx(e2e["frechet_inception_distance"], rel=1e-6)


def test_real_statistics_cache_is_checksummed_and_recomputed_when_corrupt(reference, splits):
    _train, test = splits
    fid = metric("fid")
    fid.prepare(reference)
    first = fid.compute(test.images, test.labels, reference)["fid[digits-evaluator]"]
    entry = extractors.real_cache_path(reference, extractors.resolve(reference), "train")
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["meta"]["split"] == "train" and manifest["meta"]["n"] == 1437
    path = entry / "tensors.safetensors"
    assert len(manifest["files"]["tensors.safetensors"]) == 64
    blob = bytearray(path.read_bytes())
    blob[-9] ^= 0xFF  # flip bits inside the stored statistics
    path.write_bytes(bytes(blob))
    extractors.clear_memos()
    again = fid.compute(test.images, test.labels, reference)["fid[digits-evaluator]"]
    assert again == pytest.approx(first, rel=1e-9)
    from protobench.kit import sha256_file

    assert json.loads((entry / "manifest.json").read_text())["files"]["tensors.safetensors"] == sha256_file(path)


def test_class_accuracy_high_on_real_chance_on_noise(reference, splits):
    _train, test = splits
    acc = metric("class-accuracy")
    real = acc.compute(test.images, test.labels, reference)
    noise = acc.compute(noise_like(test.images, 1), test.labels, reference)
    key = "class-accuracy[digits-evaluator]"
    assert real[key] > 0.9
    assert noise[key] < 0.3
    assert sorted(k for k in real if "/" in k) == sorted(f"{key}/{c}" for c in range(10))
    assert all(0.0 <= v <= 1.0 for v in real.values())
    _net, meta = extractors.domain_evaluator(reference)
    assert meta["test_accuracy"] > 0.9 and meta["seed"] == 20240101


def test_per_class_fid_and_other_fidelity_metrics(reference, splits):
    _train, test = splits
    noise = noise_like(test.images, 2)
    per_class = metric("fid-per-class").compute(test.images, test.labels, reference)
    assert len([k for k in per_class if k.startswith("fid-per-class[digits-evaluator]/")]) == 10
    assert per_class["fid-per-class[digits-evaluator]"] < metric("fid-per-class").compute(
        noise, test.labels, reference)["fid-per-class[digits-evaluator]"]
    is_real = metric("is").compute(test.images, test.labels, reference)["is[digits-evaluator]"]
    is_noise = metric("is").compute(noise, test.labels, reference)["is[digits-evaluator]"]
    assert 1.0 <= is_noise < is_real <= 10.0
    pr_real = metric("precision-recall").compute(test.images, test.labels, reference)
    pr_noise = metric("precision-recall").compute(noise, test.labels, reference)
    assert pr_real["precision[digits-evaluator]"] > pr_noise["precision[digits-evaluator]"]
    assert pr_real["recall[digits-evaluator]"] > pr_noise["recall[digits-evaluator]"]


def test_kid_subset_size_never_exceeds_the_samples(reference, splits):
    _train, test = splits
    out = metric("kid", kid_subsets=5).compute(test.images[:30], test.labels[:30], reference)
    assert math.isfinite(out["kid[digits-evaluator]"])


def test_labelled_metrics_refuse_missing_labels(reference, splits):
    _train, test = splits
    with pytest.raises(UsageError, match="label"):
        metric("class-accuracy").compute(test.images, None, reference)


@pytest.mark.slow
def test_cas_on_real_training_images_is_high(reference, splits):
    train, _test = splits
    out = metric("cas", cas_epochs=3).compute(train.images[:400], train.labels[:400], reference)
    assert out["cas[resnet18]"] > 0.6
    noise = metric("cas", cas_epochs=3).compute(noise_like(train.images[:400], 3), train.labels[:400], reference)
    assert noise["cas[resnet18]"] < 0.3


# -- Inception-v3 from a weights file (random weights of the right shapes: the plumbing, not the numbers) ----


class _TinyDigits(DigitsDataset):
    """Real digits, 8 train / 6 test images: Inception at 299×299 on a CPU is slow."""

    def load(self):
        from protobench import DataSplit

        train, test = super().load()
        return DataSplit(train.images[:8], train.labels[:8]), DataSplit(test.images[:6], test.labels[:6])


def write_random_inception_weights(path: Path) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Shapes(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random initialisation
            return None

    empty = path.with_name("empty.pt")
    torch.save({}, empty)
    torch.manual_seed(0)
    net = Shapes("shapes", ["2048"], feature_extractor_weights_path=str(empty))
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    write_random_inception_weights(path)
    return path


@pytest.mark.slow
def test_inception_weights_file_is_used_and_named(tmp_path, inception_file, monkeypatch):
    ref = Reference(_TinyDigits(), tmp_path, torch.device("cpu"))
    _train, test = ref.dataset.load()
    fid = metric("fid", inception_weights=str(inception_file))
    fid.prepare(ref)
    out = fid.compute(test.images, test.labels, ref)
    assert list(out) == ["fid[inception-v3]"] and math.isfinite(out["fid[inception-v3]"]) and out["fid[inception-v3]"] > 0
    assert not (tmp_path / "evaluators").exists()  # the domain evaluator was never trained
    assert list((tmp_path / "metrics").glob("real-digits-*-train-inception-v3-*/tensors.safetensors"))
    # the same file chosen through the environment variable and through Reference.inception_weights
    chosen = extractors.resolve(ref, str(inception_file))
    assert chosen.fidelity_name == "inception-v3-compat" and chosen.layer("fid") == "2048"
    monkeypatch.setenv("PROTOBENCH_INCEPTION_WEIGHTS", str(inception_file))
    assert extractors.resolve(ref) == chosen
    monkeypatch.delenv("PROTOBENCH_INCEPTION_WEIGHTS")
    assert extractors.resolve(Reference(ref.dataset, tmp_path, torch.device("cpu"), inception_weights=inception_file)) == chosen
    assert extractors.resolve(ref).label == "digits-evaluator"


def test_bad_inception_weights_are_one_line_errors(tmp_path):
    ref = Reference(_TinyDigits(), tmp_path, torch.device("cpu"))
    _train, test = ref.dataset.load()
    with pytest.raises(UsageError, match="not found"):
        metric("fid", inception_weights=str(tmp_path / "missing.pth")).compute(test.images, test.labels, ref)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(UsageError, match="do not fit"):
        metric("fid", inception_weights=str(wrong)).compute(test.images, test.labels, ref)
