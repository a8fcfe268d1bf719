"""``avid experiment coinrun``: the paper's Coinrun comparison (section 4, Tables 1 and 3; sweeps of
section 9.5) as one command, from one YAML file (``configs/experiments/coinrun-*.yaml``).

1. data: the Coinrun training set and the held-out evaluation set from the Procgen presets,
   generated once into folders named by their size and reused afterwards;
2. training: every method on the same set, with the same number of optimiser steps and the
   parameter-matched sizes of a size preset, each into ``runs/<experiment>/<method>/``; a finished
   run (its ``config.yaml`` step is the target) is skipped, an unfinished one resumes;
3. sweeps (section 9.5): PoE's lambda_p, action CFG's lambda_a and classifier guidance's w, each
   sampled from ONE trained model with every value of the grid, on a subset of the evaluation set;
   the best value (by FVD when it is a number, else by the first available of ``sweep_metrics``)
   is the one evaluated on the full set;
4. evaluation: every method and the base model alone on the same first frames, actions and noise
   (``avid.evaluate``), written up by ``avid.experiment_report`` into ``reports/<experiment>/``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from avid.blackbox import is_url
from avid.checkpoint import load_config, resolve
from avid.config import RunConfig, apply_overrides, build_section, read_mapping, run_config_from_dict, set_dotted
from avid.data import Batch, EpisodeStore
from avid.data.procgen import PRESETS, generate
from avid.data.storage import atomic_write_text
from avid.evaluate import EvalResult, evaluate, load_eval_batch
from avid.experiment_report import ReportInfo, base_parameters, metric_functions, sweep_key, write_report
from avid.methods import REGISTRY, Method, build_method
from avid.methods.sizes import SizePreset, load_size_preset
from avid.methods.sweeps import PAPER_SWEEPS, set_sampling_options
from avid.metrics.tables import METRICS
from avid.train import build_context, load_method, train

log = logging.getLogger("avid")

DEFAULT_METHODS = ("avid", "avid-no-mask", "avid-no-cond", "scratch", "poe", "action-cfg",
                   "classifier-guidance", "controlnet-small", "controlnet", "finetune")
SIZED_AS = {"avid-no-mask": "avid", "avid-no-cond": "avid"}  # the ablations keep AVID's network
UNSIZED = ("controlnet", "finetune")  # copies of the base network: the base's size by construction


@dataclass
class ExperimentData:
    root: str = "data/coinrun"  # generated sets: <root>/train-<levels>x<steps>, <root>/eval-<n>
    train: str | None = None  # an existing training set instead (nothing generated)
    eval: str | None = None  # an existing held-out set instead (its first eval_size trajectories)
    train_preset: str = "coinrun100k"
    levels: int | None = None  # None: the preset's number of levels ...
    steps_per_level: int | None = None  # ... and steps per level
    eval_preset: str = "coinrun-eval"  # levels 10000-11000, random actions (section 9.1)


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
    runs: str = "runs"  # runs/<name>/<method>/
    reports: str = "reports"  # reports/<name>/
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    sizes: str = "cpu-small"  # configs/sizes/<sizes>.yaml, or a path
    steps: int = 300  # optimiser steps of every method
    minutes_per_method: float | None = None  # also stop a method after this much training wall time
    eval_size: int = 64  # held-out trajectories of the tables
    sweep_size: int = 16  # the first trajectories of those used by the sweeps
    sweeps: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {m: {k: list(v) for k, v in g.items()} for m, g in PAPER_SWEEPS.items()})
    sweep_metrics: list[str] = field(default_factory=lambda: ["fvd", "fid", "aer", "lpips", "ssim", "psnr"])
    per_method: dict[str, dict[str, Any]] = field(default_factory=lambda: {"finetune": {"train.lr": 2.0e-5}})
    normalise_reference: list[str] = field(default_factory=lambda: ["avid", "scratch", "controlnet-small",
                                                                    "controlnet"])
    data: ExperimentData = field(default_factory=ExperimentData)
    metrics: ExperimentMetrics = field(default_factory=ExperimentMetrics)
    run: RunConfig = field(default_factory=RunConfig)  # what every method's run starts from

    def run_dir(self, method: str) -> Path:
        return Path(self.runs) / self.name / method

    @property
    def report_dir(self) -> Path:
        return Path(self.reports) / self.name


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Defaults, then the YAML file, then ``dotted.key=value`` overrides (values parsed as YAML)."""
    d = asdict(ExperimentConfig())
    if path is not None:
        _merge(d, read_mapping(path, "experiment config"))
    apply_overrides(d, overrides)
    d["data"] = build_section(ExperimentData, d["data"] or {}, "data")
    d["metrics"] = build_section(ExperimentMetrics, d["metrics"] or {}, "metrics")
    d["run"] = run_config_from_dict(d["run"] or {})
    exp = build_section(ExperimentConfig, d, "experiment")
    _check(exp)
    return exp


def _check(exp: ExperimentConfig) -> None:
    unknown = [m for m in exp.methods if m not in REGISTRY or m in ("base", "pretrain")]
    if unknown or not exp.methods:
        trainable = sorted(set(REGISTRY) - {"base", "pretrain"})
        raise ValueError(f"methods must be a non-empty list of {trainable}; got unknown {unknown}")
    if exp.steps < 1 or exp.eval_size < 1 or exp.sweep_size < 1:
        raise ValueError(f"steps, eval_size and sweep_size must be >= 1, got {exp.steps}, {exp.eval_size}, "
                         f"{exp.sweep_size}")
    bad = [m for m in exp.sweep_metrics if m not in METRICS]
    if bad:
        raise ValueError(f"sweep_metrics {bad} unknown; choose from {list(METRICS)}")
    for m, grid in exp.sweeps.items():
        if not grid or any(not values for values in grid.values()):
            raise ValueError(f"sweep of {m!r} needs at least one value per option, got {grid}")


# ---- data ---------------------------------------------------------------------------------------

def prepare_data(exp: ExperimentConfig) -> tuple[Path, Path]:
    """The training and held-out folders: given ones, or generated (resumably) from the presets."""
    d = exp.data
    if d.train:
        train_dir = resolve(d.train)
        EpisodeStore(train_dir)  # a clear error when there is no dataset
    else:
        spec = PRESETS[d.train_preset]
        spec = dataclasses.replace(spec, num_levels=d.levels or spec.num_levels,
                                   steps_per_level=d.steps_per_level or spec.steps_per_level)
        train_dir = Path(d.root) / f"train-{spec.num_levels}x{spec.steps_per_level}"
        generate(spec, str(train_dir))
    if d.eval:
        eval_dir = resolve(d.eval)
        EpisodeStore(eval_dir)
    else:
        eval_dir = Path(d.root) / f"eval-{exp.eval_size}"
        generate(dataclasses.replace(PRESETS[d.eval_preset], trajectories=exp.eval_size), str(eval_dir))
    return train_dir, eval_dir


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


def method_options(preset: SizePreset, method: str) -> dict[str, Any]:
    return {} if method in UNSIZED else preset.options(SIZED_AS.get(method, method))


def _dotted(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _dotted(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def method_run_config(exp: ExperimentConfig, method: str, preset: SizePreset, train_dir: Path,
                      max_minutes: float | None = None) -> RunConfig:
    """The run of ``method``: the experiment's ``run`` template, this method at the preset's size,
    the common step budget, then the method's own ``per_method`` settings (finetune: lr 2e-5)."""
    d = exp.run.to_dict()
    d.update(name=f"{exp.name}-{method}", out=str(exp.run_dir(method)))
    d["data"]["train"] = str(train_dir)
    d["method"] = {"name": method, "options": method_options(preset, method)}
    d["train"].update(max_steps=exp.steps, max_minutes=max_minutes)
    for key, value in _dotted(exp.per_method.get(method, {})):
        set_dotted(d, key, value)
    return run_config_from_dict(d)


def trained_step(folder: Path) -> int | None:
    """The step of the exported model in ``folder`` (None: nothing exported yet)."""
    return int(load_config(folder)["step"]) if (folder / "config.yaml").exists() else None


def budget_record(folder: Path) -> dict[str, Any]:
    path = folder / "experiment.json"
    return json.loads(path.read_text()) if path.exists() else {"train_seconds": 0.0, "segments": 0}


def train_all(exp: ExperimentConfig, preset: SizePreset, train_dir: Path) -> None:
    """Train every method to ``exp.steps`` (or until its ``minutes_per_method`` are spent);
    finished runs are skipped, unfinished ones resume from their last checkpoint."""
    for method in exp.methods:
        folder = exp.run_dir(method)
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
        log.info("%s: training to step %d%s", method, exp.steps, f" (from step {step})" if step else "")
        t0 = time.time()
        train(method_run_config(exp, method, preset, train_dir, minutes_left))
        record = {"train_seconds": record["train_seconds"] + time.time() - t0, "segments": record["segments"] + 1}
        atomic_write_text(folder / "experiment.json", json.dumps(record, indent=1))


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


def subset(batch: Batch, n: int) -> Batch:
    return Batch(batch.first[:n], batch.x0[:n], batch.actions[:n])


@dataclass
class SweepResult:
    method: str
    values: list[dict[str, float]]  # the grid, in order
    metrics: dict[str, dict[str, Any]]  # sweep key -> metrics
    params: int | None
    chosen: dict[str, float]
    criterion: str | None  # the metric the choice was made by (None: no metric was a number)


def run_sweeps(exp: ExperimentConfig, loaded: dict[str, tuple[Method, dict]], batch: Batch,
               extra_metrics: list) -> dict[str, SweepResult]:
    """Each swept method: one trained model, sampled at every value of its grid (section 9.5)."""
    out = {}
    small = subset(batch, exp.sweep_size)
    for method, grid in exp.sweeps.items():
        if method not in loaded:
            continue
        trained, _ = loaded[method]
        values = sweep_values(grid)
        variants = {sweep_key(method, v): set_sampling_options(copy.deepcopy(trained), **v) for v in values}
        note = (f"One trained {method} model sampled at each value; {len(small)} held-out trajectories "
                f"(the first {exp.sweep_size} of the evaluation set).")
        res = evaluate(variants, small, exp.run.sample, exp.report_dir / "sweeps" / method, extra_metrics,
                       title=f"Sweep of {method}", note=note)
        best, criterion = choose({k: res.metrics[k] for k in variants}, exp.sweep_metrics)
        out[method] = SweepResult(method, values, res.metrics, res.rows[0].params,
                                  values[list(variants).index(best)], criterion)
        log.info("%s: chose %s by %s", method, best, criterion or "no metric (none was a number)")
    return out


def evaluate_all(exp: ExperimentConfig, loaded: dict[str, tuple[Method, dict]], base: Method, batch: Batch,
                 sweeps: dict[str, SweepResult], extra_metrics: list) -> tuple[EvalResult, dict[str, str]]:
    """Every method (swept ones at their chosen strengths) and the base model alone, same inputs."""
    keys = {"base": "base"}
    methods: dict[str, Method] = {"base": base}
    for name, (method, _) in loaded.items():
        chosen = sweeps[name].chosen if name in sweeps else {}
        keys[name] = sweep_key(name, chosen)
        methods[keys[name]] = set_sampling_options(method, **chosen)
    s = exp.run.sample
    note = (f"{len(batch)} held-out trajectories; every method sees the same first frames, actions and noise "
            f"(sampler {s.sampler}{f', {s.steps} steps' if s.sampler == 'ddim' else ''}, seed {s.seed}).")
    res = evaluate(methods, batch, s, exp.report_dir / "eval", extra_metrics,
                   title=f"{exp.name}: every method on the held-out set", note=note)
    return res, keys


def budget(exp: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """What each method got: steps trained, learning rate, training wall time (all segments)."""
    out = {}
    for method in exp.methods:
        mc = load_config(exp.run_dir(method))
        out[method] = {"step": mc["step"], "lr": mc["run"]["train"]["lr"],
                       "train_seconds": budget_record(exp.run_dir(method))["train_seconds"]}
    return out


def run_experiment(exp: ExperimentConfig, command: str = "") -> Path:
    """The whole comparison; returns the report folder. Rerunning skips what is done."""
    t0 = time.time()
    if exp.run.train.threads:
        torch.set_num_threads(exp.run.train.threads)
    preset = load_size_preset(exp.sizes)
    check_sizes(exp, preset)
    train_dir, eval_dir = prepare_data(exp)
    train_all(exp, preset, train_dir)
    loaded = {m: load_method(exp.run_dir(m)) for m in exp.methods}
    base = build_method("base", build_context(exp.run, EpisodeStore(eval_dir).meta))
    batch = load_eval_batch(eval_dir, exp.run.data.frames, exp.run.data.cond_frames, limit=exp.eval_size)
    extra = metric_functions(exp.metrics)
    sweeps = run_sweeps(exp, loaded, batch, extra)
    res, keys = evaluate_all(exp, loaded, base, batch, sweeps, extra)
    info = ReportInfo(len(batch), train_dir, eval_dir, preset.name, base_parameters(exp.run.base), budget(exp),
                      command, time.time() - t0)
    folder = write_report(exp, res, keys, sweeps, info)
    print((folder / "table1.md").read_text())
    print(f"experiment {exp.name} finished in {(time.time() - t0) / 60:.1f} min; report in {folder.resolve()}")
    return folder
