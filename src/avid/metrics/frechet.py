"""Fréchet distance between two feature sets, each summarised by a Gaussian (FID, FVD).

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))      (Heusel et al. 2017)

The trace of the matrix square root is computed from a symmetric eigen-decomposition:
``tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric
PSD matrix ``S_1^(1/2) S_2 S_1^(1/2)`` (similar to ``S_1 S_2``). This equals pytorch-fid's
``scipy.linalg.sqrtm(S_1 @ S_2)`` trace but never yields the complex parts that sqrtm produces on
near-singular covariances (pytorch-fid drops imaginary parts below 1e-3 and raises above; it adds
1e-6 to the diagonals when the product is singular): here eigenvalues at round-off level (below
``D * eps * largest``, negative ones included) are set to zero. All in float64, covariance with the
unbiased (N - 1) normalisation, as ``numpy.cov``.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def _as_features(x: Array, name: str) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected features (N, D) with N >= 2, got {x.shape}")
    return x


def gaussian_stats(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of features ``(N, D)``."""
    x = _as_features(features, "features")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _clean(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: below ``D * eps * max`` (numpy's rank
    tolerance) they are set to 0, so a singular covariance (N <= D) adds no sqrt(round-off) terms."""
    return np.where(w > w.shape[0] * np.finfo(np.float64).eps * max(w.max(), 0.0), w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_clean(w))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); means ``(D,)``, covariances ``(D, D)``."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shapes do not agree: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    lam = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(_clean(lam)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance(features1: Array, features2: Array) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets ``(N1, D)`` and ``(N2, D)``.

    With fewer samples than dimensions the covariances have low rank and the same value comes
    exactly and cheaper from the centred features ``A_i``: ``S_i = A_i^T A_i / (N_i - 1)``, and the
    non-zero eigenvalues of ``S_1 S_2`` are those of ``B B^T`` with ``B = A_1 A_2^T / sqrt((N_1 - 1)(N_2 - 1))``,
    so ``tr((S_1 S_2)^(1/2))`` is the sum of the singular values of ``B`` (an N1 x N2 matrix).
    """
    a, b = _as_features(features1, "features1"), _as_features(features2, "features2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape} vs {b.shape}")
    if min(a.shape[0], b.shape[0]) >= a.shape[1]:
        return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = a.shape[0] - 1, b.shape[0] - 1
    tr_covmean = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + (ca * ca).sum() / na + (cb * cb).sum() / nb - 2 * tr_covmean)
