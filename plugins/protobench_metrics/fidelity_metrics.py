"""FID, KID, IS, precision/recall and per-class FID through torch-fidelity, on a named feature extractor.

Samples arrive as uint8 tensors in memory; their features are extracted once per evaluation and shared by
every metric; the real split's features are cached on disk (extractors.py). All the arithmetic is
torch-fidelity's own (fid_statistics_to_metric, kid_features_to_metric, ...).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import Tensor

from protobench import Metric, Reference, UsageError
from protobench_metrics import bootstrap
from protobench_metrics.evaluator import one_thread
from protobench_metrics.extractors import (
    Extractor,
    fid_statistics,
    instrument_details,
    real_features,
    resolve,
    sample_features,
)
from protobench_metrics.extractors import instruments as extractor_instruments


class FidelityMetric(Metric):
    """Shared plumbing: which extractor, which real split, features of samples and of real data."""

    needs_labels: ClassVar[bool] = False
    min_samples: ClassVar[int] = 2

    def __init__(self, inception_weights: str = "", reference_split: str = "train"):
        self.inception_weights = inception_weights
        self.reference_split = reference_split

    def extractor(self, reference: Reference) -> Extractor:
        return resolve(reference, self.inception_weights)

    def prepare(self, reference: Reference) -> None:
        real_features(reference, self.extractor(reference), self.reference_split)

    def instruments(self, reference: Reference) -> dict[str, str]:
        return extractor_instruments(reference, self.inception_weights)

    def feature_dimension(self, reference: Reference) -> int:
        """Inception's pool features (2048), else the domain evaluator's (4 × width), known without building it."""
        from protobench_metrics.evaluator import evaluator_options
        from protobench_metrics.extractors import inception_weights_path

        if inception_weights_path(self.inception_weights, reference) is not None:
            return 2048
        return 4 * int(evaluator_options(reference.dataset)["width"])

    def instrument_details(self, reference: Reference) -> dict[str, dict]:
        return instrument_details(reference, self.inception_weights)

    def features(self, samples: Tensor, labels: Tensor | None, reference: Reference):
        if samples.ndim != 4 or samples.shape[0] < self.min_samples:
            raise UsageError(f"{self.name} needs at least {self.min_samples} samples, got {tuple(samples.shape)}")
        if self.needs_labels and (labels is None or labels.shape != (samples.shape[0],)):
            raise UsageError(f"{self.name} needs one class label per sample")
        ext = self.extractor(reference)
        samples = reference.dataset.resize(samples)
        return ext, sample_features(ext, samples, reference.device), real_features(reference, ext, self.reference_split)


def frechet_distance(mu_sigma_1: dict, mu_sigma_2: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(mu_sigma_1, mu_sigma_2, False)[KEY_METRIC_FID])


def _real_stats(real: dict[str, Tensor]) -> dict:
    return {"mu": real["fid.mu"].numpy(), "sigma": real["fid.sigma"].numpy()}


class FID(FidelityMetric):
    """Fréchet distance between feature statistics of the samples and of the real training split."""

    name = "fid"
    higher_is_better = False

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        ext, fake, real = self.features(samples, labels, reference)
        # eq. 6, Heusel et al. 2017: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), computed by torch-fidelity
        feats = fake[ext.layer("fid")]
        with one_thread(feats.shape[1] <= 512):
            return {f"fid[{ext.label}]": frechet_distance(fid_statistics(feats), _real_stats(real))}

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        ext, fake, real = self.features(samples, labels, reference)
        stats = _real_stats(real)
        with one_thread(fake[ext.layer("fid")].shape[1] <= 512):
            reps = bootstrap.frechet_replicates(fake[ext.layer("fid")].numpy(), stats["mu"], stats["sigma"],
                                                bootstrap.rng())
        return {f"fid[{ext.label}]": bootstrap.se(reps)}


class KID(FidelityMetric):
    """Kernel distance (unbiased MMD², cubic polynomial kernel), mean over random subsets.

    `kid-std` is torch-fidelity's spread over the subsets: with no more samples than kid_subset_size every
    subset holds all of them, so it reflects re-drawing the real set only; the samples' error is metrics_se."""

    name = "kid"
    higher_is_better = False

    def __init__(self, inception_weights: str = "", reference_split: str = "train", kid_subsets: int = 100,
                 kid_subset_size: int = 1000):
        super().__init__(inception_weights, reference_split)
        if kid_subsets < 1 or kid_subset_size < 2:
            raise ValueError("kid_subsets must be >= 1 and kid_subset_size >= 2")
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        from torch_fidelity.metric_kid import (
            KEY_METRIC_KID_MEAN,
            KEY_METRIC_KID_STD,
            kid_featuresdict_to_metric,
        )

        ext, fake, real = self.features(samples, labels, reference)
        layer = ext.layer("kid")
        size = min(self.kid_subset_size, len(fake[layer]), len(real[layer]))  # subsets cannot exceed either set
        with one_thread(fake[layer].shape[1] <= 512):
            out = kid_featuresdict_to_metric(fake, real, layer, kid_subsets=self.kid_subsets, kid_subset_size=size,
                                             rng_seed=reference.seed, verbose=False)
        return {f"kid[{ext.label}]": float(out[KEY_METRIC_KID_MEAN]),
                f"kid-std[{ext.label}]": float(out[KEY_METRIC_KID_STD])}

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        # kid-std is the spread over subsets, which at <= kid_subset_size samples re-draws only the real set;
        # this is the error from the samples themselves (all fakes against all reals, unbiased MMD²)
        ext, fake, real = self.features(samples, labels, reference)
        layer = ext.layer("kid")
        f, r = fake[layer].numpy(), real[layer].numpy()
        with one_thread(f.shape[1] <= 512):
            reps = bootstrap.mmd2_replicates(bootstrap.poly_kernel(f, f), bootstrap.poly_kernel(f, r),
                                             bootstrap.real_term(bootstrap.poly_kernel(r, r)), bootstrap.rng())
        return {f"kid[{ext.label}]": bootstrap.se(reps)}


class InceptionScore(FidelityMetric):
    """exp E_x KL(p(y|x) || p(y)) over the extractor's class logits (Salimans et al. 2016)."""

    name = "is"
    higher_is_better = True

    def __init__(self, inception_weights: str = "", reference_split: str = "train", isc_splits: int = 10):
        super().__init__(inception_weights, reference_split)
        self.isc_splits = isc_splits

    def prepare(self, reference: Reference) -> None:
        self.extractor(reference)  # no real statistics: IS looks at the samples alone

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        from torch_fidelity.metric_isc import (
            KEY_METRIC_ISC_MEAN,
            KEY_METRIC_ISC_STD,
            isc_featuresdict_to_metric,
        )

        if samples.ndim != 4 or samples.shape[0] < 2:
            raise UsageError(f"is needs at least 2 samples, got {tuple(samples.shape)}")
        ext = self.extractor(reference)
        fake = sample_features(ext, reference.dataset.resize(samples), reference.device)
        splits = max(1, min(self.isc_splits, samples.shape[0] // 2))
        out = isc_featuresdict_to_metric(fake, ext.layer("isc"), isc_splits=splits, rng_seed=reference.seed,
                                         verbose=False)
        return {f"is[{ext.label}]": float(out[KEY_METRIC_ISC_MEAN]), f"is-std[{ext.label}]": float(out[KEY_METRIC_ISC_STD])}


class PrecisionRecall(FidelityMetric):
    """Improved precision (samples inside the real manifold) and recall (real inside the samples'), k-NN balls."""

    name = "precision-recall"
    higher_is_better = True

    def __init__(self, inception_weights: str = "", reference_split: str = "train", prc_neighborhood: int = 3):
        super().__init__(inception_weights, reference_split)
        self.prc_neighborhood = prc_neighborhood
        self.min_samples = prc_neighborhood + 1

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        from torch_fidelity.metric_prc import (
            KEY_METRIC_PRECISION,
            KEY_METRIC_RECALL,
            prc_featuresdict_to_metric,
        )

        ext, fake, real = self.features(samples, labels, reference)
        with one_thread(fake[ext.layer("prc")].shape[1] <= 512):
            out = prc_featuresdict_to_metric(fake, real, ext.layer("prc"), prc_neighborhood=self.prc_neighborhood,
                                             save_cpu_ram=True, verbose=False)
        return {f"precision[{ext.label}]": float(out[KEY_METRIC_PRECISION]),
                f"recall[{ext.label}]": float(out[KEY_METRIC_RECALL])}


class FIDPerClass(FidelityMetric):
    """FID of each class's samples against that class's real images, and their mean.

    Noisy with few samples per class (50 per class at 500 samples): compare runs, not papers."""

    name = "fid-per-class"
    higher_is_better = False
    needs_labels = True
    min_samples_per_class = 2

    def per_class_dimension(self, reference: Reference) -> int:
        return self.feature_dimension(reference)  # each class's covariance: full rank only from this many samples

    def per_class(self, samples: Tensor, labels: Tensor, reference: Reference) -> tuple[str, dict[int, float]]:
        """(extractor label, {class: FID of its samples against its real images})."""
        ext, fake, real = self.features(samples, labels, reference)
        layer = ext.layer("fid")
        labels = labels.cpu()
        values: dict[int, float] = {}
        for k in range(reference.dataset.num_classes):
            mine, theirs = fake[layer][labels == k], real[layer][real["labels"] == k]
            if len(mine) < 2 or len(theirs) < 2:
                continue
            with one_thread(mine.shape[1] <= 512):
                values[k] = frechet_distance(fid_statistics(mine), fid_statistics(theirs))
        if not values:
            raise UsageError(f"{self.name} needs at least 2 samples of some class")
        return ext.label, values

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        label, values = self.per_class(samples, labels, reference)
        out = {f"fid-per-class[{label}]/{k}": v for k, v in values.items()}
        return {f"fid-per-class[{label}]": float(np.mean(list(values.values()))), **out}

    def class_replicates(self, samples: Tensor, labels: Tensor, reference: Reference) -> tuple[str, np.ndarray]:
        """(extractor label, replicates of the mean over classes): each class's samples resampled on their own."""
        ext, fake, real = self.features(samples, labels, reference)
        layer = ext.layer("fid")
        labels = labels.cpu()
        gen, per_class = bootstrap.rng(), []
        for k in range(reference.dataset.num_classes):
            mine, theirs = fake[layer][labels == k], real[layer][real["labels"] == k]
            if len(mine) < 2 or len(theirs) < 2:
                continue
            stats = fid_statistics(theirs)
            with one_thread(mine.shape[1] <= 512):
                per_class.append(bootstrap.frechet_replicates(mine.numpy(), stats["mu"], stats["sigma"], gen))
        if not per_class:
            raise UsageError(f"{self.name} needs at least 2 samples of some class")
        return ext.label, np.mean(per_class, axis=0)

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        label, reps = self.class_replicates(samples, labels, reference)
        return {f"{self.name}[{label}]": bootstrap.se(reps)}


class IntraFID(FIDPerClass):
    """Intra-class FID (Miyato & Koyama 2018): the mean over classes of each class's FID.

    Unlike FID it sees labels: samples of the right images under the wrong labels score badly. The headline
    of class-conditional benchmarks; the sample count per class must match between runs (docs/metrics.md)."""

    name = "intra-fid"

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        label, values = self.per_class(samples, labels, reference)
        if len(values) < reference.dataset.num_classes:
            missing = sorted(set(range(reference.dataset.num_classes)) - set(values))
            raise UsageError(f"intra-fid needs at least 2 samples of every class; none for {missing}")
        return {f"intra-fid[{label}]": float(np.mean(list(values.values())))}


class IntraKID(FidelityMetric):
    """Intra-class KID: the mean over classes of the unbiased MMD² (KID's cubic kernel) between each class's
    samples and that class's real images, all against all (no subsets, no covariance).

    Unbiased at any number of samples per class, so values at different sample counts estimate the same thing
    (intra-fid's bias grows as the count falls); its noise does not vanish, and its standard error says how big."""

    name = "intra-kid"
    higher_is_better = False
    needs_labels = True
    min_samples_per_class = 2

    def _classes(self, samples: Tensor, labels: Tensor, reference: Reference):
        ext, fake, real = self.features(samples, labels, reference)
        layer = ext.layer("kid")
        labels = labels.cpu()
        kernels = []
        for k in range(reference.dataset.num_classes):
            mine = fake[layer][labels == k].numpy()
            theirs = real[layer][real["labels"] == k].numpy()
            if len(mine) < 2 or len(theirs) < 2:
                raise UsageError(f"intra-kid needs at least 2 samples of every class; class {k} has {len(mine)}")
            with one_thread(mine.shape[1] <= 512):
                kernels.append((bootstrap.poly_kernel(mine, mine), bootstrap.poly_kernel(mine, theirs),
                                bootstrap.real_term(bootstrap.poly_kernel(theirs, theirs))))
        return ext.label, kernels

    def compute(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        label, kernels = self._classes(samples, labels, reference)
        return {f"intra-kid[{label}]": float(np.mean([bootstrap.mmd2_unbiased(*k) for k in kernels]))}

    def standard_errors(self, samples: Tensor, labels: Tensor, reference: Reference) -> dict[str, float]:
        label, kernels = self._classes(samples, labels, reference)
        gen = bootstrap.rng()
        reps = np.mean([bootstrap.mmd2_replicates(*k, gen) for k in kernels], axis=0)
        return {f"intra-kid[{label}]": bootstrap.se(reps)}
