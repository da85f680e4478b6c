"""`shapes`: procedural RGB images of 10 shape kinds, generated from a seed (no files, no download).

Every image draws its own foreground colour, background colour and gradient, size, position and rotation;
the shape is rasterised from its signed distance with one pixel of antialiasing, vectorised over a batch
of images in torch. The same (seed, n_train, n_test, size) always gives the same bytes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from protobench import Dataset, DataSplit

SHAPE_NAMES = (
    "circle", "square", "triangle", "star", "cross", "ring", "ellipse", "diamond", "hexagon", "stripes",
)
CHUNK = 1024  # images rasterised at once (bounds the temporaries to a few MB per map)


def segment_sdf(x: Tensor, y: Tensor, a: tuple, b: tuple) -> Tensor:
    """Signed distance from points (x, y) to the segment a-b; negative on the origin's side of its line.
    a and b are (x, y) pairs of floats or of tensors broadcastable to x."""
    (ax, ay), (bx, by) = a, b
    ex, ey = bx - ax, by - ay
    wx, wy = x - ax, y - ay
    t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
    dist = torch.hypot(wx - ex * t, wy - ey * t)
    side = ex * wy - ey * wx
    origin_side = ey * ax - ex * ay  # the same cross product for the origin
    return torch.where(side * origin_side > 0, -dist, dist)


def folded_sdf(x: Tensor, y: Tensor, n: int, tip: float, inner: float) -> Tensor:
    """n-fold symmetric shape whose boundary in the half-sector [0, π/n] is the segment from the point at
    radius `tip`, angle 0, to the point at radius `inner`, angle π/n (a regular polygon when
    inner = tip·cos(π/n), a star when smaller). The first tip points up."""
    sector = 2 * math.pi / n
    phi = torch.remainder(torch.atan2(x, y), sector)  # angle from the +y axis
    phi = torch.minimum(phi, sector - phi)  # fold onto [0, π/n]
    r = torch.hypot(x, y)
    half = math.pi / n
    return segment_sdf(r * torch.cos(phi), r * torch.sin(phi), (tip, 0.0),
                       (inner * math.cos(half), inner * math.sin(half)))


def box_sdf(x: Tensor, y: Tensor, cx: float, cy: float, hx: float, hy: float) -> Tensor:
    dx, dy = (x - cx).abs() - hx, (y - cy).abs() - hy
    return torch.hypot(dx.clamp_min(0.0), dy.clamp_min(0.0)) + torch.maximum(dx, dy).clamp_max(0.0)


def unit_sdf(kind: str, x: Tensor, y: Tensor, aspect: Tensor) -> Tensor:
    """Signed distance of shape `kind` in its unit frame (bounding radius about 1), negative inside.
    x, y are (B, P); aspect (B, 1) shapes the ellipse and the diamond."""
    if kind == "circle":
        return torch.hypot(x, y) - 1.0
    if kind == "ring":
        return (torch.hypot(x, y) - 0.72).abs() - 0.28
    if kind == "square":
        return box_sdf(x, y, 0.0, 0.0, 0.82, 0.82)
    if kind == "triangle":
        return folded_sdf(x, y, 3, 1.1, 1.1 * math.cos(math.pi / 3))
    if kind == "hexagon":
        return folded_sdf(x, y, 6, 1.0, math.cos(math.pi / 6))
    if kind == "star":
        return folded_sdf(x, y, 5, 1.05, 0.45)
    if kind == "cross":
        return torch.minimum(box_sdf(x, y, 0.0, 0.0, 0.95, 0.32), box_sdf(x, y, 0.0, 0.0, 0.32, 0.95))
    if kind == "stripes":
        bars = [box_sdf(x, y, cx, 0.0, 0.16, 0.95) for cx in (-0.6, 0.0, 0.6)]
        return torch.minimum(torch.minimum(bars[0], bars[1]), bars[2])
    if kind == "ellipse":
        qx, qy = x, y / aspect  # semi-axes 1 and aspect
        q = torch.hypot(qx, qy).clamp_min(1e-6)
        grad = torch.hypot(x, y / aspect**2) / q
        return (q - 1.0) / grad.clamp_min(1e-6)  # first-order distance: f / |∇f|
    if kind == "diamond":
        # a rhombus: fold onto the first quadrant, distance to its edge (aspect, 0)-(0, 1)
        return segment_sdf(x.abs(), y.abs(), (aspect, 0.0), (0.0, 1.0))
    raise ValueError(f"unknown shape kind {kind!r}")


def draw_parameters(n: int, rng: np.random.Generator, num_classes: int) -> dict[str, np.ndarray]:
    """Per-image random parameters; labels are balanced (n // classes each, the rest spread) and shuffled."""
    labels = rng.permutation(np.arange(n) % num_classes)
    scale = rng.uniform(0.42, 0.75, n)  # radius of the unit frame, in [-1, 1] image coordinates
    margin = np.maximum(0.92 - scale * 1.05, 0.0)
    center = rng.uniform(-1.0, 1.0, (n, 2)) * margin[:, None]
    angle = rng.uniform(0.0, 2 * math.pi, n)
    aspect = rng.uniform(0.45, 0.62, n)
    bg = rng.uniform(0.0, 1.0, (n, 3))
    # foreground differs from the background by at least 0.3 in every channel, so every shape is visible
    u = rng.uniform(0.0, 1.0, (n, 3))
    fg = np.where(bg < 0.5, bg + 0.3 + u * (0.7 - bg), bg - 0.3 - u * (bg - 0.3))
    grad_dir = rng.uniform(0.0, 2 * math.pi, n)
    grad_amp = rng.uniform(0.0, 0.15, n)
    return {"labels": labels, "scale": scale, "center": center, "angle": angle, "aspect": aspect, "bg": bg,
            "fg": fg, "grad_dir": grad_dir, "grad_amp": grad_amp}


def render(params: dict[str, np.ndarray], size: int) -> Tensor:
    """uint8 N×3×size×size images for the given parameters."""
    threads = torch.get_num_threads()
    # many small elementwise kernels: intra-op threads cost more than they give (10× slower on a busy CPU)
    torch.set_num_threads(1)
    try:
        return _render(params, size)
    finally:
        torch.set_num_threads(threads)


def _render(params: dict[str, np.ndarray], size: int) -> Tensor:
    n = len(params["labels"])
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0  # pixel centres in [-1, 1]
    yy, xx = torch.meshgrid(-coords, coords, indexing="ij")  # y up
    gx, gy = xx.reshape(1, -1), yy.reshape(1, -1)
    pixel = 2.0 / size
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items() if k != "labels"}
    labels = torch.as_tensor(params["labels"])
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        b = sl.stop - sl.start
        cos, sin = torch.cos(t["angle"][sl])[:, None], torch.sin(t["angle"][sl])[:, None]
        inv = 1.0 / t["scale"][sl][:, None]
        rx, ry = gx - t["center"][sl, 0:1], gy - t["center"][sl, 1:2]  # B,P
        # rotate by -angle, then scale into the unit frame
        ux, uy = (cos * rx + sin * ry) * inv, (cos * ry - sin * rx) * inv
        sdf = torch.empty((b, gx.shape[1]))
        lab = labels[sl]
        for k, kind in enumerate(SHAPE_NAMES):
            idx = (lab == k).nonzero().flatten()
            if idx.numel():
                sdf[idx] = unit_sdf(kind, ux[idx], uy[idx], t["aspect"][sl][idx, None]) / inv[idx]
        coverage = (0.5 - sdf / pixel).clamp(0.0, 1.0)[:, None, :]  # one-pixel antialiasing ramp
        gd = t["grad_dir"][sl, None]
        ramp = (gx * torch.cos(gd) + gy * torch.sin(gd)) * t["grad_amp"][sl, None]  # B,P
        bg = (t["bg"][sl, :, None] + ramp[:, None, :]).clamp(0.0, 1.0)
        img = bg * (1.0 - coverage) + t["fg"][sl, :, None] * coverage
        out[sl] = img.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).view(b, 3, size, size)
    return out


class ShapesDataset(Dataset):
    name = "shapes"
    num_classes = len(SHAPE_NAMES)
    class_names = SHAPE_NAMES
    # CPU-sized defaults for a 32×32 RGB stand-in of CIFAR-shaped work (the paper's U-Net is in cifar10's presets)
    presets = {
        "batch_size": 128,
        "budget": 200_000,
        "eval_every": 50_000,
        "eval_samples": 500,
        "denoiser.base_channels": 32,
        "denoiser.channel_mult": (1, 2, 2),
        "denoiser.attention_resolutions": (8,),
        "conditioner.stage1_lr": 1e-3,
        "conditioner.stage1_batch_size": 128,
        "conditioner.stage1_epochs": 5,
    }
    # measured on the default 10k split (1 busy CPU thread): 99.6% test accuracy in ~4 minutes, once, cached
    evaluator_options = {"width": 16, "epochs": 8, "batch_size": 128, "lr": 1e-3}

    def __init__(self, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0, size: int = 32):
        if n_train < 1 or n_test < 1:
            raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        self.n_train, self.n_test, self.seed, self.size = n_train, n_test, seed, size
        self.image_shape = (3, size, size)
        self._splits: tuple[DataSplit, DataSplit] | None = None

    def generate(self, n: int, stream: int) -> DataSplit:
        """n images from the independent random stream `stream` (0 train, 1 test) of this seed."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, stream]))
        params = draw_parameters(n, rng, self.num_classes)
        return DataSplit(render(params, self.size), torch.as_tensor(params["labels"], dtype=torch.int64))

    def load(self) -> tuple[DataSplit, DataSplit]:
        if self._splits is None:
            self._splits = (self.generate(self.n_train, 0), self.generate(self.n_test, 1))
        return self._splits
