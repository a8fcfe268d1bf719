"""Bootstrap confidence intervals for metrics computed over a set of evaluation trajectories.

The percentile bootstrap (Efron & Tibshirani 1993): draw the N trajectories with replacement
``samples`` times, recompute the statistic on each draw, and take the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of the results. Several per-trajectory arrays passed together are
resampled with the *same* indices (paired), as the Action Error Ratio needs: the real and the
generated video of a trajectory share its first frames and actions.

    lo, hi = bootstrap_ci(ratio_of_means, real_correct, generated_correct)   # 95% by default
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

SAMPLES = 2000
LEVEL = 0.95


def bootstrap_ci(stat: Callable[..., float], *values: np.ndarray, samples: int = SAMPLES, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``stat(*values)``; each of ``values`` has the N trajectories
    on its first axis and is resampled with the same indices. Non-finite replicates (a ratio whose
    denominator was drawn as 0) count as +inf, so they widen the upper end rather than vanish."""
    arrays = [np.asarray(v) for v in values]
    n = len(arrays[0]) if arrays else 0
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap needs arrays of one non-zero length, got {[len(a) for a in arrays]}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        reps = np.array([stat(*(a[i] for a in arrays)) for i in idx], dtype=float)
    reps[~np.isfinite(reps)] = np.inf
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")  # no interpolation: inf stays inf
    return float(lo), float(hi)


def ratio_of_means(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """``mean(numerator) / mean(denominator)`` (``inf`` for a zero denominator)."""
    den = float(np.mean(denominator))
    return float(np.mean(numerator)) / den if den > 0 else float("inf")


def format_ci(ci: tuple[float, float]) -> str:
    """``[lo, hi]`` with four significant digits."""
    return "[" + ", ".join("inf" if not np.isfinite(v) else f"{v:.4g}" for v in ci) + "]"
