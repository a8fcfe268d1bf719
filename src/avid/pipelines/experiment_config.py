"""What ``avid experiment coinrun`` / ``robot`` is given (``ExperimentConfig``, one YAML file in
``configs/experiments/``) and what its sweeps choose (``SweepResult``): shared by the experiment
(``avid.pipelines.experiment``) and its write-up (``avid.pipelines.experiment_report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avid import tiny
from avid.config import RunConfig, load
from avid.methods import COMPARED
from avid.methods.sweeps import PAPER_SWEEPS
from avid.metrics.tables import METRICS
from avid.pipelines.splits import ExperimentData

DOMAINS = {"coinrun": "Coinrun comparison (paper Table 1 layout)",
           "robot": "robot-arm comparison (paper Table 2 layout)"}  # the report's title of each domain


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
    methods: list[str] = field(default_factory=lambda: list(COMPARED))
    sizes: str = "cpu-small"  # configs/sizes/<sizes>.yaml, or a path
    steps: int = 300  # optimiser steps of every method
    minutes_per_method: float | None = None  # also stop a method after this much training wall time
    eval_size: int = 64  # test trajectories of the tables
    sweep_size: int = 16  # validation trajectories the sweep values are chosen on
    seeds: list[int] = field(default_factory=lambda: [0])  # each method trained and sampled once per seed
    sweeps: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {m: {k: list(v) for k, v in g.items()} for m, g in PAPER_SWEEPS.items()})
    sweep_metrics: list[str] = field(default_factory=lambda: ["fvd", "fid", "aer", "lpips", "ssim", "psnr"])
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> {dotted key: value}
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


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None,
                    values: dict[str, Any] | None = None) -> ExperimentConfig:
    """Defaults, then the YAML file, then ``--set`` overrides, then flags (``avid.config.load``)."""
    exp = load(ExperimentConfig, path, overrides, values, "experiment config")
    _check(exp)
    exp.seeds = exp.seeds[:tiny.count(len(exp.seeds), tiny.SEEDS)]  # AVID_TINY=1: smoke-test size
    exp.sweeps = {m: {k: v[:tiny.count(len(v), tiny.SWEEP_VALUES)] for k, v in grid.items()}
                  for m, grid in exp.sweeps.items()}  # AVID_TINY=1
    return exp


def _check(exp: ExperimentConfig) -> None:
    if exp.domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {exp.domain!r}")
    unknown = [m for m in exp.methods if m not in COMPARED]
    if unknown or not exp.methods:
        raise ValueError(f"methods must be a non-empty list of {sorted(COMPARED)}; got unknown {unknown}")
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



@dataclass
class SweepResult:
    method: str
    values: list[dict[str, float]]  # the grid, in order
    metrics: dict[str, dict[str, Any]]  # sweep key -> metrics
    params: int | None
    chosen: dict[str, float]
    criterion: str | None  # the metric the choice was made by (None: no metric was a number)
