"""Evaluation of methods on held-out trajectories (paper section 4.2): every method gets the same
first frames, actions and sampling noise; videos are sampled in batches, cached per method (so an
interrupted evaluation resumes), scored against the ground truth, and written as a report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from avid import tiny
from avid.checkpoint import resolve
from avid.config import SampleConfig
from avid.data import Batch, WindowDataset, collate, to_uint8, to_video
from avid.data.storage import atomic_write, atomic_write_text
from avid.locks import locked
from avid.methods import Method
from avid.methods.base import to_latent
from avid.metrics import PSNR_CAP, against_copy_last, frame_metrics
from avid.metrics.action_classifier import action_scores, error_ratio, load_classifier
from avid.metrics.bootstrap import bootstrap_ci, ratio_of_means
from avid.metrics.normalise import normalised_scores
from avid.metrics.tables import METRICS, Row
from avid.nn import count_parameters
from avid.precision import resolve_precision
from avid.pipelines.report import (mask_to_video, plot_mask_per_step, plot_score_vs_params, video_grid, write_table,
                                   write_video)
from avid.rollout import Rollout, sample_videos

log = logging.getLogger("avid")

COPY_LAST = "copy last frame"  # the trivial baseline row every table carries: nothing moves
# with a latent base model, also "nothing moves" as a latent model can give it: the last frame after the
# black box's encode/decode, the best any latent method can do where the video is still
COPY_LAST_CODEC = "copy last frame, through the codec"
BASELINES = (COPY_LAST, COPY_LAST_CODEC)  # the rows that close a table, in this order

# Extra metric functions: (ground truth batch, {method: rollout}) -> {method: {metric: value}}
MetricFn = Callable[[Batch, dict[str, Rollout]], dict[str, dict[str, float | str]]]


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float | str]]
    rows: list[Row]
    rollouts: dict[str, Rollout] = field(repr=False, default_factory=dict)


def load_eval_batch(eval_dir: str | Path, frames: int, cond_frames: int, limit: int | None = None) -> Batch:
    if tiny.active():  # AVID_TINY=1: smoke-test size
        limit = min(limit or tiny.EVAL_TRAJECTORIES, tiny.EVAL_TRAJECTORIES)
    ds = WindowDataset(eval_dir, frames, cond_frames, stride=frames, limit=limit)
    return collate([ds[j] for j in range(len(ds))])


def held_out_loss(method: Method, data: str | Path, frames: int, cond_frames: int, limit: int = 512,
                  batch_size: int = 32, seed: int = 0, level: int | None = None,
                  precision: str = "auto", shuffled_actions: bool = False) -> tuple[float, int]:
    """The method's own training objective (eq. 6 with its weighting) on ``limit`` windows drawn
    without replacement from ``data``, with fixed diffusion steps (random, or all ``level``) and
    noise: a validation loss. Returns (mean loss per window, windows used).

    ``shuffled_actions``: every window gets the actions of the next drawn window instead of its own
    (same frames, steps and noise): how much higher the loss gets says how much the method uses the
    actions (a method that ignores them scores the same)."""
    amp = resolve_precision(precision)
    if limit < 1 or batch_size < 1:
        raise ValueError(f"--limit and --batch-size must be at least 1, got {limit} and {batch_size}")
    ds = WindowDataset(data, frames, cond_frames)
    limit = tiny.count(limit, tiny.LOSS_WINDOWS)  # AVID_TINY=1: smoke-test size
    idx = np.random.default_rng(seed).choice(len(ds), size=min(limit, len(ds)), replace=False)
    if shuffled_actions and len(idx) < 2:
        raise ValueError("shuffled actions need at least 2 windows")
    actions_of = np.roll(idx, -1) if shuffled_actions else idx  # another window's actions: a derangement
    total = 0.0
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's generator is left as it was
        torch.manual_seed(seed)
        for s in range(0, len(idx), batch_size):
            part = idx[s:s + batch_size]
            i = None if level is None else torch.full((len(part),), level)
            batch = collate([ds[int(j)] for j in part])
            if shuffled_actions:
                other = torch.stack([ds.window_actions(int(j)) for j in actions_of[s:s + batch_size]])
                batch = Batch(batch.first, batch.x0, other)
            if method.ctx.codec is not None:  # a latent base model: the loss is in its codec's space
                batch = to_latent(method.ctx.codec, batch)
            with amp.autocast():
                total += float(method.loss(batch, i, auxiliary=False)[0]) * len(part)
    return total / len(idx), len(idx)


def to01(video: torch.Tensor) -> torch.Tensor:
    return video.clamp(-1, 1).add(1).div(2)


def copy_last_frame(batch: Batch) -> torch.Tensor:
    """The trivial prediction ``(N, C, T', H, W)``: the last conditioning frame, repeated."""
    return batch.first[:, :, -1:].expand_as(batch.x0).contiguous()


@torch.no_grad()
def reconstruct(codec, video: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``decode(encode(video))`` of videos ``(N, C, T, H, W)`` in [-1, 1], as it is scored (float, clamped to
    [-1, 1]), ``chunk`` videos at a time (``None``: all at once)."""
    chunk = chunk or video.shape[0]
    return torch.cat([codec.decode(codec.encode(video[i:i + chunk])).float().clamp(-1, 1)
                      for i in range(0, video.shape[0], chunk)])


def copy_last_through_codec(batch: Batch, codec) -> torch.Tensor:
    """``copy_last_frame`` after ``codec``'s encode and decode (the black box's own door), in [-1, 1]."""
    return reconstruct(codec, batch.first[:, :, -1:]).expand_as(batch.x0).contiguous()


def codec_of(methods: dict[str, Method]):
    """The codec of the methods' latent base model (they share one), or None for pixel models."""
    return next((m.ctx.codec for m in methods.values() if m.ctx.codec is not None), None)


def _cache_key(method: Method, batch: Batch, cfg: SampleConfig) -> str:
    h = hashlib.sha256()
    used = resolve_precision(cfg.precision, cfg.device).name  # "auto" may differ between machines
    h.update(json.dumps({"sample": {**asdict(cfg), "precision": used}, "method": method.name,
                         "options": method.options()},
                        sort_keys=True, default=str).encode())
    h.update(to_uint8(batch.first).numpy().tobytes())  # every conditioning frame
    h.update(batch.actions.numpy().tobytes())
    for name, p in method.state_dict().items():  # every weight: a retrained method never reuses old samples
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    if method.base is not None:
        spec = method.base.spec  # the weights, and the settings the black box answers with
        h.update(json.dumps({"fingerprint": spec.fingerprint, "settings": spec.settings}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def sample_cached(name: str, method: Method, batch: Batch, cfg: SampleConfig, cache: Path | None) -> Rollout:
    """Sample ``method`` on ``batch``; reuse ``cache/<name>.npz`` when made with the same inputs.
    Videos come back quantised to 8 bits (as they are stored and as the ground truth is)."""
    path = cache / f"{name}.npz" if cache else None
    key = _cache_key(method, batch, cfg)
    if path and path.exists():
        with np.load(path) as z:
            if str(z["key"]) == key:
                log.info("%s: reusing sampled videos from %s", name, path)
                mask = torch.as_tensor(z["mask"]) if z["mask"].size else None
                per_step = torch.as_tensor(z["mask_per_step"]) if z["mask_per_step"].size else None
                return Rollout(to_video(z["videos"]), mask, per_step)
    roll = sample_videos(method, batch.first, batch.actions, cfg)
    roll.videos = to_video(to_uint8(roll.videos))  # scored as 8-bit frames, like the ground truth
    if path:
        empty = np.zeros(0, np.float32)
        atomic_write(path, lambda f: np.savez_compressed(
            f, key=key, videos=to_uint8(roll.videos).numpy(),
            mask=empty if roll.mask is None else roll.mask.half().numpy(),
            mask_per_step=empty if roll.mask_per_step is None else roll.mask_per_step.numpy()))
    return roll


def perceptual(weights_dir: str | Path | None = None, fvd_output: str = "logits") -> MetricFn:
    """LPIPS / FID / FVD with the standard networks ("n/a (weights not found ...)" without them);
    the real videos' side is computed once for all methods. ``fvd_output``: "logits" or "pool"."""
    from avid.metrics.perceptual import Perceptual

    nets: list[Perceptual] = []  # loaded at the first call, then kept (with its real-feature cache)

    def fn(batch: Batch, rolls: dict[str, Rollout]) -> dict[str, dict[str, float | str]]:
        if not nets:
            nets.append(Perceptual.load(weights_dir, fvd_output=fvd_output))
        return nets[0].score(to01(batch.x0), {name: to01(r.videos) for name, r in rolls.items()}, to01(batch.first))

    return fn


def action_error_ratio(path: str | Path | None, device: str = "cpu", batch_size: int = 32,
                       classes: list[int] | None = None) -> MetricFn:
    """The Action Error Ratio (section 9.3) with the action classifier in folder ``path``, and its
    paired bootstrap 95% interval over trajectories (``aer_ci``); every method gets "n/a (why)" when
    there is none. ``classes``: score action equivalence classes instead of buttons
    (``avid.data.aliasing``). Also records the raw real/generated scores."""
    folder = resolve(path) if path else None
    if folder is None or not (folder / "config.yaml").exists():
        why = ("n/a (no action classifier configured)" if path is None else
               f"n/a (no action classifier at {path}; make one with `avid classifier train`)")
        return lambda batch, rolls: {name: {"aer": why} for name in rolls}
    clf = load_classifier(folder, device)

    def fn(batch, rolls):
        c = clf.cfg
        if (c.cond_frames, c.predicted, c.frame_size) != (batch.first.shape[2], batch.x0.shape[2], batch.x0.shape[-1]):
            why = f"n/a (the classifier at {path} reads {c.cond_frames}+{c.predicted} frames of {c.frame_size}px)"
            return {name: {"aer": why} for name in rolls}
        real = action_scores(clf, batch.first, batch.x0, batch.actions, batch_size, classes).numpy()
        out = {}
        for name, roll in rolls.items():
            generated = action_scores(clf, batch.first, roll.videos, batch.actions, batch_size, classes).numpy()
            pair = (real, generated) if clf.discrete else (generated, real)  # eq. of section 9.3
            out[name] = {"aer": error_ratio(float(real.mean()), float(generated.mean()), c.action_kind),
                         "aer_ci": bootstrap_ci(ratio_of_means, *pair),
                         "action_score_real": float(real.mean()), "action_score_generated": float(generated.mean()),
                         "conventions": {"aer": convention}}
        return out

    over = (f"over {max(classes) + 1} action classes (buttons that act alike merged)" if classes
            else f"over the {clf.cfg.num_actions} actions" if clf.discrete else "MAE on normalised actions")
    score = "accuracy real / generated" if clf.discrete else "MAE generated / real"
    convention = (f"{score} of the classifier {path}, {over}; [low, high]: paired percentile-bootstrap 95% "
                  f"interval over the trajectories")

    return fn


@locked(lambda a: a["report"])
def evaluate(methods: dict[str, Method], batch: Batch, cfg: SampleConfig, report: str | Path,
             extra_metrics: list[MetricFn] = (), title: str = "Results", note: str = "") -> EvalResult:
    """Sample every method on the same inputs, score, and write tables, videos and plots. The table
    ends with the copy-last-frame row (``COPY_LAST``), scored by every metric like a method."""
    report = Path(report)
    rolls, results = {}, {}
    for name, method in methods.items():
        t0 = time.time()
        rolls[name] = sample_cached(name, method, batch, cfg, report / "samples")
        results[name] = {**frame_metrics(to01(batch.x0), to01(rolls[name].videos)), "sample_seconds": time.time() - t0}
    scored = {**rolls, COPY_LAST: Rollout(copy_last_frame(batch))}
    codec = codec_of(methods)
    if codec is not None:
        scored[COPY_LAST_CODEC] = Rollout(copy_last_through_codec(batch, codec))
    for name in BASELINES:
        if name in scored:
            results[name] = frame_metrics(to01(batch.x0), to01(scored[name].videos))
    for fn in extra_metrics:
        for name, vals in fn(batch, scored).items():
            conventions = {**results[name].get("conventions", {}), **vals.get("conventions", {})}
            results[name].update(vals)
            if conventions:
                results[name]["conventions"] = conventions
    shown = set(METRICS) | {f"{m}_ci" for m in METRICS}
    rows = [Row(name, {k: v for k, v in results[name].items() if k in shown}, count_parameters(m) or None,
                getattr(m, "needs_parameters", False)) for name, m in methods.items()]
    note += f"\nPrecision of every forward pass: {resolve_precision(cfg.precision, cfg.device).describe()}."
    conventions = next((r["conventions"] for r in results.values() if "conventions" in r), None)
    if conventions:
        note += "".join(f"\n- {k.upper()}: {v}" for k, v in conventions.items())
    norm = normalised_scores({r.method: r.values for r in rows})
    if norm.metrics and len(rows) > 1:
        for r in rows:
            r.values["normalised"] = norm.scores[r.method]
        note += (f"\nNormalised score (paper section 9.4, min-max over these methods, {COPY_LAST} left out): "
                 f"mean of {', '.join(norm.metrics)}.")
        plot_score_vs_params(report / "score_vs_params.png",
                             {r.method: (r.params or 0, norm.scores[r.method]) for r in rows}, norm.metrics)
    rows += [Row(name, {k: v for k, v in results[name].items() if k in shown}) for name in BASELINES if name in results]
    note += f"\n{COPY_LAST}: the last conditioning frame repeated (the trivial baseline: nothing moves)."
    if codec is not None:
        note += (f" {COPY_LAST_CODEC}: the same after the black box's encode and decode, what a latent model "
                 "that predicts \"nothing moves\" exactly would score: the codec's loss caps every latent method.")
    note += _copy_last_note(batch, rolls, results)
    write_table(report, "metrics", rows, title, note)
    atomic_write_text(report / "metrics.json", json.dumps(results, indent=1, default=str))
    write_videos(report, batch, rolls)
    return EvalResult(results, rows, rolls)


def _copy_last_note(batch: Batch, rolls: dict[str, Rollout], results: dict) -> str:
    """Where copy-last-frame's PSNR comes from (``avid.metrics.against_copy_last``), recorded in
    ``results`` and said in one line of the report."""
    split = against_copy_last(to01(batch.x0), {n: to01(r.videos) for n, r in rolls.items()},
                              to01(copy_last_frame(batch)))
    for name in rolls:
        results[name].update(psnr_moving=split["psnr_moving"][name], beats_copy_last=split["beats_copy_last"][name],
                             psnr_vs_copy=split["psnr_vs_copy"][name])
    results[COPY_LAST].update(psnr_moving=split["psnr_moving"]["copy"], still_frames=split["still_frames"])
    moving = ", ".join(f"{n} {split['psnr_moving'][n]:.2f}" for n in rolls)
    closer = ", ".join(f"{n} {100 * split['beats_copy_last'][n]:.1f}%" for n in rolls)
    paired = ", ".join(f"{n} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]" for n, (d, lo, hi) in split["psnr_vs_copy"].items())
    return (f"\nPSNR minus {COPY_LAST}'s, paired over trajectories (95% bootstrap interval): {paired}."
            f"\nStill frames (the ground truth equals the last conditioning frame): "
            f"{100 * split['still_frames']:.1f}% of predicted frames; {COPY_LAST} gets them exactly, each scored at "
            f"the {PSNR_CAP:g} dB PSNR cap. PSNR over the other frames: {moving}, {COPY_LAST} "
            f"{split['psnr_moving']['copy']:.2f}. Frames closer to the truth (lower MSE) than {COPY_LAST}: {closer}.")


def write_videos(report: Path, batch: Batch, rolls: dict[str, Rollout], rows: int = 6) -> None:
    """One grid with every method, and per method: ground truth | method | mask; mask plots."""
    names = list(rolls)
    write_video(report / "samples.gif", video_grid([batch.x0, *(rolls[n].videos for n in names)], rows))
    write_video(report / "samples.mp4", video_grid([batch.x0, *(rolls[n].videos for n in names)], rows))
    curves = {}
    for n, r in rolls.items():
        cols = [batch.x0, r.videos] + ([mask_to_video(r.mask)] if r.mask is not None else [])
        write_video(report / "videos" / f"{n}.gif", video_grid(cols, rows))
        if r.mask is not None:
            write_video(report / "masks" / f"{n}.gif", video_grid([batch.x0, mask_to_video(r.mask)], rows))
            curves[n] = r.mask_per_step
    if curves:
        steps = int(max(float(c[:, 0].max()) for c in curves.values())) + 1
        plot_mask_per_step(report / "mask_per_step.png", curves, steps)
