"""``avid experiment coinrun``: the paper's Coinrun comparison (section 4, Tables 1 and 3; sweeps of
section 9.5) as one command, from one YAML file (``configs/experiments/coinrun-*.yaml``).

1. data (``avid.pipelines.splits``): the Coinrun training set, a validation split (levels 5000-5999) and the
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
   and actions, with sampling seed = the seed (``avid.pipelines.evaluate``); written up by
   ``avid.pipelines.experiment_report`` into ``reports/<experiment>/``: with several seeds, mean ± 95%
   confidence interval over seeds and Welch's test against AVID (``avid.metrics.stats``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from avid.blackbox import is_url
from avid.pipelines.budget import budget_record, sized_run_config, timed_train, trained_step
from avid.checkpoint import load_config
from avid.config import RunConfig
from avid.data import Batch
from avid.pipelines.evaluate import EvalResult, evaluate, load_eval_batch
from avid.pipelines.experiment_config import ExperimentConfig, SweepResult, seed_folder
from avid.pipelines.experiment_report import (ReportInfo, base_parameters, combine_seeds, metric_functions, sweep_key,
                                              write_report)
from avid.methods import Method, build_method
from avid.methods.sizes import SizePreset, load_size_preset
from avid.methods.sweeps import set_sampling_options
from avid.metrics.tables import METRICS
from avid.pipelines.splits import Split, check_disjoint, held_out_set, training_set
from avid.train import build_context, load_method

log = logging.getLogger("avid")

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
    size, the common step budget, then the method's own ``per_method`` settings (e.g. its learning rate)."""
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
                             "have the same budget (raise --train-steps or choose another experiment name)")
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
    keys: dict[str, str] = {}
    methods: dict[str, Method] = {}
    for name, method in {"base": base, **{n: m for n, (m, _) in loaded.items()}}.items():
        chosen = sweeps[name].chosen if name in sweeps else {}
        keys[name] = sweep_key(name, chosen)
        methods[keys[name]] = set_sampling_options(method, **chosen)
    s = sample_config(exp, seed)
    note = (f"{test.describe(len(batch))}; methods trained with seed {seed}; every method sees the same first "
            f"frames, actions and noise (sampler {s.describe()}, seed {s.seed}).")
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
