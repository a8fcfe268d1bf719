"""Statistics over repeated runs (seeds): the mean with a Student-t confidence interval, and Welch's
t-test for the difference between two methods' means.

With n values the interval is ``mean ± t_{(1 + level) / 2, n - 1} * s / sqrt(n)`` (s: the sample
standard deviation). Welch's test (Welch 1947) compares two means without assuming equal variances,
with the Welch-Satterthwaite degrees of freedom. The t distribution comes from scipy.stats.

    summary = compare_to_reference({"avid": {"psnr": [17.7, 17.9, 17.6]}, "base": {...}}, "avid")
    summary["base"]["psnr"]            # a MeanCI: prints as "17.47 ± 0.05*" in a table
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of the intervals
ALPHA = 0.05  # a difference from the reference is marked significant when Welch's p < ALPHA
SIGNIFICANT = "*"


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """``(mean, half-width)`` of the Student-t interval; the half-width is nan for a single value or
    when a value is infinite (e.g. an Action Error Ratio whose generated accuracy was 0)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mean_ci needs a non-empty list of numbers, got shape {x.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size == 1 or not np.isfinite(x).all():  # no interval around one value or an infinite one
        with np.errstate(invalid="ignore"):
            return float(x.mean()), math.nan
    half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test for ``mean(a) != mean(b)``; nan when it is undefined
    (fewer than two values in either group, an infinite value, or neither group varies)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()) or (a.var() == 0 and b.var() == 0):
        return math.nan
    res = stats.ttest_ind_from_stats(a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size, equal_var=False)
    return float(res.pvalue)


class MeanCI(float):
    """A mean over seeds, with its interval half-width ``half``, the seeds' ``values`` and Welch's ``p``
    against the reference method (None for the reference itself). It is the mean wherever a number is
    used (tables bold by it, CSV and JSON write it) and prints as ``17.70 ± 0.21*`` in tables, ``*``
    marking p < ALPHA."""

    half: float
    values: tuple[float, ...]
    p: float | None

    def __new__(cls, values: Sequence[float], p: float | None = None, level: float = LEVEL) -> "MeanCI":
        mean, half = mean_ci(values, level)
        obj = super().__new__(cls, mean)
        obj.half, obj.values, obj.p = half, tuple(float(v) for v in values), p
        return obj

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA

    def __format__(self, spec: str) -> str:
        """The mean in ``spec``; the half-width to two significant digits under a ``g`` spec (an
        interval's own precision: 0.746 ± 0.00019, not ± 0.0001896), 0 when it is rounding noise
        (a method without randomness: the same value from every seed)."""
        mean = float.__format__(self, spec)
        half = self.half
        if not spec.endswith("g") or not math.isfinite(half):
            text = float.__format__(half, spec)
        elif half <= 1e-9 * max(1.0, abs(float(self))):
            text = "0"
        else:
            text = f"{half:.{max(0, 1 - math.floor(math.log10(half)))}f}"
        return f"{mean} ± {text}{SIGNIFICANT if self.significant else ''}"


def compare_to_reference(values: dict[str, dict[str, list[float]]], reference: str | None,
                         level: float = LEVEL) -> dict[str, dict[str, MeanCI]]:
    """``{method: {metric: [value per seed]}}`` -> ``{method: {metric: MeanCI}}``, each with Welch's
    p against ``reference``'s values of the same metric (none when there is no reference or it lacks
    that metric)."""
    ref = values.get(reference, {})
    out: dict[str, dict[str, MeanCI]] = {}
    for method, metrics in values.items():
        out[method] = {m: MeanCI(v, None if method == reference or m not in ref else welch_p(v, ref[m]), level)
                       for m, v in metrics.items()}
    return out
