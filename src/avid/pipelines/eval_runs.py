"""``avid eval`` and ``avid loss``: trained run folders (or base model folders) scored on held-out
trajectories: sampled and written up as a report (``avid.pipelines.evaluate``), or their denoising loss."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

from avid.config import SampleConfig, run_config_from_dict
from avid.methods import CopyLast, build_method
from avid.pipelines.evaluate import action_error_ratio, evaluate, held_out_loss, load_eval_batch, perceptual
from avid.train import build_context, load_method


def evaluate_runs(runs: list[str], data: str, out: str | Path, cfg: SampleConfig, with_base: bool = False,
                  limit: int | None = None, title: str = "Results", classifier: str | None = None,
                  weights: str | None = None, fvd_features: str = "logits", aer_classes: str | None = None) -> Path:
    """Every run of ``runs`` (named by its folder; with ``with_base`` the first run's base model alone
    too) sampled on the same trajectories of ``data``; the report goes to ``out``."""
    methods, first = {}, None
    for run in runs:
        method, mc = load_method(run, cfg.precision)
        methods[Path(run).name] = method
        first = first or mc
    if not methods:
        raise ValueError("give at least one trained run with --runs")
    if with_base:
        meta = {k: first[k] for k in ("action_kind", "num_actions", "frame_size")}
        base = build_context(run_config_from_dict(first["run"]), meta, cfg.precision)
        methods = {"base": build_method("base", base), **methods}
    batch = load_eval_batch(data, first["frames"], first["cond_frames"], limit=limit)
    note = (f"{len(batch)} trajectories from {data}; {first['cond_frames']} conditioning frames; "
            f"metrics over predicted frames only; sampler {cfg.describe()}, seed {cfg.seed}.")
    classes = None
    if aer_classes:
        from avid.data.aliasing import load_classes

        classes = load_classes(aer_classes)
    metrics = [action_error_ratio(classifier or None, device=cfg.device, classes=classes),
               perceptual(weights, fvd_features)]
    evaluate(methods, batch, cfg, out, extra_metrics=metrics, title=title, note=note)
    return Path(out)


def loss_lines(checkpoint: str, data: str, limit: int = 512, batch_size: int = 32, seed: int = 0,
               levels: list[int] | None = None, weighting: str | None = None, precision: str = "auto",
               shuffled_actions: bool = False) -> Iterator[str]:
    """The denoising loss of ``checkpoint`` on ``limit`` windows of ``data``, at random diffusion steps or
    at each of ``levels``, with the method's own weighting or ``weighting`` (e.g. "x0": the plain MSE
    of the clean video): one line each, and one for copy-last-frame (``CopyLast``) on the same windows.
    ``shuffled_actions``: one more line each, the method given another window's actions (``held_out_loss``)."""
    method, mc = load_method(checkpoint, precision)
    if weighting:
        method.diffusion = method.diffusion.with_weighting(weighting)
    d = method.diffusion
    copy_last = CopyLast(dataclasses.replace(method.ctx, diffusion=d, base=None))
    for level in levels or [None]:
        if level is not None and not 0 <= level < d.num_steps:
            raise ValueError(f"--levels must lie in [0, {d.num_steps}), got {level}")
        at = "random diffusion steps" if level is None else f"diffusion step {level}"
        rows = [(checkpoint, method, False), ("copy last frame", copy_last, False)]
        if shuffled_actions:
            rows.insert(1, (f"{checkpoint} with shuffled actions", method, True))
        for who, m, shuffled in rows:  # the same windows, steps and noise
            loss, n = held_out_loss(m, data, mc["frames"], mc["cond_frames"], limit, batch_size, seed, level,
                                    precision, shuffled)
            yield (f"{who}: denoising loss {loss:.4f} at {at} ({d.cfg.weighting} weighting, {d.param} "
                   f"parameterisation) over {n} windows of {data}, seed {seed}")
