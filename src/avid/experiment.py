"""``avid experiment coinrun``: the paper's Coinrun comparison (section 4, Tables 1 and 3; sweeps of
section 9.5) as one command, from one YAML file (``configs/experiments/coinrun-*.yaml``).

1. data (``avid.splits``): the Coinrun training set, a validation split (levels 5000-5999) and the
   test split (levels 10000-10999) from the Procgen presets, generated once into folders named by
   their size and reused afterwards; the three must not share a folder or a level;
2. training: every method on the same set, with the same number of optimiser steps and the
   parameter-matched sizes of a size preset, once per seed of ``seeds`` (``train.seed`` = the seed):
   seed 0 into ``runs/<experiment>/<method>/``, seed k into ``runs/<experiment>/seed-k/<method>/``;
   a finished run (its ``config.yaml`` step is the target) is skipped, an unfinished one resumes;
3. sweeps (section 9.5): PoE's lambda_p, action CFG's lambda_a and classifier guidance's w, each
   sampled from ONE trained model (the first seed's) with every value of the grid, on the
   validation split; the best value (by FVD when it is a number, else by the first available of
   ``sweep_metrics``) is the one every seed is evaluated at on the test split;
4. evaluation: for each seed, every method and the base model alone on the same test first frames
   and actions, with sampling seed = the seed (``avid.evaluate``); written up by
   ``avid.experiment_report`` into ``reports/<experiment>/``: with several seeds, mean ± 95%
   confidence interval over seeds and Welch's test against AVID (``avid.metrics.stats``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from avid.blackbox import is_url
from avid.budget import budget_record, sized_run_config, timed_train, trained_step
from avid.checkpoint import load_config
from avid.config import RunConfig, load_sections
from avid.data import Batch
from avid.evaluate import EvalResult, evaluate, load_eval_batch
from avid.experiment_report import (DOMAINS, ReportInfo, base_parameters, combine_seeds, metric_functions, sweep_key,
                                    write_report)
from avid.methods import REGISTRY, Method, build_method
from avid.methods.sizes import SizePreset, load_size_preset
from avid.methods.sweeps import PAPER_SWEEPS, set_sampling_options
from avid.metrics.tables import METRICS
from avid.splits import ExperimentData, Split, check_disjoint, held_out_set, training_set
from avid.train import build_context, load_method

log = logging.getLogger("avid")

DEFAULT_METHODS = ("avid", "avid-no-mask", "avid-no-cond", "scratch", "poe", "action-cfg",
                   "classifier-guidance", "controlnet-small", "controlnet", "finetune")


@dataclass
class ExperimentMetrics:
    perceptual: bool = True  # LPIPS, FID, FVD with the standard networks when their weights are on disk
    weights_dir: str | None = None  # default: $AVID_WEIGHTS_DIR, else weights/
    classifier: str | None = "assets/action-classifier-coinrun"  # Action Error Ratio (section 9.3)
    device: str = "auto"  # for the metric networks: auto = cuda when available
    batch_size: int = 32


@dataclass
class ExperimentConfig:
    name: str = "coinrun-cpu"
    domain: str = "coinrun"  # or "robot": names the comparison in the report (paper Table 1 or Table 2)
    runs: str = "runs"  # runs/<name>/<method>/ (seed 0), runs/<name>/seed-<k>/<method>/
    reports: str = "reports"  # reports/<name>/
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: str = "cpu-small"  # configs/sizes/<sizes>.yaml, or a path
    steps: int = 300  # optimiser steps of every method
    minutes_per_method: float | None = None  # also stop a method after this much training wall time
    eval_size: int = 64  # test trajectories of the tables
    sweep_size: int = 16  # validation trajectories the sweep values are chosen on
    seeds: list[int] = field(default_factory=lambda: [0])  # each method trained and sampled once per seed
    sweeps: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {m: {k: list(v) for k, v in g.items()} for m, g in PAPER_SWEEPS.items()})
    sweep_metrics: list[str] = field(default_factory=lambda: ["fvd", "fid", "aer", "lpips", "ssim", "psnr"])
    per_method: dict[str, dict[str, Any]] = field(default_factory=lambda: {"finetune": {"train.lr": 2.0e-5}})
    normalise_reference: list[str] = field(default_factory=lambda: ["avid", "scratch", "controlnet-small",
                                                                    "controlnet"])
    data: ExperimentData = field(default_factory=ExperimentData)
    metrics: ExperimentMetrics = field(default_factory=ExperimentMetrics)
    run: RunConfig = field(default_factory=RunConfig)  # what every method's run starts from

    def run_dir(self, method: str, seed: int = 0) -> Path:
        return seed_folder(Path(self.runs) / self.name, seed) / method

    @property
    def report_dir(self) -> Path:
        return Path(self.reports) / self.name


def seed_folder(root: Path, seed: int) -> Path:
    """Where seed ``seed``'s runs or samples go: ``root`` itself for seed 0 (a single-seed experiment's
    folders), ``root/seed-<k>`` for the others."""
    return root if seed == 0 else root / f"seed-{seed}"


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Defaults, then the YAML file, then ``dotted.key=value`` overrides (values parsed as YAML)."""
    exp = load_sections(ExperimentConfig, path, overrides, "experiment config")
    _check(exp)
    return exp


def _check(exp: ExperimentConfig) -> None:
    if exp.domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {exp.domain!r}")
    unknown = [m for m in exp.methods if m not in REGISTRY or m in ("base", "pretrain")]
    if unknown or not exp.methods:
        trainable = sorted(set(REGISTRY) - {"base", "pretrain"})
        raise ValueError(f"methods must be a non-empty list of {trainable}; got unknown {unknown}")
    if exp.steps < 1 or exp.eval_size < 1 or exp.sweep_size < 1:
        raise ValueError(f"steps, eval_size and sweep_size must be >= 1, got {exp.steps}, {exp.eval_size}, "
                         f"{exp.sweep_size}")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds) or any(
            not isinstance(k, int) or k < 0 for k in exp.seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {exp.seeds}")
    bad = [m for m in exp.sweep_metrics if m not in METRICS]
    if bad:
        raise ValueError(f"sweep_metrics {bad} unknown; choose from {list(METRICS)}")
    for m, grid in exp.sweeps.items():
        if not grid or any(not values for values in grid.values()):
            raise ValueError(f"sweep of {m!r} needs at least one value per option, got {grid}")


# ---- data ---------------------------------------------------------------------------------------

def prepare_data(exp: ExperimentConfig) -> tuple[Split, Split, Split]:
    """The training set, the validation split (sweeps) and the test split (tables), given or generated."""
    splits = (training_set(exp.data), held_out_set(exp.data, "validation", exp.sweep_size),
              held_out_set(exp.data, "test", exp.eval_size))
    check_disjoint(*splits)
    return splits


# ---- training -----------------------------------------------------------------------------------

def check_sizes(exp: ExperimentConfig, preset: SizePreset) -> None:
    """Warn when the size preset was matched against another base network than ``run.base``."""
    if not exp.run.base or is_url(exp.run.base):  # a served black box publishes no network layout
        return
    unet = load_config(exp.run.base).get("unet", {})
    differ = {k: (v, unet.get(k)) for k, v in preset.base_unet.items() if unet.get(k) != v}
    if differ:
        log.warning("size preset %s was matched against another base network than %s (preset vs base: %s); "
                    "ControlNet-Small's projections and the parameter matching may not hold",
                    preset.name, exp.run.base, differ)


def method_run_config(exp: ExperimentConfig, method: str, preset: SizePreset, train_dir: Path,
                      max_minutes: float | None = None, seed: int = 0) -> RunConfig:
    """The run of ``method`` at ``seed``: the experiment's ``run`` template, this method at the preset's
    size, the common step budget, then the method's own ``per_method`` settings (finetune: lr 2e-5)."""
    return sized_run_config(exp.run, method, preset, train_dir, exp.run_dir(method, seed),
                            f"{exp.name}-{method}" + (f"-seed{seed}" if seed else ""), exp.per_method.get(method),
                            max_steps=exp.steps, max_minutes=max_minutes, seed=seed)


def _check_seed(folder: Path, seed: int) -> None:
    recorded = folder / "run.yaml"
    if recorded.exists():
        was = (yaml.safe_load(recorded.read_text()).get("train") or {}).get("seed", 0)
        if was != seed:
            raise ValueError(f"{folder} holds a run trained with seed {was}, not {seed}; move it away or "
                             "choose another experiment name")


def train_all(exp: ExperimentConfig, preset: SizePreset, train_dir: Path, seed: int = 0) -> None:
    """Train every method at ``seed`` to ``exp.steps`` (or until its ``minutes_per_method`` are spent);
    finished runs are skipped, unfinished ones resume from their last checkpoint."""
    for method in exp.methods:
        folder = exp.run_dir(method, seed)
        _check_seed(folder, seed)
        step, record = trained_step(folder), budget_record(folder)
        minutes_left = None
        if exp.minutes_per_method is not None:
            minutes_left = exp.minutes_per_method - record["train_seconds"] / 60
        if step is not None and step > exp.steps:
            raise ValueError(f"{folder} is trained to step {step}, beyond steps={exp.steps}: every method must "
                             "have the same budget (raise --steps or choose another experiment name)")
        if step == exp.steps or (minutes_left is not None and minutes_left <= 0):
            log.info("%s: finished (step %s), skipped", method, step)
            continue
        log.info("%s (seed %d): training to step %d%s", method, seed, exp.steps, f" (from step {step})" if step else "")
        timed_train(method_run_config(exp, method, preset, train_dir, minutes_left, seed))


# ---- sweeps and evaluation ----------------------------------------------------------------------

def sweep_values(grid: dict[str, list[float]]) -> list[dict[str, float]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def choose(results: dict[str, dict[str, Any]], order: list[str]) -> tuple[str, str | None]:
    """The best entry by the first metric of ``order`` that every entry has as a finite number."""
    for metric in order:
        vals = {k: r.get(metric) for k, r in results.items()}
        if all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in vals.values()):
            pick = min if not METRICS[metric][1] else max
            return pick(vals, key=vals.get), metric
    return next(iter(results)), None


@dataclass
class SweepResult:
    method: str
    values: list[dict[str, float]]  # the grid, in order
    metrics: dict[str, dict[str, Any]]  # sweep key -> metrics
    params: int | None
    chosen: dict[str, float]
    criterion: str | None  # the metric the choice was made by (None: no metric was a number)


def sample_config(exp: ExperimentConfig, seed: int):
    """The experiment's sampler settings with sampling seed ``seed``."""
    return dataclasses.replace(exp.run.sample, seed=seed)


def run_sweeps(exp: ExperimentConfig, loaded: dict[str, tuple[Method, dict]], batch: Batch, val: Split,
               extra_metrics: list, seed: int = 0) -> dict[str, SweepResult]:
    """Each swept method: one trained model (seed ``seed``'s), sampled at every value of its grid on
    the validation split ``batch`` (section 9.5)."""
    out = {}
    for method, grid in exp.sweeps.items():
        if method not in loaded:
            continue
        trained, _ = loaded[method]
        values = sweep_values(grid)
        variants = {sweep_key(method, v): set_sampling_options(copy.deepcopy(trained), **v) for v in values}
        note = (f"One trained {method} model (seed {seed}) sampled at each value, sampling seed {seed}; "
                f"{val.describe(len(batch))}.")
        res = evaluate(variants, batch, sample_config(exp, seed), exp.report_dir / "sweeps" / method, extra_metrics,
                       title=f"Sweep of {method}", note=note)
        best, criterion = choose({k: res.metrics[k] for k in variants}, exp.sweep_metrics)
        out[method] = SweepResult(method, values, res.metrics, res.rows[0].params,
                                  values[list(variants).index(best)], criterion)
        log.info("%s: chose %s by %s", method, best, criterion or "no metric (none was a number)")
    return out


def evaluate_all(exp: ExperimentConfig, loaded: dict[str, tuple[Method, dict]], base: Method, batch: Batch,
                 sweeps: dict[str, SweepResult], extra_metrics: list, test: Split,
                 seed: int = 0) -> tuple[EvalResult, dict[str, str]]:
    """Every method (swept ones at their chosen strengths) and the base model alone, same inputs, on
    the test split, sampled with seed ``seed``."""
    keys = {"base": "base"}
    methods: dict[str, Method] = {"base": base}
    for name, (method, _) in loaded.items():
        chosen = sweeps[name].chosen if name in sweeps else {}
        keys[name] = sweep_key(name, chosen)
        methods[keys[name]] = set_sampling_options(method, **chosen)
    s = sample_config(exp, seed)
    note = (f"{test.describe(len(batch))}; methods trained with seed {seed}; every method sees the same first "
            f"frames, actions and noise (sampler {s.sampler}{f', {s.steps} steps' if s.sampler == 'ddim' else ''}, "
            f"seed {s.seed}).")
    res = evaluate(methods, batch, s, seed_folder(exp.report_dir, seed) / "eval", extra_metrics,
                   title=f"{exp.name}: every method on the test split (seed {seed})", note=note)
    return res, keys


def budget(exp: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """What each method got: steps trained (the first seed's), learning rate, training wall time of
    each seed (all segments)."""
    out = {}
    for method in exp.methods:
        mc = load_config(exp.run_dir(method, exp.seeds[0]))
        out[method] = {"step": mc["step"], "lr": mc["run"]["train"]["lr"],
                       "train_seconds": [budget_record(exp.run_dir(method, k))["train_seconds"] for k in exp.seeds]}
    return out


def run_experiment(exp: ExperimentConfig, command: str = "") -> Path:
    """The whole comparison; returns the report folder. Rerunning skips what is done."""
    t0 = time.time()
    if exp.run.train.threads:
        torch.set_num_threads(exp.run.train.threads)
    preset = load_size_preset(exp.sizes)
    check_sizes(exp, preset)
    train, val, test = prepare_data(exp)
    for seed in exp.seeds:
        train_all(exp, preset, train.folder, seed)
    d = exp.run.data
    base = build_method("base", build_context(exp.run, test.meta))
    extra = metric_functions(exp.metrics)
    first = exp.seeds[0]
    loaded = {m: load_method(exp.run_dir(m, first)) for m in exp.methods}
    val_batch = load_eval_batch(val.folder, d.frames, d.cond_frames, limit=exp.sweep_size)
    sweeps = run_sweeps(exp, loaded, val_batch, val, extra, first)
    batch = load_eval_batch(test.folder, d.frames, d.cond_frames, limit=exp.eval_size)
    per_seed = {}
    for seed in exp.seeds:
        if seed != first:
            loaded = {m: load_method(exp.run_dir(m, seed)) for m in exp.methods}
        per_seed[seed], keys = evaluate_all(exp, loaded, base, batch, sweeps, extra, test, seed)
    res = combine_seeds(per_seed, keys.get("avid"))
    splits = {s.role: s.describe(n) for s, n in ((train, None), (val, len(val_batch)), (test, len(batch)))}
    info = ReportInfo(len(batch), train.folder, test.folder, preset.name, base_parameters(exp.run.base),
                      budget(exp), command, time.time() - t0, splits, list(exp.seeds))
    folder = write_report(exp, res, keys, sweeps, info)
    print((folder / "table1.md").read_text())
    print(f"experiment {exp.name} finished in {(time.time() - t0) / 60:.1f} min; report in {folder.resolve()}")
    return folder
