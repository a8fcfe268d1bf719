"""The write-up of ``avid experiment``: the metrics it adds to ``evaluate`` (Action Error Ratio,
LPIPS/FID/FVD) and ``reports/<experiment>/``:

- ``table1.md/.csv``: methods x metrics in the paper's Table 1 layout (bold within 2% of the best,
  trainable parameters in brackets, † for methods that need the base model's parameters);
- ``table3-ablations.md/.csv``: AVID, no mask, no conditioning (Table 3);
- ``sweeps.md/.csv/.json``: every value of the section 9.5 sweeps and the one chosen;
- ``normalised.md/.csv``: normalised scores (section 9.4, eqs. 7-8);
- ``seeds.csv`` (several seeds): every metric of every method per seed, its mean, 95% interval and
  Welch's p against AVID (``avid.metrics.stats``);
- ``README.md``: the budget, the sampler, the splits (levels) and which metrics were available.

Every table says which split its numbers come from: the sweeps the validation split, the others the
test split, with their level ranges.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from avid.checkpoint import WEIGHTS, resolve
from avid.data.storage import atomic_write_text
from avid.pipelines.experiment_config import DOMAINS, ExperimentConfig, ExperimentMetrics, SweepResult
from avid.pipelines.evaluate import BASELINES, COPY_LAST, EvalResult, MetricFn, action_error_ratio, perceptual
from avid.methods import TABLE1, TABLE3, method_class
from avid.metrics.normalise import normalised_scores
from avid.metrics.stats import ALPHA, LEVEL, SIGNIFICANT, MeanCI, compare_to_reference
from avid.metrics.tables import METRICS, Row, markdown, to_csv
from avid.pipelines.report import report_file_names, write_table

NAMES = {"aer": "Action Error Ratio", "fvd": "FVD", "fid": "FID", "ssim": "SSIM", "lpips": "LPIPS", "psnr": "PSNR"}


# ---- metrics added to evaluate() ----------------------------------------------------------------

def metric_functions(cfg: ExperimentMetrics) -> list[MetricFn]:
    """The Action Error Ratio, and LPIPS/FID/FVD (``avid.pipelines.evaluate.perceptual``) when ``cfg.perceptual``."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    fns = [action_error_ratio(cfg.classifier, device, cfg.batch_size)]
    return fns + [perceptual(cfg.weights_dir)] if cfg.perceptual else fns


def base_parameters(path: str | None) -> int | None:
    """Parameters of the base model (shown in brackets in its row, as the paper's "(97M)")."""
    file = resolve(path) / WEIGHTS if path else None
    if file is None or not file.exists():
        return None
    with safe_open(str(file), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


# ---- tables -------------------------------------------------------------------------------------

@dataclass
class ReportInfo:
    batch_size: int  # evaluation trajectories
    train_dir: Path
    eval_dir: Path
    preset: str
    base_params: int | None
    budget: dict[str, dict[str, Any]]  # method -> {"step", "lr", "train_seconds": [one per seed]}
    command: str = ""
    seconds: float = 0.0
    splits: dict[str, str] = field(default_factory=dict)  # role -> what it is (``Split.describe``)
    seeds: list[int] = field(default_factory=lambda: [0])


# ---- several seeds ------------------------------------------------------------------------------

def combine_seeds(per_seed: dict[int, EvalResult], reference: str | None) -> EvalResult:
    """One result from the evaluations of every seed: each metric that is a number for every seed
    becomes a ``MeanCI`` (mean, 95% Student-t interval over seeds, Welch's p against ``reference``);
    everything else is the first seed's (sampling seconds: summed). One seed: that seed's result."""
    results = list(per_seed.values())
    first = results[0]
    if len(results) == 1:
        return first
    values = {name: {m: [r.metrics[name][m] for r in results] for m in METRICS
                     if all(isinstance(r.metrics[name].get(m), float | int) for r in results)}
              for name in first.metrics}
    summary = compare_to_reference(values, reference)
    metrics = {}
    for name, m in first.metrics.items():
        # a per-evaluation interval of a metric (``<metric>_ci``) gives way to the interval over seeds
        metrics[name] = {**{k: v for k, v in m.items() if k.removesuffix("_ci") not in summary[name]}, **summary[name]}
        if "sample_seconds" in m:
            metrics[name]["sample_seconds"] = sum(r.metrics[name]["sample_seconds"] for r in results)
    return EvalResult(metrics, first.rows, first.rollouts)


def baselines_of(res: EvalResult) -> tuple[str, ...]:
    """The trivial rows this result has (copy-last; through the codec only for a latent base)."""
    return tuple(n for n in BASELINES if n in res.metrics)


def seed_note(seeds: list[int], reference: str | None, baselines: tuple[str, ...] = (COPY_LAST,)) -> str:
    if len(seeds) < 2:
        return f"One seed ({seeds[0]})."
    note = (f"Mean ± {LEVEL:.0%} confidence interval over seeds {', '.join(map(str, seeds))} (Student t, "
            f"n - 1 = {len(seeds) - 1} degrees of freedom): each seed trains every method (train.seed = seed) and samples "
            "with that seed, on the same test trajectories.")
    if reference:
        note += (f" {SIGNIFICANT}: differs from {reference} by Welch's t-test (two-sided, p < {ALPHA:g}); with "
                 f"{len(seeds)} seeds only large differences can show.")
    return note + f" {' and '.join(baselines)}: the same for every seed (no randomness)."


def seeds_csv(res: EvalResult, seeds: list[int]) -> str:
    """Long format: one line per method and metric, the value of every seed, mean, interval, p."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "metric", *(f"seed_{k}" for k in seeds), "mean", f"ci{LEVEL * 100:.0f}_half_width",
                "welch_p_vs_avid", "significant"])
    for name, metrics in res.metrics.items():
        for m, v in metrics.items():
            if isinstance(v, MeanCI):
                w.writerow([name, m, *v.values, float(v), v.half, "" if v.p is None else v.p, int(v.significant)])
    return buf.getvalue()


def available(metrics: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Metrics that are a number (inf included) for some method, and why each other one is missing."""
    shown, missing = [], {}
    for m in METRICS:
        vals = [r[m] for r in metrics.values() if m in r]
        if any(isinstance(v, float | int) for v in vals):
            shown.append(m)
        else:
            missing[m] = next((v for v in vals if isinstance(v, str)), "not computed")
    return shown, missing


def _row(name: str, metrics: dict[str, Any], shown: list[str], params: int | None, needs: bool, **extra) -> Row:
    cells = {m: "n/a" if isinstance(metrics.get(m), str) else metrics.get(m, "–") for m in shown}
    intervals = {f"{m}_ci": metrics[f"{m}_ci"] for m in shown if f"{m}_ci" in metrics}  # shown beside the value
    return Row(name, {**cells, **intervals, **extra}, params, needs)


def result_rows(res: EvalResult, keys: dict[str, str], names: tuple[str, ...], shown: list[str],
                base_params: int | None) -> list[Row]:
    by_key = {r.method: r for r in res.rows}
    rows = []
    for name in (n for n in names if n in keys):
        r = by_key[keys[name]]
        params = r.params if method_class(name).trains else base_params  # the base model alone: its size
        rows.append(_row(name, res.metrics[keys[name]], shown, params, r.needs_parameters))
    for name in baselines_of(res):  # copy-last (and, for a latent base, it through the codec) closes every table
        rows.append(_row(name, res.metrics[name], shown, None, False))
    return rows


def normalised_table(rows: list[Row], reference: list[str]) -> tuple[list[Row], str]:
    """Section 9.4: each metric mapped to [0, 1] between the worst and best of the reference methods
    (the paper's: AVID, action-conditioned diffusion, ControlNet(-Small)), averaged (1 = best)."""
    values = {r.method: r.values for r in rows}
    ref = {m: values[m] for m in reference if m in values}
    bounds, metrics, how = None, None, "the worst and best methods of Table 1"
    if len(ref) >= 2:
        fit = normalised_scores(ref)
        if fit.metrics:
            bounds, metrics = fit.bounds, fit.metrics
            how = f"the worst and best of {', '.join(ref)} (as the paper, section 9.4; others may fall outside [0, 1])"
    res = normalised_scores(values, metrics=metrics, bounds=bounds)
    out = []
    for r in rows:
        values = {"normalised": res.scores[r.method], **{f"norm. {m}": v for m, v in res.normalised[r.method].items()}}
        out.append(Row(r.method, values, r.params, r.needs_parameters))
    skipped = "; ".join(f"{m}: {why}" for m, why in res.skipped.items())
    note = (f"0 = worst, 1 = best, between {how}; mean over {', '.join(res.metrics) or 'no metric'}."
            + (f" Left out: {skipped}." if skipped else ""))
    return out, note


def sweep_key(method: str, values: dict[str, float]) -> str:
    """The name of a method at given sampling strengths, e.g. ``poe[lambda_p=0.4]``. It names the
    sample cache too, so samples made at one strength are never reused for another."""
    return f"{method}[{_strengths(values)}]" if values else method


def _strengths(values: dict[str, float]) -> str:
    return ",".join(f"{k}={float(v):g}" for k, v in values.items())


def sweep_tables(sweeps: dict[str, SweepResult], shown: list[str]) -> tuple[str, list[Row]]:
    md, all_rows = [], []
    for method, s in sweeps.items():
        rows = [_row(sweep_key(method, v), s.metrics[sweep_key(method, v)], shown, s.params, False,
                     chosen="✓" if v == s.chosen else "") for v in s.values]
        by = f"by {s.criterion.upper()}" if s.criterion else "(no metric was a number: the first value)"
        md.append(markdown(rows, f"{method}: chosen {sweep_key(method, s.chosen)} {by}"))
        all_rows += rows
    return "\n".join(md), all_rows


# ---- the report folder --------------------------------------------------------------------------

def write_report(exp: ExperimentConfig, res: EvalResult, keys: dict[str, str], sweeps: dict[str, SweepResult],
                 info: ReportInfo) -> Path:
    folder = exp.report_dir
    shown, missing = available(res.metrics)
    swept = ", ".join(sweep_key(m, s.chosen) for m, s in sweeps.items())
    steps = {b["step"] for b in info.budget.values()}
    trained = (f"{steps.pop()} optimiser steps per method" if len(steps) == 1 else
               "optimiser steps: " + ", ".join(f"{m} {b['step']}" for m, b in info.budget.items()))
    common = f"{info.splits.get('test', f'{info.batch_size} test trajectories')}; {trained}. " + seed_note(
        info.seeds, keys.get("avid"), baselines_of(res))
    chosen_on = f" (chosen on the {info.splits['validation']})" if "validation" in info.splits else ""
    note1 = common + (f" Sampling strengths from the sweeps{chosen_on}: {swept}." if swept else "")
    table1 = result_rows(res, keys, TABLE1, shown, info.base_params)
    write_table(folder, "table1", table1, f"{exp.name}: {DOMAINS[exp.domain]}", note1)
    if any(n in keys for n in TABLE3[1:]):
        write_table(folder, "table3-ablations", result_rows(res, keys, TABLE3, shown, info.base_params),
                    f"{exp.name}: AVID ablations (paper Table 3 layout)", common)
    norm_rows, norm_note = normalised_table(table1, exp.normalise_reference)
    write_table(folder, "normalised", norm_rows, f"{exp.name}: normalised scores (section 9.4)", norm_note)
    if len(info.seeds) > 1:
        atomic_write_text(folder / "seeds.csv", seeds_csv(res, info.seeds))
    if sweeps:
        md, rows = sweep_tables(sweeps, shown)
        where = info.splits.get("validation", "validation split")
        md = f"Sweep values chosen on the {where}, with the models of seed {info.seeds[0]}.\n\n" + md
        atomic_write_text(folder / "sweeps.md", md)
        atomic_write_text(folder / "sweeps.csv", to_csv(rows))
        atomic_write_text(folder / "sweeps.json", json.dumps(
            {m: {"grid": s.values, "chosen": s.chosen, "criterion": s.criterion, "metrics": s.metrics}
             for m, s in sweeps.items()}, indent=1, default=str))
    atomic_write_text(folder / "README.md", readme(exp, res, keys, sweeps, info, shown, missing))
    return folder


def readme(exp: ExperimentConfig, res: EvalResult, keys: dict[str, str], sweeps: dict[str, SweepResult],
           info: ReportInfo, shown: list[str], missing: dict[str, str]) -> str:
    t, s = exp.run.train, exp.run.sample
    params = {r.method: r.params for r in res.rows}
    lines = [f"# {exp.name}: the paper's {DOMAINS[exp.domain].split(' (')[0]}", "",
             f"Made by `{info.command or f'avid experiment {exp.domain}'}`; this invocation took "
             f"{info.seconds / 60:.1f} min (torch CPU threads: {torch.get_num_threads()}"
             f"{', CUDA available' if torch.cuda.is_available() else ''}). Rerunning it skips finished runs and "
             "reuses sampled videos.", "",
             "## Budget", "",
             f"Every method: **{exp.steps} optimiser steps** at batch size {t.batch_size} on `{info.train_dir}`, "
             f"learning rate as listed (the paper: 1e-4, finetune 2e-5), precision {t.precision}, EMA {t.ema_decay}"
             + (f", at most {exp.minutes_per_method:g} min of training each" if exp.minutes_per_method else "")
             + f". Sizes: preset `{info.preset}` (parameter-matched adapters); controlnet and finetune copy the "
             f"base network. Base model: `{exp.run.base}`.", "",
             f"| method | trainable params | steps trained | lr | training min (seed {' / '.join(map(str, info.seeds))}) "
             "| sampling s (this run, all seeds) |",
             "|---|---|---|---|---|---|"]
    for m in exp.methods:
        b = info.budget.get(m, {})
        p = params.get(keys.get(m, m))
        minutes = " / ".join(f"{x / 60:.1f}" for x in b.get("train_seconds", []))
        lines.append(f"| {m} | {p or '–'} | {b.get('step', '–')} | {b.get('lr', '–')} | "
                     f"{minutes or '–'} | {res.metrics[keys[m]]['sample_seconds']:.0f} |")
    lines += ["", "## Splits", "", "Choices (sweep values) are made on the validation split only; the tables "
              "score the test split.", ""]
    lines += [f"- {what}" for what in info.splits.values()]
    lines += ["", "## Seeds", "", seed_note(info.seeds, keys.get("avid"), baselines_of(res)) + (
        " Sweeps: on the first seed's models only; every seed is evaluated at the chosen values. `seeds.csv`: "
        "every seed's value, the mean, the interval and Welch's p." if len(info.seeds) > 1 else "")]
    lines += ["", "## Sampler and evaluation set", "",
              f"{s.describe()}, sampling seed = the seed, batch {s.batch_size}; every method gets the same first "
              "frames, actions and "
              f"noise. Evaluation: {info.batch_size} test trajectories from `{info.eval_dir}` "
              f"({exp.run.data.cond_frames} conditioning + {exp.run.data.frames - exp.run.data.cond_frames} predicted "
              "frames; metrics over predicted frames). Sweeps: on the validation split (above).",
              "", "## Metrics", "",
              f"Available: {', '.join(NAMES[m] for m in shown)}."]
    lines += [f"- {NAMES[m]}: {why}" for m, why in missing.items()]
    conventions = next((r["conventions"] for r in res.metrics.values() if "conventions" in r), {})
    lines += [f"- {k.upper()} convention: {v}" for k, v in conventions.items()]
    if sweeps:
        lines += ["", "## Sweeps (section 9.5)", "", "| method | grid | chosen | chosen by |", "|---|---|---|---|"]
        for m, sw in sweeps.items():
            grid = "; ".join(_strengths(v) for v in sw.values)
            lines.append(f"| {m} | {grid} | {_strengths(sw.chosen)} | "
                         f"{(sw.criterion or 'none (no metric was a number)').upper()} |")
        lines += ["", f"Chosen by FVD when it is a number, else by the first available of "
                      f"{', '.join(exp.sweep_metrics)} (`sweep_metrics`)."]
    lines += ["", "## Results", "", (exp.report_dir / "table1.md").read_text().strip(), "", "## Files", "",
              "- `table1.md/.csv`, `table3-ablations.md/.csv`, `normalised.md/.csv`, `sweeps.md/.csv/.json`"
              + (", `seeds.csv`" if len(info.seeds) > 1 else ""),
              "- `eval/`: the full evaluation of seed 0 (" + ", ".join(f"`{n}`" for n in report_file_names())
              + "); `seed-<k>/eval/`: seed k's; `sweeps/<method>/`: the same for each sweep (validation split)", ""]
    return "\n".join(lines)
