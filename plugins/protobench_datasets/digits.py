"""scikit-learn's bundled handwritten digits: 1797 8×8 grey images, 10 classes. The embedded default."""

from __future__ import annotations

import numpy as np
import torch

from protobench import Dataset, DataSplit


class DigitsDataset(Dataset):
    name = "digits"
    num_classes = 10
    class_names = tuple(str(i) for i in range(10))
    image_shape = (1, 8, 8)
    # The embedded default benchmark, chosen by measurement on a 2-core CPU (README, "The default benchmark"):
    # - a step costs nearly the same at batch 64 and 128 here (a fixed ~0.2 s of small kernels), and quality
    #   follows the number of steps: batch 128, lr 3e-3 reach intra-FID ~16 in 141 steps and ~7 in 188; the
    #   paper's lr 2e-4 (for its 26M-parameter U-Net; this one has 1M) was at ~30 after 40k images;
    # - 150 steps (19.2k images), evaluated every 6.4k images with 400 samples (40 per class) by
    #   DPM-Solver++(2M), 10 steps: 4 arms x 3 seeds then run in under 10 minutes as two one-thread jobs;
    # - Stage I with the paper's batch 512 is only 60 steps on 1437 images (29% nearest-prototype accuracy),
    #   so it gets batch 128, lr 1e-3, 5 epochs (55 steps, ~93-96%).
    presets = {
        "batch_size": 128,
        "lr": 3e-3,
        "budget": 19_200,
        # 8 evaluations (every 2.4k images), so that work to target resolves to an eighth of the budget; each
        # scores 100 samples (10 per class); the last draws 1280 for intra-fid (final_eval_samples=0: 128 per
        # class = the evaluator's feature dimension). Sampling costs ~14 ms a sample here: this is what keeps
        # the default sweep within 10 minutes
        "eval_every": 2_400,
        "eval_samples": 100,
        # intra-kid is unbiased at any sample count, so the cheap evaluations and the target (measured at 20 per
        # class) estimate the same quantity; intra-fid's bias falls with the count (docs/metrics.md)
        "metrics": ("intra-kid", "intra-fid", "fid", "class-accuracy"),
        "primary_metric": "intra-kid",
        "sampler.steps": 10,
        "conditioner.stage1_lr": 1e-3,
        "conditioner.stage1_batch_size": 128,
        "conditioner.stage1_epochs": 5,
    }
    #: the target for the primary metric, fixed before the scored runs (the default sweep's seeds are 0, 1, 2):
    #: `protobench sweep --conditioner random --seed 100,101,102 -o eval_samples=200` with this preset gave
    #: intra-KID 1.565, 1.253, 1.596 at the 6th of 8 evaluations (14.4k images): their mean, 1.47, is what the
    #: baseline reaches at about three quarters of the budget, so crossings fall between evaluations and an arm
    #: up to ~1.3x slower still crosses. intra-KID is unbiased, so the 200-sample measurement holds at 100.
    target = {"metric": "intra-kid", "value": 1.47, "samples": 200,
              "how": "mean intra-KID of random, held-out seeds 100-102, at 14.4k of 19.2k images"}

    # reject_noise: uniform noise otherwise scored a better FID than blurred or one-class sets (docs/metrics.md)
    evaluator_options = {"width": 32, "epochs": 30, "batch_size": 64, "lr": 1e-3, "reject_noise": True}

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0):
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            data = load_digits()
            # pixel values are 0..16; map to 0..255
            images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
            labels = data.target.astype(np.int64)
            idx_train, idx_test = train_test_split(
                np.arange(len(labels)), test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
            )
            self._splits = tuple(
                DataSplit(torch.from_numpy(images[np.sort(i)]), torch.from_numpy(labels[np.sort(i)]))
                for i in (idx_train, idx_test)
            )
        return self._splits
