"""Standard errors of the metrics by bootstrap over the generated samples' features (no new sampling).

Each replicate redraws the samples (within each class for the per-class metrics) with replacement, keeps the
real data fixed, and recomputes the metric; the standard error is the replicates' standard deviation. The
replicates draw from their own seeded generator, never from the training stream.
"""

from __future__ import annotations

import math

import numpy as np

#: replicates per evaluation: the standard error itself is then known to about ±10% (1/sqrt(2·(R-1)))
REPLICATES = 50
SEED = 20240101


def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def se(replicates: np.ndarray) -> float:
    return float(np.std(np.asarray(replicates, dtype=np.float64), ddof=1))


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_replicates(fake: np.ndarray, real_mu: np.ndarray, real_sigma: np.ndarray, gen: np.random.Generator,
                       reps: int = REPLICATES) -> np.ndarray:
    """Fréchet distances of `reps` resamples of `fake` (n×d) against fixed real statistics.

    Tr((S_r S_f)^1/2) = Σ sqrt(eig(A S_f A)) with A = S_r^1/2 (symmetric): one batched eigvalsh, not a sqrtm each."""
    fake = np.asarray(fake, dtype=np.float64)
    real_sigma = np.asarray(real_sigma, dtype=np.float64)
    n, d = fake.shape
    idx = gen.integers(0, n, size=(reps, n))
    x = fake[idx]  # reps×n×d
    mu = x.mean(axis=1)
    xc = (x - mu[:, None, :]) / math.sqrt(max(n - 1, 1))  # S_f = xcᵀ xc
    if n < d:  # the nonzero eigenvalues of A S_f A are those of the n×n matrix xc S_r xcᵀ (A² = S_r)
        eig = np.linalg.eigvalsh(np.matmul(np.matmul(xc, real_sigma), xc.transpose(0, 2, 1)))
    else:
        a = _sqrt_psd(real_sigma)
        cov = np.matmul(xc.transpose(0, 2, 1), xc)  # batched BLAS, not einsum
        eig = np.linalg.eigvalsh(np.matmul(np.matmul(a, cov), a))
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum(axis=1)
    diff = ((mu - real_mu) ** 2).sum(axis=1)
    return diff + (xc ** 2).sum(axis=(1, 2)) + np.trace(real_sigma) - 2.0 * tr_sqrt


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel, (x·y / d + 1)^3, as torch-fidelity computes it (Bińkowski et al. 2018)."""
    from torch_fidelity.metric_kid import kernel_poly

    return kernel_poly(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                       kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)


def real_term(k_rr: np.ndarray) -> float:
    """The real-real part of unbiased MMD²: the mean of the off-diagonal kernel values."""
    m = len(k_rr)
    return float((k_rr.sum() - np.trace(k_rr)) / (m * (m - 1)))


def mmd2_unbiased(k_ff: np.ndarray, k_fr: np.ndarray, rr: float) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) between n fakes and m reals, any n, m >= 2."""
    n = len(k_ff)
    return float((k_ff.sum() - np.trace(k_ff)) / (n * (n - 1)) + rr - 2.0 * k_fr.mean())


def mmd2_replicates(k_ff: np.ndarray, k_fr: np.ndarray, rr: float, gen: np.random.Generator,
                    reps: int = REPLICATES) -> np.ndarray:
    """Unbiased MMD² of `reps` resamples of the fakes (rows of the kernel matrices), the reals fixed."""
    n = len(k_ff)
    out = np.empty(reps)
    for r in range(reps):
        idx = gen.integers(0, n, size=n)
        sub = k_ff[np.ix_(idx, idx)]
        # a sample drawn twice is not its own pair: only the diagonal of the resampled matrix is left out
        out[r] = (sub.sum() - np.trace(sub)) / (n * (n - 1)) + rr - 2.0 * k_fr[idx].mean()
    return out
