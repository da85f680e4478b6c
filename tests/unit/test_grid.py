"""The sample grid a run writes (and `protobench plot samples` / `protobench sample` share): one labelled
row per class, gaps between tiles; checked on the PNG itself, without looking at it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.training.generation import save_grid


def grid(tmp_path, samples, labels, num_classes, **kwargs) -> np.ndarray:
    path = tmp_path / "grid.png"
    save_grid(samples, labels, num_classes, path, **kwargs)
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("shape, per_class, gap, label_width", [
    ((1, 8, 8), 10, 2, 64),  # digits: 8×8 tiles scaled ×8
    ((3, 32, 32), 6, 3, 80),  # shapes: 32×32 RGB tiles scaled ×2
    ((3, 96, 96), 4, 0, 40),  # larger than 64 px: not scaled; no gaps
])
def test_size_includes_gaps_and_label_margin(tmp_path, shape, per_class, gap, label_width):
    c, h, w = shape
    num_classes = 12  # more than the 10 rows a grid shows
    labels = torch.arange(num_classes).repeat(per_class)
    samples = torch.randint(0, 256, (len(labels), c, h, w), dtype=torch.uint8)
    image = grid(tmp_path, samples, labels, num_classes, per_class=per_class, gap=gap, label_width=label_width)
    scale = max(1, 64 // h)
    rows = 10
    assert image.shape[:2] == (rows * h * scale + (rows + 1) * gap,
                               label_width + per_class * w * scale + (per_class + 1) * gap)
    assert image.ndim == (2 if c == 1 else 3)


def test_tiles_sit_between_white_gaps_and_rows_are_labelled(tmp_path):
    num_classes, per_class, gap, label_width, scale = 3, 4, 2, 64, 8
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    samples = torch.zeros((len(labels), 1, 8, 8), dtype=torch.uint8)  # black tiles
    samples[labels == 2] = 100
    image = grid(tmp_path, samples, labels, num_classes, per_class=per_class, gap=gap, label_width=label_width,
                 class_names=("zero", "one", "two"))
    tile = 8 * scale
    tiles = image[:, label_width:]
    for i in range(per_class + 1):  # the vertical gaps, before, between and after the tiles
        assert (tiles[:, i * (tile + gap):i * (tile + gap) + gap] == 255).all()
    for k in range(num_classes + 1):  # the horizontal gaps
        assert (tiles[k * (tile + gap):k * (tile + gap) + gap] == 255).all()
    first = tiles[gap:gap + tile, gap:gap + tile]
    assert (first == 0).all()  # class 0's first sample, scaled, in place
    last_row = tiles[2 * (tile + gap) + gap:3 * (tile + gap)]
    assert set(np.unique(last_row[:, gap:-gap])) <= {100, 255}
    for k in range(num_classes):  # a name is drawn in each row's margin
        margin = image[gap + k * (tile + gap):(k + 1) * (tile + gap), :label_width]
        assert (margin < 128).any(), f"row {k} has no label"


def test_missing_samples_leave_blank_tiles(tmp_path):
    labels = torch.tensor([0, 0, 0, 1])
    samples = torch.zeros((4, 1, 8, 8), dtype=torch.uint8)
    image = grid(tmp_path, samples, labels, 2, per_class=3, gap=2, label_width=10)
    tile = 64
    second_row = image[2 + tile + 2:2 + 2 * tile + 2, 10:]
    assert (second_row[:, 2:2 + tile] == 0).all()  # class 1's one sample
    assert (second_row[:, 2 + tile + 2:] == 255).all()  # and two blank tiles
