"""``avid experiment scaling``: does AVID get better with compute? One run of the method is trained up
a ladder of optimiser-step budgets (250, 500, 1000, ... by default) by resuming it: each rung raises
``train.max_steps`` and reruns the project's resumable training, so no rung retrains what the one
below it did. The learning rate must be constant after its warm-up: a cosine decay over a total that
grows with every rung would change the schedule of the steps already taken.

At every rung, on the validation split (never the test split, and disjoint from the training levels):
PSNR and SSIM of videos sampled with the run's sampler (the same first frames, actions and noise at
every rung), each with a 95% Student-t interval over the trajectories, and the held-out denoising
loss (``avid.pipelines.evaluate.held_out_loss``, the same windows, steps and noise at every rung); the base
model alone and copying the last conditioning frame are measured once, as horizontal lines.

``reports/<name>/``: ``scaling.csv``, ``scaling.png`` (each metric against optimiser steps and
against CPU-minutes of training), ``README.md``, ``scaling.json`` (the state: what was measured with
which set-up) and ``steps-<n>/`` (each rung's samples, videos and masks). Rerunning skips measured
rungs; a longer ladder only trains and measures the new ones.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avid.checkpoint import load_config
from avid.config import RunConfig, load
from avid.data import Batch
from avid.data.storage import atomic_write_text
from avid.pipelines.evaluate import COPY_LAST, copy_last_frame, evaluate, held_out_loss, load_eval_batch, to01
from avid.pipelines.budget import budget_record, sized_run_config, timed_train, trained_step
from avid.methods import Method, build_method, check_method_options, compared_method
from avid.methods.sizes import load_size_preset
from avid.metrics import per_trajectory, psnr_per_frame, ssim_per_frame
from avid.metrics.stats import LEVEL, mean_ci
from avid.precision import describe_cpu
from avid.pipelines.report import plot_scaling
from avid.pipelines.splits import ExperimentData, Split, check_disjoint, held_out_set, training_set
from avid.train import build_context, load_method

log = logging.getLogger("avid")

COLUMNS = ("method", "steps", "train_minutes", "cpu_minutes", "psnr", "psnr_ci95", "ssim", "ssim_ci95", "loss",
           "val_trajectories", "loss_windows")
METRICS = (("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("loss", "held-out denoising loss ↓"))
AXES = (("steps", "optimiser steps"), ("cpu_minutes", "CPU-minutes of training"))


@dataclass
class ScalingConfig:
    name: str = "scaling-cpu"
    runs: str = "runs"  # runs/<name>/<method>/: the one run the ladder resumes
    reports: str = "reports"  # reports/<name>/
    method: str = "avid"
    sizes: str = "cpu-small"  # configs/sizes/<sizes>.yaml, or a path
    options: dict[str, Any] = field(default_factory=dict)  # more constructor options, e.g. {residual: true}
    ladder: list[int] = field(default_factory=lambda: [250, 500, 1000, 2000, 4000, 8000])  # optimiser steps
    val_size: int = 64  # validation trajectories sampled at every rung
    loss_windows: int = 256  # validation windows of the held-out denoising loss
    data: ExperimentData = field(default_factory=ExperimentData)
    run: RunConfig = field(default_factory=RunConfig)  # the run's template (train.max_steps: each rung's)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs) / self.name / self.method

    @property
    def report_dir(self) -> Path:
        return Path(self.reports) / self.name


def load_scaling(path: str | Path | None = None, overrides: list[str] | None = None,
                 values: dict[str, Any] | None = None) -> ScalingConfig:
    """Defaults, then the YAML file, then ``--set`` overrides, then flags (``avid.config.load``)."""
    cfg = load(ScalingConfig, path, overrides, values, "scaling config")
    compared_method(cfg.method)
    check_method_options(cfg.method, cfg.options)
    if not cfg.ladder or any(not isinstance(s, int) or s < 1 for s in cfg.ladder) or cfg.ladder != sorted(set(cfg.ladder)):
        raise ValueError(f"ladder must be increasing optimiser-step budgets >= 1, got {cfg.ladder}")
    if cfg.run.train.lr_schedule != "constant":
        raise ValueError(f"the ladder resumes one run to ever larger max_steps, so train.lr_schedule must be 'constant' "
                         f"(after train.warmup_steps); a {cfg.run.train.lr_schedule!r} schedule over a changing total "
                         "would change the learning rate of steps already taken")
    if cfg.val_size < 1 or cfg.loss_windows < 1:
        raise ValueError(f"val_size and loss_windows must be >= 1, got {cfg.val_size}, {cfg.loss_windows}")
    return cfg


def rung_config(cfg: ScalingConfig, train: Split, steps: int) -> RunConfig:
    options = {f"method.options.{k}": v for k, v in cfg.options.items()}
    return sized_run_config(cfg.run, cfg.method, load_size_preset(cfg.sizes), train.folder, cfg.run_dir,
                            f"{cfg.name}-{cfg.method}", options, max_steps=steps, max_minutes=None)


# ---- measuring ----------------------------------------------------------------------------------

def frame_scores(batch: Batch, video: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of ``video`` ``(N, C, T', H, W)`` against the batch (means over all predicted
    frames), each with the half-width of its Student-t interval over the N trajectories."""
    real, fake, n = to01(batch.x0), to01(video), len(batch)
    out = {}
    for key, per_frame in (("psnr", psnr_per_frame(real, fake)), ("ssim", ssim_per_frame(real, fake))):
        out[key], out[f"{key}_ci95"] = mean_ci(per_trajectory(per_frame, n).tolist())
    return out


def measure(cfg: ScalingConfig, name: str, method: Method, batch: Batch, val: Split, folder: Path,
            note: str) -> dict[str, Any]:
    """Sample ``method`` on the validation batch (cached in ``folder``) and score it; its held-out loss."""
    res = evaluate({name: method}, batch, cfg.run.sample, folder, title=f"{cfg.name}: {name}", note=note)
    d = cfg.run.data
    loss, windows = held_out_loss(method, val.folder, d.frames, d.cond_frames, limit=cfg.loss_windows,
                                  batch_size=cfg.run.sample.batch_size, precision=cfg.run.sample.precision)
    return {"method": name, **frame_scores(batch, res.rollouts[name].videos), "loss": loss,
            "val_trajectories": len(batch), "loss_windows": windows}


def baselines(cfg: ScalingConfig, train: Split, val: Split, batch: Batch) -> list[dict[str, Any]]:
    """The base model alone (its loss under the run's weighting, as the method's) and copy-last-frame."""
    base = build_method("base", build_context(rung_config(cfg, train, cfg.ladder[0]), val.meta,
                                              cfg.run.sample.precision))
    row = measure(cfg, "base", base, batch, val, cfg.report_dir / "base", f"The base model alone; {val.describe(len(batch))}.")
    copy = {"method": COPY_LAST, **frame_scores(batch, copy_last_frame(batch)), "val_trajectories": len(batch)}
    return [row, copy]


# ---- the ladder ---------------------------------------------------------------------------------

def _setup(cfg: ScalingConfig, train: Split, val: Split) -> dict[str, Any]:
    """What makes two rungs comparable: the run (but its step budget), the data and the measurements."""
    run = rung_config(cfg, train, 1).to_dict()  # any budget: it is left out below
    run["train"].pop("max_steps")
    for key in ("threads", "progress", "log_every", "ckpt_every", "compile", "channels_last"):  # how it runs
        run["train"].pop(key)
    setup = {"run": run, "train": train.describe(), "validation": val.describe(cfg.val_size),
             "loss_windows": cfg.loss_windows}
    return json.loads(json.dumps(setup))  # as the report's scaling.json holds it (lists, not tuples)


def _differences(a: Any, b: Any, at: str = "") -> list[str]:
    """The dotted keys where two set-ups differ (``run.train.lr: 0.0005 -> 0.001``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k, "<unset>"), b.get(k, "<unset>"), f"{at}{k}.")]
    if a == "<unset>" and b in (None, False):  # an option added since the report began, left off
        return []
    return [] if a == b else [f"{at[:-1]}: {a!r} -> {b!r}"]


def _load_state(path: Path, setup: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    differ = _differences(state["setup"], setup)
    if differ:
        raise ValueError(f"{path} was measured with another set-up (differs in: {', '.join(differ)}); its rungs "
                         "would not be comparable: choose another name or delete that report folder")
    return state["rows"]


def run_scaling(cfg: ScalingConfig, command: str = "") -> Path:
    """Train up the ladder by resuming one run, measure every rung; returns the report folder."""
    t0 = time.time()
    if cfg.run.train.threads:
        torch.set_num_threads(cfg.run.train.threads)
    train, val = training_set(cfg.data), held_out_set(cfg.data, "validation", max(cfg.val_size, cfg.loss_windows))
    check_disjoint(train, val)
    folder, setup = cfg.report_dir, _setup(cfg, train, val)
    rows = _load_state(folder / "scaling.json", setup)
    d = cfg.run.data
    batch = load_eval_batch(val.folder, d.frames, d.cond_frames, limit=cfg.val_size)
    if not rows:
        rows = baselines(cfg, train, val, batch)
    done = {r["steps"] for r in rows if r["method"] == cfg.method}
    for steps in cfg.ladder:
        at = trained_step(cfg.run_dir)
        if steps in done:
            continue
        if at is not None and at > steps:
            log.warning("rung %d skipped: the run is already at step %d and cannot go back", steps, at)
            continue
        if at != steps:
            log.info("%s: training to step %d%s", cfg.method, steps, f" (from step {at})" if at else "")
            timed_train(rung_config(cfg, train, steps))
        record = budget_record(cfg.run_dir)
        method, _ = load_method(cfg.run_dir, cfg.run.sample.precision)
        note = f"{cfg.method} after {steps} optimiser steps; {val.describe(len(batch))}."
        row = measure(cfg, cfg.method, method, batch, val, folder / f"steps-{steps}", note)
        rows.append({**row, "steps": steps, "train_minutes": record["train_seconds"] / 60,
                     "cpu_minutes": record["cpu_seconds"] / 60})
        write_report(cfg, rows, setup, val, command, time.time() - t0)  # after every rung: a kill keeps it
        log.info("rung %d: PSNR %.2f, SSIM %.4f, loss %.4f", steps, row["psnr"], row["ssim"], row["loss"])
    write_report(cfg, rows, setup, val, command, time.time() - t0)
    print((folder / "README.md").read_text())
    return folder


# ---- the report ---------------------------------------------------------------------------------

def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _cell(row: dict[str, Any], key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    half = row.get(f"{key}_ci95")
    return f"{row[key]:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def write_report(cfg: ScalingConfig, rows: list[dict[str, Any]], setup: dict[str, Any], val: Split, command: str,
                 seconds: float) -> None:
    folder = cfg.report_dir
    ladder = sorted((r for r in rows if r["method"] == cfg.method), key=lambda r: r["steps"])
    lines_at = {r["method"]: r for r in rows if r["method"] != cfg.method}
    atomic_write_text(folder / "scaling.json", json.dumps({"setup": setup, "rows": rows}, indent=1))
    atomic_write_text(folder / "scaling.csv", to_csv(ladder + list(lines_at.values())))
    plot_scaling(folder / "scaling.png", ladder, lines_at, METRICS, AXES,
                 f"{cfg.method} on the {val.describe(cfg.val_size)}".replace("`", ""))
    t, s = cfg.run.train, cfg.run.sample
    trained = load_config(cfg.run_dir)
    precision, lr = trained.get("precision_used") or t.precision, trained["run"]["train"]["lr"]
    md = [f"# {cfg.name}: {cfg.method} against training compute", "",
          f"Made by `{command or 'avid experiment scaling'}` (this invocation: {seconds / 60:.1f} min). CPU: "
          f"{describe_cpu()}. Rerunning skips measured rungs; a longer `ladder` trains on from the last one.", "",
          f"One run (`{cfg.run_dir}`) resumed up the ladder {', '.join(map(str, cfg.ladder))}: batch {t.batch_size}, "
          f"lr {lr:g} constant after {t.warmup_steps} warm-up steps, EMA {t.ema_decay}, precision {precision}, "
          f"size preset `{cfg.sizes}`, base model `{cfg.run.base}`, {setup['train']}.", "",
          f"Measured on the {setup['validation']}: PSNR and SSIM of videos sampled with "
          f"{s.describe()}, seed {s.seed}, the same "
          f"first frames, actions and noise at every rung (± {LEVEL:.0%} Student-t interval over the trajectories); "
          f"the held-out denoising loss on {cfg.loss_windows} windows of it (fixed steps and noise, the run's "
          "weighting). Training minutes: wall time; CPU-minutes: this process's CPU time over all its threads. "
          "The machine may have been shared with other jobs.", "",
          "| | steps | training min | CPU-min | PSNR ↑ | SSIM ↑ | loss ↓ |", "|---|---|---|---|---|---|---|"]
    for r in ladder + list(lines_at.values()):
        timing = (f"{r['steps']} | {r['train_minutes']:.1f} | {r['cpu_minutes']:.1f}" if "steps" in r else "– | – | –")
        md.append(f"| {r['method']} | {timing} | {_cell(r, 'psnr', 2)} | {_cell(r, 'ssim', 4)} | "
                  f"{_cell(r, 'loss', 4)} |")
    md += ["", "`scaling.png`: each metric against optimiser steps (top) and CPU-minutes (bottom), the base model "
               "and copy-last-frame as horizontal lines. `steps-<n>/`: each rung's samples and videos.", ""]
    atomic_write_text(folder / "README.md", "\n".join(md))
