"""Normalised scores (paper section 9.4, eqs. 7-8): each metric mapped to [0, 1] between the worst
and the best of the methods compared (1 = best), then averaged over the metrics.

    higher is better:  (v - min) / (max - min)          # eq. 7
    lower is better:   1 - (v - min) / (max - min)      # eq. 8

The average uses only the metrics that every method has as a finite number (a metric reported as
``"n/a (...)"`` for one method is left out for all, so the scores stay comparable) and whose
values are not all equal; ``metrics`` and ``skipped`` say which went in and why others did not.
The paper fixes the range over a reference set of runs (its Tables 10 and 11, reproduced in
``PAPER_BOUNDS``); pass ``bounds`` to do the same — values outside the range then fall outside
[0, 1], as eqs. 7-8 give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avid.metrics.tables import METRICS

# metric -> (min, max) used by the paper (Tables 10 and 11)
PAPER_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "rt1": {"aer": (1.384, 2.640), "fvd": (24.9, 80.4), "fid": (3.375, 5.329), "ssim": (0.767, 0.842),
            "lpips": (0.142, 0.226), "psnr": (22.9, 25.3)},
    "coinrun": {"aer": (1.154, 1.574), "fvd": (14.5, 65.6), "fid": (6.44, 11.82), "ssim": (0.487, 0.760),
                "lpips": (0.120, 0.365), "psnr": (17.2, 25.7)},
}


@dataclass
class NormalisedScores:
    scores: dict[str, float]  # method -> mean normalised value over ``metrics``
    normalised: dict[str, dict[str, float]]  # method -> metric -> normalised value
    metrics: list[str]  # the metrics averaged
    bounds: dict[str, tuple[float, float]]  # metric -> (min, max) used
    skipped: dict[str, str]  # metric -> why it was left out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def normalised_scores(values: dict[str, dict[str, float | str]], metrics: list[str] | None = None,
                      bounds: dict[str, tuple[float, float]] | None = None,
                      higher_is_better: dict[str, bool] | None = None) -> NormalisedScores:
    """Normalised scores of ``values`` (method -> metric -> value, a number or an "n/a" string).

    metrics: the candidates (default: every metric of ``tables.METRICS`` any method reports);
    bounds: fixed (min, max) per metric instead of the min and max over the methods;
    higher_is_better: directions (default from ``tables.METRICS``).
    """
    directions = {m: up for m, (_, up) in METRICS.items()} | (higher_is_better or {})
    bounds = bounds or {}
    candidates = metrics or [m for m in METRICS if any(m in row for row in values.values())]
    used, skipped, used_bounds = [], {}, {}
    for m in candidates:
        nums = [_number(row.get(m)) for row in values.values()]
        if m not in directions:
            skipped[m] = "direction unknown"
        elif not values or any(v is None for v in nums):
            missing = [name for name, row in values.items() if _number(row.get(m)) is None]
            skipped[m] = f"not a number for {', '.join(missing)}"
        else:
            lo, hi = bounds.get(m, (min(nums), max(nums)))
            if hi <= lo:
                skipped[m] = "all methods equal" if m not in bounds else f"empty range {lo}..{hi}"
            else:
                used.append(m)
                used_bounds[m] = (lo, hi)
    normalised: dict[str, dict[str, float]] = {}
    for name, row in values.items():
        normalised[name] = {}
        for m in used:
            lo, hi = used_bounds[m]
            frac = (float(row[m]) - lo) / (hi - lo)
            normalised[name][m] = frac if directions[m] else 1 - frac  # eq. 7 / eq. 8
    scores = {name: (sum(n.values()) / len(used) if used else math.nan) for name, n in normalised.items()}
    return NormalisedScores(scores, normalised, used, used_bounds, skipped)
