"""FID through torch-fidelity, with the dataset's domain evaluator registered as its feature extractor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from protobench import Metric, Reference

_EVALUATORS: dict[str, object] = {}


def _register_extractor(name: str, net) -> None:
    """Register `net` with torch-fidelity under `name` (once per process)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    _EVALUATORS[name] = net
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return

    class DomainEvaluatorExtractor(FeatureExtractorBase):
        def __init__(self, fe_name, features_list, **kwargs):
            super().__init__(fe_name, features_list)
            self.net = _EVALUATORS[fe_name]

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


class _UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


def extractor_for(reference: Reference) -> tuple[str, str]:
    """(torch-fidelity extractor name, label used in metric keys)."""
    dataset = reference.dataset
    from protobench_metrics.evaluator import load_or_train

    net, meta = load_or_train(dataset, reference.cache_dir, reference.show_progress)
    name = f"protobench-{dataset.name}-evaluator-{dataset.checksum()}"
    _register_extractor(name, net)
    return name, f"{dataset.name}-evaluator"


def fidelity(samples: Tensor, reference: Reference, split: str = "train", **metrics) -> dict[str, float]:
    import torch_fidelity

    name, _label = extractor_for(reference)
    train, test = reference.dataset.load()
    real = train if split == "train" else test
    cache_root = Path(reference.cache_dir) / "fidelity"
    cache_root.mkdir(parents=True, exist_ok=True)
    return torch_fidelity.calculate_metrics(
        input1=_UInt8Images(samples), input2=_UInt8Images(real.images), feature_extractor=name,
        cuda=reference.device.type == "cuda", batch_size=256, save_cpu_ram=True, verbose=False,
        cache=True, cache_root=str(cache_root), input2_cache_name=f"{name}-{split}",
        **metrics,
    )


class FID(Metric):
    """Fréchet distance between feature statistics of the samples and of the real training split."""

    name = "fid"
    higher_is_better = False

    def prepare(self, reference: Reference) -> None:
        extractor_for(reference)

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        _name, label = extractor_for(reference)
        out = fidelity(samples, reference, fid=True)
        return {f"fid[{label}]": float(out["frechet_inception_distance"])}
