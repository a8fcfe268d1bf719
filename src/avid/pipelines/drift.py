"""Drift of long rollouts: world models and the real game under the same actions from the same
start, scored frame by frame against the horizon (``avid drift``).

Each trajectory starts at the first frame of one exact Procgen level; ``k - 1`` random actions give
the ``k`` conditioning frames, then ``horizon`` random actions are played in the real game and
imagined by every model (trajectories in which the real episode ends are skipped and redrawn).
Models roll out autoregressively (``avid.rollout.rollout_long``), far beyond their training
window; with re-grounding every K steps their conditioning frames are reset to the real ones.
Copy-last-frame (the last conditioning frame, re-grounded likewise) is the trivial baseline.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from avid.config import SampleConfig
from avid.data import to_video
from avid.data.procgen import NUM_ACTIONS, play_level
from avid.data.storage import atomic_write_text
from avid.pipelines.evaluate import COPY_LAST, to01
from avid.methods import Method
from avid.metrics import psnr_per_frame, ssim_per_frame
from avid.pipelines.report import plot_curves, video_grid, write_video
from avid.rollout import quantise, rollout_long


@dataclass
class DriftSpec:
    game: str = "coinrun"
    start_level: int = 10000  # levels [start_level, start_level + num_levels): the held-out test levels
    num_levels: int = 1000
    trajectories: int = 8
    horizon: int = 100
    seed: int = 0
    distribution_mode: str = "hard"


@dataclass
class RealTrajectories:
    """first ``(N, C, k, H, W)``, actions ``(N, L)``, real ``(N, C, L, H, W)`` (frame j after action j);
    ``played`` ``(N, k - 1 + L)``: every action played on each level from its start."""

    first: torch.Tensor
    actions: torch.Tensor
    real: torch.Tensor
    levels: list[int]
    played: np.ndarray


def real_trajectories(spec: DriftSpec, cond_frames: int, max_tries: int = 50) -> RealTrajectories:
    """``spec.trajectories`` real Procgen rollouts that stay inside one episode (see the module doc)."""
    rng = np.random.default_rng(spec.seed)
    firsts, acts, reals, levels, played = [], [], [], [], []
    for _ in range(spec.trajectories * max_tries):
        level = spec.start_level + int(rng.integers(spec.num_levels))
        actions = rng.integers(0, NUM_ACTIONS, cond_frames - 1 + spec.horizon)
        frames, _, ends = play_level(spec.game, level, actions, spec.distribution_mode)
        if ends.any():
            continue
        video = to_video(frames)  # (C, k + L, H, W)
        firsts.append(video[:, :cond_frames])
        reals.append(video[:, cond_frames:])
        acts.append(torch.as_tensor(actions[cond_frames - 1:]))
        levels.append(level)
        played.append(actions)
        if len(levels) == spec.trajectories:
            return RealTrajectories(torch.stack(firsts), torch.stack(acts), torch.stack(reals), levels, np.stack(played))
    raise RuntimeError(f"only {len(levels)} of {spec.trajectories} real rollouts of {spec.horizon} steps stayed inside "
                       f"one episode in {spec.trajectories * max_tries} tries; use a shorter --horizon")


def copy_last(first: torch.Tensor, real: torch.Tensor, reground_every: int | None) -> torch.Tensor:
    """The trivial rollout: the last conditioning frame, reset to the last real frame every K steps."""
    length = real.shape[2]
    out = first[:, :, -1:].expand(-1, -1, length, -1, -1).clone()
    for s in range(reground_every or length, length, reground_every or length):
        out[:, :, s:] = real[:, :, s - 1:s]
    return out


def curves(real: torch.Tensor, fakes: dict[str, torch.Tensor], lpips_net=None) -> dict[str, dict[str, np.ndarray]]:
    """Per method, per-step mean and standard error over trajectories: ``{metric: (L,), metric_se: (L,)}``
    (the real frames go through LPIPS's network once for all methods)."""
    n, length = real.shape[0], real.shape[2]
    per = {name: {"psnr": psnr_per_frame(to01(real), to01(f)), "ssim": ssim_per_frame(to01(real), to01(f))}
           for name, f in fakes.items()}
    if lpips_net is not None:
        from avid.metrics.lpips import lpips_per_frame_many

        for name, v in zip(fakes, lpips_per_frame_many(to01(real), [to01(f) for f in fakes.values()], lpips_net)):
            per[name]["lpips"] = v
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, metrics in per.items():
        out[name] = {}
        for metric, values in metrics.items():
            v = values.view(n, length).numpy()
            out[name][metric] = v.mean(0)
            out[name][f"{metric}_se"] = v.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(length)
    return out


def measure_drift(models: dict[str, Method], spec: DriftSpec, out: str | Path, regrounds: list[int | None],
                  cfg: SampleConfig, chunk: int = 1, lpips: bool = True) -> dict:
    """Roll every model (and copy-last-frame) for each re-grounding interval in ``regrounds`` (None:
    never) and write ``drift.csv`` (one row per interval, method and step), ``drift.png``,
    ``summary.md``, ``drift.json`` and ``rollouts.gif`` (real | each model, no re-grounding)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = next(iter(models.values())).ctx.cond_frames
    t0 = time.time()
    traj = real_trajectories(spec, k)
    real_seconds = time.time() - t0
    net, lpips_note = None, "LPIPS-VGG v0.1"
    if lpips:
        try:
            from avid.metrics.lpips import load_lpips

            net = load_lpips()
        except (FileNotFoundError, ValueError) as e:
            lpips_note = f"LPIPS n/a ({type(e).__name__}: {e})"
    real = quantise(traj.real)
    results: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    seconds: dict[str, float] = {}
    shown: dict[str, torch.Tensor] = {}
    for every in regrounds:
        key = f"reground every {every}" if every else "no re-grounding"
        fakes = {}
        for name, method in models.items():
            t0 = time.time()
            fakes[name] = rollout_long(method, traj.first, traj.actions, cfg, chunk=chunk, real=traj.real,
                                       reground_every=every)
            seconds[f"{name}, {key}"] = time.time() - t0
            if not every:
                shown[name] = fakes[name]
        fakes[COPY_LAST] = copy_last(quantise(traj.first), real, every)
        results[key] = curves(real, fakes, net)
    _write(out, spec, results, traj, cfg, chunk, seconds, real_seconds, lpips_note)
    write_video(out / "rollouts.gif", video_grid([real, *shown.values()], rows=4), fps=8)
    return results


def _write(out: Path, spec: DriftSpec, results, traj: RealTrajectories, cfg: SampleConfig, chunk: int,
           seconds: dict[str, float], real_seconds: float, lpips_note: str) -> None:
    metrics = [m for m in ("psnr", "ssim", "lpips") if m in next(iter(next(iter(results.values())).values()))]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["regrounding", "method", "step"] + [c for m in metrics for c in (m, f"{m}_se")])
    for key, per_method in results.items():
        for name, c in per_method.items():
            for j in range(spec.horizon):
                w.writerow([key, name, j + 1] + [f"{c[col][j]:.5g}" for m in metrics for col in (m, f"{m}_se")])
    atomic_write_text(out / "drift.csv", buf.getvalue())
    plot_curves(out / "drift.png", {key: {name: {m: c[m] for m in metrics} for name, c in per.items()}
                                    for key, per in results.items()}, metrics)
    marks = [h for h in (1, 8, 16, 32, 64, 100, 200, 500) if h <= spec.horizon]
    lines = [f"# Drift: {len(traj.levels)} real {spec.game} rollouts of {spec.horizon} random actions "
             f"(levels {sorted(traj.levels)})", "",
             f"Sampler {cfg.sampler}{f' ({cfg.steps} steps)' if cfg.sampler == 'ddim' else ''}, seed {cfg.seed}; "
             f"{chunk} frame(s) generated per call; metrics per step averaged over trajectories "
             f"(± standard error); {lpips_note}.", ""]
    for key, per_method in results.items():
        lines += [f"## {key}", "", "| method | " + " | ".join(f"{m.upper()} @{h}" for m in metrics for h in marks) + " |",
                  "|---|" + "---|" * (len(metrics) * len(marks))]
        for name, c in per_method.items():
            lines.append(f"| {name} | " + " | ".join(f"{c[m][h - 1]:.3f} ± {c[f'{m}_se'][h - 1]:.3f}"
                                                     for m in metrics for h in marks) + " |")
        lines.append("")
    lines += ["Seconds per rollout set (all trajectories): "
              + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + f"; real game {real_seconds:.1f}.", ""]
    atomic_write_text(out / "summary.md", "\n".join(lines))
    atomic_write_text(out / "drift.json", json.dumps(
        {"spec": asdict(spec), "levels": traj.levels, "sample": asdict(cfg), "chunk": chunk, "seconds": seconds,
         "results": {k: {n: {m: v.tolist() for m, v in c.items()} for n, c in pm.items()} for k, pm in results.items()}},
        indent=1))
