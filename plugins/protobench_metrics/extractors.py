"""Feature extractors for the metrics, and the on-disk cache of real-data features.

Two extractors, each registered with torch-fidelity and named in every metric key:
- `inception-v3`: torch-fidelity's `inception-v3-compat` with a weights file the user supplies
  (`--inception-weights`, `-o metric.inception_weights=`, or $PROTOBENCH_INCEPTION_WEIGHTS);
- `<dataset>-evaluator`: the dataset's domain evaluator (evaluator.py), used otherwise.

Real-data features (and their FID statistics) are computed once per (dataset, split, extractor) and kept in
the protobench cache (`metrics/<key>/`), checked on every load; a damaged entry is named and recomputed.
Feature extraction never draws from the global random stream (a run's training does not depend on the cache).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from protobench import Reference, UsageError
from protobench.kit import cache, sha256_file
from protobench_metrics.evaluator import EvaluatorNet, few_threads, load_or_train

INCEPTION_ENV = "PROTOBENCH_INCEPTION_WEIGHTS"
INCEPTION_FIDELITY_NAME = "inception-v3-compat"

_EVALUATOR_NETS: dict[str, EvaluatorNet] = {}  # torch-fidelity extractor name -> evaluator network
_FILE_SHA: dict[tuple[str, int, int], str] = {}
_EXTRACTOR_INSTANCES: dict[tuple[str, str], torch.nn.Module] = {}
_EVALUATORS: dict[tuple[str, str], tuple[EvaluatorNet, dict]] = {}
_REAL: dict[str, dict[str, Tensor]] = {}
_SAMPLE_FEATURES: OrderedDict[tuple[str, str], dict[str, Tensor]] = OrderedDict()


@dataclass(frozen=True)
class Extractor:
    label: str  # what metric keys carry: "digits-evaluator", "inception-v3"
    fidelity_name: str  # the name torch-fidelity knows it by
    ident: str  # cache identity: label + weights checksum
    layers: tuple[str, ...]  # every feature layer extracted (one pass serves all metrics)
    defaults: dict[str, str]  # metric ("fid", "kid", "prc", "isc") -> layer
    kwargs: dict = field(default_factory=dict)  # passed to torch-fidelity's create_feature_extractor
    rgb: bool = False  # feed 3 channels (grey images repeated)

    def layer(self, metric: str) -> str:
        return self.defaults[metric]


# ---------------------------------------------------------------------------------------------
# the domain evaluator, registered with torch-fidelity


def domain_evaluator(reference: Reference) -> tuple[EvaluatorNet, dict]:
    dataset = reference.dataset
    key = (str(Path(reference.cache_dir).resolve()), f"{dataset.name}-{dataset.checksum()}")
    if key not in _EVALUATORS:
        _EVALUATORS[key] = load_or_train(dataset, Path(reference.cache_dir), reference.show_progress)
    return _EVALUATORS[key]


def _register_evaluator(name: str, net: EvaluatorNet) -> None:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    _EVALUATOR_NETS[name] = net
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return

    class DomainEvaluatorExtractor(FeatureExtractorBase):
        """The evaluator's penultimate features (`features`, for FID/KID/PRC) and class logits (for IS)."""

        def __init__(self, fe_name, features_list, **kwargs):
            super().__init__(fe_name, features_list)
            self.net = copy.deepcopy(_EVALUATOR_NETS[fe_name]).eval()

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits"}.get(metric, "features")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            x = x.float().div(127.5).sub(1)
            feats = self.net.features(x)
            out = {"features": feats, "logits": self.net.head(feats)}
            return tuple(out[f].double() for f in self.features_list)

    register_feature_extractor(name, DomainEvaluatorExtractor)


# ---------------------------------------------------------------------------------------------
# choosing the extractor


def inception_weights_path(option: str | os.PathLike | None, reference: Reference) -> Path | None:
    """The Inception weights file, if any: the metric option, then the run's reference, then the env var."""
    for candidate in (option, reference.inception_weights, os.environ.get(INCEPTION_ENV)):
        if candidate:
            return Path(candidate)
    return None


def _file_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


def resolve(reference: Reference, inception_weights: str | os.PathLike | None = None) -> Extractor:
    """The extractor for these metrics: Inception with the user's weights, else the domain evaluator."""
    path = inception_weights_path(inception_weights, reference)
    if path is not None:
        if not path.is_file():
            raise UsageError(f"inception weights file not found: {path}")
        sha = _file_sha(path)
        return Extractor("inception-v3", INCEPTION_FIDELITY_NAME, f"inception-v3-{sha[:16]}",
                         ("2048", "logits_unbiased"), {"fid": "2048", "kid": "2048", "prc": "2048",
                                                       "isc": "logits_unbiased"},
                         {"feature_extractor_weights_path": str(path)}, rgb=True)
    dataset = reference.dataset
    _net, meta = domain_evaluator(reference)
    sha = meta["weights_sha256"][:16]
    name = f"protobench-{dataset.name}-evaluator-{sha}"
    _register_evaluator(name, _net)
    return Extractor(f"{dataset.name}-evaluator", name, f"{dataset.name}-evaluator-{sha}", ("features", "logits"),
                     {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"})


def instruments(reference: Reference, inception_weights: str | os.PathLike | None = None) -> dict[str, str]:
    """{extractor label: sha256 of the weights it scores with}, e.g. {"digits-evaluator": "3f2a..."}: what a
    record stores so that numbers from different evaluators are never pooled."""
    path = inception_weights_path(inception_weights, reference)
    if path is not None:
        return {"inception-v3": _file_sha(path)} if path.is_file() else {}
    _net, meta = domain_evaluator(reference)
    return {f"{reference.dataset.name}-evaluator": meta["weights_sha256"]}


def instrument_details(reference: Reference, inception_weights: str | os.PathLike | None = None) -> dict[str, dict]:
    """{extractor label: {"test_accuracy": ...}} for the domain evaluator; nothing for an Inception file."""
    if inception_weights_path(inception_weights, reference) is not None:
        return {}
    _net, meta = domain_evaluator(reference)
    return {f"{reference.dataset.name}-evaluator": {"test_accuracy": meta["test_accuracy"]}}


def _check_inception_file(path: str) -> None:
    """torch-fidelity unpickles the file fully; refuse anything but plain tensors first."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"inception weights {path}: not a plain tensor state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"inception weights {path}: expected a state dict of tensors")


def _instance(ext: Extractor, device: torch.device) -> torch.nn.Module:
    from torch_fidelity.utils import create_feature_extractor

    key = (ext.ident, str(device))
    if key not in _EXTRACTOR_INSTANCES:
        if "feature_extractor_weights_path" in ext.kwargs:
            _check_inception_file(ext.kwargs["feature_extractor_weights_path"])
        try:
            fe = create_feature_extractor(ext.fidelity_name, list(ext.layers), cuda=device.type == "cuda",
                                          verbose=False, **ext.kwargs)
        except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or wrong shapes
            first = str(exc).strip().splitlines()[0]
            raise UsageError(f"{ext.label} weights do not fit torch-fidelity's {ext.fidelity_name}: {first}") from None
        _EXTRACTOR_INSTANCES[key] = fe
    return _EXTRACTOR_INSTANCES[key]


# ---------------------------------------------------------------------------------------------
# feature extraction


class UInt8Images(torch.utils.data.Dataset):
    """uint8 N×C×H×W images held in memory, as torch-fidelity's input; grey -> RGB when asked."""

    def __init__(self, images: Tensor, rgb: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"samples must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        self.images = images.cpu()
        self.rgb = rgb

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i]
        if self.rgb and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return x.contiguous()


def extract(ext: Extractor, images: Tensor, device: torch.device, batch_size: int = 256) -> dict[str, Tensor]:
    """Every layer of `ext` for `images` (uint8 N×C×H×W), through torch-fidelity's feature loop."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    fe = _instance(ext, device)
    pixels = 299 * 299 if ext.rgb else images.shape[-1] * images.shape[-2]  # Inception resizes to 299
    # torch's DataLoader draws a seed from the global RNG per pass: fork it, so measuring changes no training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), few_threads(pixels):
        return get_featuresdict_from_dataset(UInt8Images(images, ext.rgb), fe, batch_size,
                                             device.type == "cuda", True, False)


def sample_features(ext: Extractor, samples: Tensor, device: torch.device) -> dict[str, Tensor]:
    """Features of generated samples, shared by the metrics of one evaluation (a small in-process memo)."""
    key = (ext.ident, hashlib.sha256(samples.contiguous().cpu().numpy().tobytes()).hexdigest()
           + str(tuple(samples.shape)))
    if key in _SAMPLE_FEATURES:
        _SAMPLE_FEATURES.move_to_end(key)
        return _SAMPLE_FEATURES[key]
    feats = extract(ext, samples, device)
    _SAMPLE_FEATURES[key] = feats
    while len(_SAMPLE_FEATURES) > 2:
        _SAMPLE_FEATURES.popitem(last=False)
    return feats


def fid_statistics(features: Tensor) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.cpu())


def real_cache_key(reference: Reference, ext: Extractor, split: str) -> str:
    d = reference.dataset
    return f"real-{d.name}-{d.checksum()}-{split}-{ext.ident}"


def real_cache_path(reference: Reference, ext: Extractor, split: str) -> Path:
    """The cache entry (a folder) holding the real `split`'s features."""
    return cache.entry_path(reference.cache_dir, "metrics", real_cache_key(reference, ext, split))


def real_features(reference: Reference, ext: Extractor, split: str = "train") -> dict[str, Tensor]:
    """Features of the real `split` (plus `labels` and FID statistics `fid.mu`, `fid.sigma`), cached on disk.

    The cache entry is checked on every load (protobench.cache); a damaged one is named and recomputed."""
    if split not in ("train", "test"):
        raise UsageError(f"reference split must be 'train' or 'test', got {split!r}")
    key = real_cache_key(reference, ext, split)
    memo = str(real_cache_path(reference, ext, split).resolve())
    if memo in _REAL:
        return _REAL[memo]
    found = cache.load_tensors(reference.cache_dir, "metrics", key)
    if found is not None:
        _REAL[memo] = found[0]
        return _REAL[memo]
    train, test = reference.dataset.load()
    real = train if split == "train" else test
    feats = extract(ext, real.images, reference.device)
    stats = fid_statistics(feats[ext.layer("fid")])
    tensors = {**{k: v.contiguous() for k, v in feats.items()}, "labels": real.labels.to(torch.int64).contiguous(),
               "fid.mu": torch.from_numpy(stats["mu"]).contiguous(),
               "fid.sigma": torch.from_numpy(stats["sigma"]).contiguous()}
    cache.save_tensors(reference.cache_dir, "metrics", key, tensors,
                       {"dataset": reference.dataset.name, "dataset_checksum": reference.dataset.checksum(),
                        "split": split, "extractor": ext.ident, "n": len(real)})
    _REAL[memo] = tensors
    return tensors


def clear_memos() -> None:
    """Forget in-process caches (tests use it to exercise the on-disk cache)."""
    for memo in (_EXTRACTOR_INSTANCES, _EVALUATORS, _REAL, _SAMPLE_FEATURES, _FILE_SHA):
        memo.clear()
