"""Result tables in the paper's layout: methods x metrics, Markdown and CSV, the best value of each
metric (and any within 2% of it) in bold, trainable parameters in brackets."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from avid.metrics.bootstrap import LEVEL, SAMPLES, format_ci

# metric -> (column title, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "aer": ("Action Err. Ratio ↓", False),
    "fvd": ("FVD ↓", False),
    "fid": ("FID ↓", False),
    "ssim": ("SSIM ↑", True),
    "lpips": ("LPIPS ↓", False),
    "psnr": ("PSNR ↑", True),
}
DERIVED = {"normalised": ("Normalised ↑", True)}  # shown after the metrics, never averaged into itself


@dataclass
class Row:
    method: str
    values: dict[str, float | str]  # a number, or a string such as "n/a (weights not found: ...)"
    params: int | None = None  # trainable parameters
    needs_parameters: bool = False  # requires access to the base model's parameters (paper's shading)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        size = f" ({_fmt_params(self.params)})" if self.params else ""
        mark = " †" if self.needs_parameters else ""
        return f"{self.method}{size}{mark}"


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _fmt(v: float | str) -> str:
    if isinstance(v, str):
        return v.split(" (", 1)[0]  # "n/a (reason)" -> "n/a"; the reasons go under the table
    if math.isinf(v) or math.isnan(v):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"


def best_within(rows: list[Row], metric: str, tol: float = 0.02) -> set[int]:
    """Indices of the rows whose ``metric`` is within ``tol`` (relative) of the best."""
    higher = {**METRICS, **DERIVED}.get(metric, ("", True))[1]
    vals = [(k, r.values[metric]) for k, r in enumerate(rows)
            if isinstance(r.values.get(metric), (int, float)) and math.isfinite(r.values[metric])]
    if not vals:
        return set()
    best = max(v for _, v in vals) if higher else min(v for _, v in vals)
    ok = (lambda v: v >= best - tol * abs(best)) if higher else (lambda v: v <= best + tol * abs(best))
    return {k for k, v in vals if ok(v)}


def _ci_key(metric: str) -> str:
    return f"{metric}_ci"  # a (low, high) interval of ``metric`` (``avid.metrics.bootstrap``), shown beside it


def columns(rows: list[Row]) -> list[str]:
    present = {m for r in rows for m in r.values}
    known = [m for m in (*METRICS, *DERIVED) if m in present]
    intervals = {_ci_key(m) for m in present}
    return known + sorted(present - set(METRICS) - set(DERIVED) - intervals)


def _cell(r: Row, m: str, bold: bool) -> str:
    text = _fmt(r.values.get(m, "–"))
    text = f"**{text}**" if bold else text
    ci = r.values.get(_ci_key(m))
    return f"{text} {format_ci(ci)}" if isinstance(ci, (tuple, list)) and isinstance(r.values.get(m), (int, float)) else text


def markdown(rows: list[Row], title: str = "") -> str:
    cols = columns(rows)
    bold = {m: best_within(rows, m) for m in cols}
    head = "| Method | " + " | ".join({**METRICS, **DERIVED}.get(m, (m, True))[0] for m in cols) + " |"
    lines = [f"### {title}\n" if title else "", head, "|---" * (len(cols) + 1) + "|"]
    for k, r in enumerate(rows):
        cells = [_cell(r, m, k in bold[m]) for m in cols]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    notes = "\nBold: within 2% of the best. Brackets: trainable parameters."
    if any(_ci_key(m) in r.values for r in rows for m in cols):
        notes += (f" [low, high]: {LEVEL:.0%} percentile-bootstrap interval over the evaluation trajectories "
                  f"({SAMPLES} resamples, real and generated paired).")
    reasons = sorted({v for r in rows for v in r.values.values() if isinstance(v, str) and " (" in v})
    notes += "".join(f"\n{v.split(' (', 1)[0]}: {v.split(' (', 1)[1].rstrip(')')}." for v in reasons)
    if any(r.needs_parameters for r in rows):
        notes += " †: requires access to the base model's parameters."
    return "\n".join(line for line in lines if line) + "\n" + notes + "\n"


def to_csv(rows: list[Row]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    cis = [m for m in cols if any(_ci_key(m) in r.values for r in rows)]
    w.writerow(["method", "trainable_params", "needs_parameters", *cols,
                *(f"{m}_ci_{end}" for m in cis for end in ("low", "high"))])
    for r in rows:
        bounds = [b for m in cis for b in (r.values.get(_ci_key(m)) or ("", ""))]
        w.writerow([r.method, r.params or "", int(r.needs_parameters), *(r.values.get(m, "") for m in cols), *bounds])
    return buf.getvalue()
