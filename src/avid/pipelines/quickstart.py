"""``avid quickstart``: the whole path on a laptop CPU, from the shipped base model to a report,
within a wall-time budget (15 minutes by default).

1. generate a small action-labelled Coinrun set and held-out evaluation trajectories;
2. measure, on this machine and at the precision ``auto`` picks, one adapter training step and one
   sampling step of AVID and of the base model, and plan the adapter's optimiser steps so that
   training plus evaluation fit the budget (the learning rate follows a cosine over exactly those
   steps); a machine too slow for a useful run is told so plainly;
3. train an AVID adapter against the shipped base model through the black-box door;
4. sample the held-out trajectories with the base model alone and with AVID (same first frames,
   actions and noise) and write a report: metrics table (with the copy-last-frame row), GIF/MP4 of
   ground truth | base | AVID | mask, the mean mask per diffusion step (paper Fig. 4d) and the mask
   averaged over the diffusion.

``--domain robot`` runs the same steps on the simulated arm's held-out place task against the
shipped latent base model (``avid.pipelines.quickstart_robot``: its data, regressor and defaults).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avid import tiny
from avid.checkpoint import load_config
from avid.config import RunConfig, load_run_config
from avid.data import Batch, EpisodeStore, WindowDataset, collate
from avid.data.procgen import PRESETS, generate
from avid.data.storage import atomic_write_text
from avid.pipelines.bench import train_step
from avid.pipelines.evaluate import action_error_ratio, evaluate, load_eval_batch, perceptual
from avid.methods import build_method
from avid.memory import give_back
from avid.metrics.action_classifier import SHIPPED_CLASSIFIER
from avid.metrics.perceptual import release_loaded
from avid.methods.base import encodes_frames_apart, to_latent
from avid.pipelines import quickstart_robot
from avid.precision import describe_cpu, resolve_precision
from avid.pipelines.report import report_files_markdown
from avid.rollout import Rollout
from avid.train import build_context, load_method, train, with_method_defaults

log = logging.getLogger("avid")
CONFIG = "configs/coinrun/quickstart.yaml"


@dataclass
class QuickstartOptions:
    config: str | None = None  # None: the domain's (CONFIG; robot: quickstart_robot.CONFIG)
    base: str | None = None  # the black-box base model folder (default: the config's, the shipped one)
    budget_minutes: float = 15.0  # the whole run's wall time the step plan aims at
    steps: int | None = None  # adapter optimiser steps (None: planned from the budget, at most the config's)
    min_steps: int = 150  # below this the adapter is not worth training: say so, and train this many anyway
    train_levels: int = 200  # Coinrun levels 0..train_levels-1 ...
    steps_per_level: int = 500  # ... each a stream of this many random-action steps
    eval_size: int | None = None  # held-out trajectories (None: the domain's, 128 levels 10000-11000; robot: 64)
    data_dir: str | None = None  # None: the domain's (data/quickstart)
    runs_dir: str | None = None  # None: the domain's (runs/quickstart; robot: runs/quickstart-robot)
    report_dir: str | None = None  # None: the domain's (reports/quickstart; robot: reports/quickstart-robot)
    threads: int | None = None
    precision: str | None = None  # None: the config's ("auto")
    domain: str = "coinrun"  # or "robot": the simulated arm against the shipped latent base (quickstart_robot)
    train_episodes: int = 48  # robot: place-task episodes of 64 frames to train on

    def __post_init__(self) -> None:
        if self.domain not in DOMAIN_DEFAULTS:
            raise ValueError(f"quickstart domain must be one of {sorted(DOMAIN_DEFAULTS)}, got {self.domain!r}")
        for key, value in DOMAIN_DEFAULTS[self.domain].items():
            if getattr(self, key) is None:
                setattr(self, key, value)


DOMAIN_DEFAULTS = {"coinrun": {"config": CONFIG, "data_dir": "data/quickstart", "runs_dir": "runs/quickstart",
                               "report_dir": "reports/quickstart", "eval_size": 128},
                   "robot": quickstart_robot.DEFAULTS}


@dataclass
class Plan:
    """The measured costs and the step budget they allow."""

    train_step_s: float
    sample_step_s: float  # one denoising step of AVID and of the base model, for one evaluation batch
    metric_s: float  # the metrics (PSNR/SSIM, AER, LPIPS, FVD) of one trajectory of one method
    eval_seconds: float
    train_seconds: float
    steps: int
    too_slow: bool

    def describe(self) -> str:
        return (f"measured: adapter train step {self.train_step_s:.2f} s, sampling step (AVID + base, one batch) "
                f"{self.sample_step_s:.2f} s, metrics {self.metric_s:.2f} s per trajectory and method; evaluation "
                f"~{self.eval_seconds / 60:.1f} min; "
                f"training {self.steps} steps ~{self.steps * self.train_step_s / 60:.1f} min")


def prepare_data(opt: QuickstartOptions) -> tuple[Path, Path]:
    if opt.domain == "robot":
        return quickstart_robot.prepare_data(opt.data_dir, opt.train_episodes, opt.eval_size)
    train_dir, eval_dir = Path(opt.data_dir) / "coinrun", Path(opt.data_dir) / f"coinrun-eval-{opt.eval_size}"
    spec = dataclasses.replace(PRESETS["coinrun100k"], num_levels=opt.train_levels,
                               steps_per_level=opt.steps_per_level)
    generate(spec, str(train_dir))
    generate(dataclasses.replace(PRESETS["coinrun-eval"], trajectories=opt.eval_size), str(eval_dir))
    return train_dir, eval_dir


def _seconds(fn, repeats: int = 2) -> float:
    fn()  # warm-up (allocations, oneDNN kernel choice)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def metric_seconds(batch, metrics: list, n: int = 4) -> float:
    """Seconds the report's metrics take per trajectory of one method, measured on ``n`` windows of
    ``batch`` scored as one generated set (the real side and the networks' loading included, so the
    estimate errs on the long side)."""
    part = Batch(batch.first[:n], batch.x0[:n], batch.actions[:n])
    t = time.perf_counter()
    for fn in metrics:
        fn(part, {"probe": Rollout(part.x0)})
    return (time.perf_counter() - t) / len(part)


def plan_steps(cfg: RunConfig, train_dir: Path, opt: QuickstartOptions, seconds_left: float,
               metrics: list = ()) -> Plan:
    """Measure a training step, a sampling step and the metrics here, at this run's precision, and
    plan the optimiser steps that fit ``seconds_left`` after the evaluation."""
    precision = resolve_precision(cfg.train.precision)
    store = EpisodeStore(train_dir)
    ctx = build_context(cfg, store.meta, precision.name)
    method = build_method(cfg.method.name, ctx, cfg.method.options)
    data = WindowDataset(store, cfg.data.frames, cfg.data.cond_frames, limit=cfg.train.batch_size)  # first shard
    batch = pixel_batch = collate([data[j] for j in range(cfg.train.batch_size)])
    if ctx.codec is not None:  # a latent base model: the adapter trains and samples in its codec's space
        batch = to_latent(ctx.codec, batch)
    base = build_method("base", ctx)
    s = cfg.sample
    bs = min(s.batch_size, opt.eval_size)
    first = batch.first[:1].expand(bs, -1, -1, -1, -1)
    x = torch.randn(bs, *batch.x0.shape[1:])
    i = torch.full((bs,), ctx.diffusion.num_steps - 1)
    actions = batch.actions[:1].expand(bs, *batch.actions.shape[1:])  # (bs, T') discrete, (bs, T', A) continuous

    def sample_step() -> None:
        with torch.no_grad(), precision.autocast():
            method.predict(x, i, first, actions)
            base.predict(x, i, first, actions)

    step, once_s = train_step(method, batch, precision, lr=0.0), 0.0
    if ctx.codec is not None:  # training encodes its frames through the codec (black-box calls)
        encode_s = _seconds(lambda: to_latent(ctx.codec, pixel_batch), 1)
        video = torch.cat([pixel_batch.first, pixel_batch.x0], dim=2)
        if encodes_frames_apart(ctx.codec, video):  # once, every stored frame (avid.data.LatentWindows)
            once_s = encode_s * store.num_frames() / (video.shape[0] * video.shape[2])
        else:  # every batch as it comes
            optimiser_step = step

            def step() -> None:
                to_latent(ctx.codec, pixel_batch)
                optimiser_step()

    train_s, sample_s = _seconds(step), _seconds(sample_step, 1)
    metric_s = metric_seconds(pixel_batch, list(metrics)) if metrics else 0.0
    denoising_steps = s.steps if s.sampler == "ddim" and s.steps else ctx.diffusion.num_steps
    rows = 3 + (ctx.codec is not None)  # base, AVID, copy-last-frame (and through the codec, for a latent base)
    eval_s = math.ceil(opt.eval_size / bs) * denoising_steps * sample_s * 1.1 + rows * opt.eval_size * metric_s + 20
    train_s_left = seconds_left - eval_s - once_s
    affordable = max(0, int(train_s_left / (train_s * 1.05)))  # Lightning's own overhead per step
    steps = min(cfg.train.max_steps, affordable)
    too_slow = steps < opt.min_steps
    return Plan(train_s, sample_s, metric_s, eval_s, train_s_left, max(steps, opt.min_steps), too_slow)


def report_metrics(device: str, classifier: str = SHIPPED_CLASSIFIER) -> list:
    """The report's metric functions (their networks load on first use)."""
    return [action_error_ratio(classifier, device), perceptual()]


def run_evaluation(cfg: RunConfig, run_dir: Path, eval_dir: Path, report: Path, metrics: list,
                   held_out: str | None = None, title: str = "Coinrun") -> dict:
    batch = load_eval_batch(eval_dir, cfg.data.frames, cfg.data.cond_frames)
    avid, _ = load_method(run_dir, cfg.train.precision)
    base = build_method("base", build_context(cfg, EpisodeStore(eval_dir).meta, cfg.train.precision))
    s = dataclasses.replace(cfg.sample, precision=cfg.train.precision)
    held_out = held_out or f"{len(batch)} held-out Coinrun trajectories (levels 10000-11000, random actions)"
    note = (f"{held_out}, {cfg.data.cond_frames} conditioning + {cfg.data.frames - cfg.data.cond_frames} "
            "predicted frames; "
            f"metrics over predicted frames only. Sampler: {s.describe()}, seed {s.seed}. "
            "Base = the shipped pretrained model alone (black box, no actions).")
    res = evaluate({"base": base, "avid": avid}, batch, s, report,
                   extra_metrics=metrics,
                   title=f"Quickstart: base model vs AVID on held-out {title}", note=note)
    print((report / "metrics.md").read_text())
    return res.metrics


def quickstart(opt: QuickstartOptions) -> Path:
    t0 = time.time()
    if opt.threads:
        torch.set_num_threads(opt.threads)
    budget = opt.budget_minutes * 60
    classifier = quickstart_robot.REGRESSOR if opt.domain == "robot" else SHIPPED_CLASSIFIER
    train_dir, eval_dir = prepare_data(opt)
    cfg = load_run_config(opt.config, values={"data.train": str(train_dir), "out": str(Path(opt.runs_dir) / "avid"),
                                              "base": opt.base, "train.precision": opt.precision})
    cfg = tiny.run(cfg)  # AVID_TINY=1: smoke-test size, so the plan below measures at that size too
    opt = dataclasses.replace(opt, eval_size=tiny.count(opt.eval_size, tiny.EVAL_TRAJECTORIES))
    precision = resolve_precision(cfg.train.precision)
    print(f"CPU: {describe_cpu()}\nprecision: {precision.describe()}")
    if opt.steps:
        steps, plan = opt.steps, None
    else:
        plan = plan_steps(cfg, train_dir, opt, budget - (time.time() - t0),
                          report_metrics(cfg.sample.device, classifier))
        steps = plan.steps
        print(plan.describe())
        if plan.too_slow:
            print(f"this machine is too slow for a {opt.budget_minutes:g}-minute quickstart: the budget leaves "
                  f"{max(plan.train_seconds, 0) / 60:.1f} min of training, fewer than the {opt.min_steps} steps the "
                  f"adapter needs; training {opt.min_steps} steps anyway (~{opt.min_steps * plan.train_step_s / 60:.0f} "
                  "min). Use --budget-minutes, --eval-size or --train-steps to choose.")
    release_loaded()  # metric networks not kept through training (training holds the 100k frames): ~0.2 GB less at
    # the run's peak for a few seconds of loading them again for the evaluation
    give_back()  # the plan's freed heap (0.35 GB measured) goes back before training's data comes on top
    cap = round(1.5 * steps * plan.train_step_s / 60 + 1, 2) if plan else None  # a safety net, not the plan
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps, max_minutes=cap))
    run_dir = train(cfg)
    reached = int(load_config(run_dir)["step"])
    if reached < steps:
        print(f"training stopped by its time cap at step {reached} of {steps}; rerun the same command with "
              f"--train-steps {steps} to continue it")
    report = Path(opt.report_dir)
    run_evaluation(cfg, run_dir, eval_dir, report, report_metrics(cfg.sample.device, classifier),
                   *((quickstart_robot.held_out(opt.eval_size), quickstart_robot.TITLE)
                     if opt.domain == "robot" else ()))
    seconds = time.time() - t0
    atomic_write_text(report / "README.md", _readme(opt, cfg, seconds, reached, precision.describe(), plan))
    print(f"\nquickstart finished in {seconds / 60:.1f} min (peak memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB); report in {report.resolve()}")
    return report


def _readme(opt: QuickstartOptions, cfg: RunConfig, seconds: float, steps: int, precision: str,
            plan: Plan | None) -> str:
    planned = plan.describe() if plan else f"steps given with --train-steps {opt.steps}"
    domain = " --domain robot" if opt.domain == "robot" else ""
    return (f"# avid quickstart report\n\nMade by `avid quickstart{domain} --budget-minutes {opt.budget_minutes:g} "
            f"--eval-size {opt.eval_size}` in {seconds / 60:.1f} min ({torch.get_num_threads()} CPU threads; "
            f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB).\n\n"
            f"- CPU: {describe_cpu()}\n- precision: {precision}\n- plan: {planned}\n"
            f"- adapter: {steps} optimiser steps of batch {cfg.train.batch_size}, "
            f"lr {with_method_defaults(cfg).train.lr:g} "
            f"({cfg.train.lr_schedule}, warm-up {cfg.train.warmup_steps})\n\n"
            "Methods: `base` (the base model alone, a black box), `avid` (the adapter trained here) and the "
            "copy-last-frame row. Files:\n\n"
            f"- `README.md`: this file\n{report_files_markdown()}\n\n"
            f"Adapter config: `{opt.config}`; run folder: `{cfg.out}`.\n")
