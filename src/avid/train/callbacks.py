"""What a training run shows and how it stops, as Lightning callbacks shared by every trainer
(methods, base models, the action classifier):

- ``SaveLast`` / ``SaveEvery``: the one resume checkpoint, ``checkpoints/last.ckpt``, written every
  ``ckpt_every`` steps and when training ends (never ``last-v1.ckpt``);
- ``StepProgressBar``: one bar over optimiser steps for the whole run, its total and ETA taking the
  time cap (``train.max_minutes``) into account;
- ``GracefulStop``: Ctrl-C or SIGTERM finishes the current optimiser step, saves ``last.ckpt`` and
  the model, and stops; a second signal stops at once. A run that stops early (signal or time cap)
  says so in one line with the step reached and how to continue.

``fit(trainer, module, loader, last)`` runs ``trainer.fit`` (resuming from ``last`` when it exists)
and re-raises the signal afterwards (``KeyboardInterrupt`` for Ctrl-C, ``SystemExit(143)`` for
SIGTERM), so a command stops there instead of going on with half a run.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ProgressBar, Timer
from tqdm.auto import tqdm

log = logging.getLogger("avid")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SaveLast(Callback):
    """Saves ``last.ckpt`` when training ends, before EMA overwrites the raw weights, so a later
    run with a larger ``max_steps`` resumes exactly where this one stopped (unless ``SaveEvery``
    has just saved that step). Place it before ``EMAWeightAveraging`` in the callback list. Before
    each save the module's ``check_weights`` (if it has one) refuses weights that give a non-finite loss."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved_step: int | None = None

    def save(self, trainer) -> None:
        check = getattr(trainer.lightning_module, "check_weights", None)
        if check is not None:  # a checkpoint never holds weights that give a non-finite loss
            check()
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        if self.saved_step != trainer.global_step:
            self.save(trainer)


class SaveEvery(Callback):
    """Saves the same ``last.ckpt`` (through ``end``, the run's ``SaveLast``) every ``every``
    optimiser steps. Place it after ``EMAWeightAveraging``, so the saved average includes the step
    just taken."""

    def __init__(self, end: SaveLast, every: int) -> None:
        self.end, self.every = end, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self.end.save(trainer)


def _timer(trainer) -> Timer | None:
    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


@dataclass
class Forecast:
    total: int  # the step the run will end at: max_steps, or fewer when the time cap comes first
    eta_s: float | None  # seconds until then (None: no rate measured yet)
    capped: bool  # the time cap ends the run before max_steps


def forecast(step: int, max_steps: int, rate: float | None, time_left_s: float | None) -> Forecast:
    """Where a run at ``step`` going at ``rate`` steps/s ends: at ``max_steps``, or where the time
    cap (``time_left_s`` seconds from now, None: no cap) stops it, whichever comes first."""
    if not rate:
        return Forecast(max_steps, None, False)
    eta = (max_steps - step) / rate
    if time_left_s is not None and time_left_s < eta:
        left = max(0.0, time_left_s)
        return Forecast(min(max_steps, step + math.ceil(rate * left)), left, True)
    return Forecast(max_steps, eta, False)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class StepProgressBar(ProgressBar):
    """One tqdm bar over optimiser steps, from the resumed step to where the run will end.

    The rate is measured from the end of this segment's first step (set-up and warm-up excluded);
    with a time cap the total is the step the cap will stop at and the ETA never passes the cap.
    """

    clock = staticmethod(time.monotonic)

    def __init__(self, desc: str = "train", max_minutes: float | None = None) -> None:
        super().__init__()
        self.desc, self.max_minutes, self.enabled, self.bar = desc, max_minutes, True, None
        self._ref: tuple[int, float] | None = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def print(self, *args, **kwargs) -> None:
        tqdm.write(" ".join(map(str, args)), **kwargs)

    def on_train_start(self, trainer, pl_module) -> None:
        self._ref = None
        self.bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, desc=self.desc, unit="step",
                        disable=not self.enabled, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed} elapsed{postfix}]")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, now = trainer.global_step, self.clock()
        if self._ref is None:
            self._ref = (step, now)
        rate = (step - self._ref[0]) / (now - self._ref[1]) if step > self._ref[0] else None
        timer = _timer(trainer)
        f = forecast(step, trainer.max_steps, rate, timer.time_remaining() if timer else None)
        self.bar.total = f.total
        self.bar.n = step
        parts = [f"{_clock(f.eta_s)} left", f"{rate:.2f} step/s" if rate else "first step done"]
        if self.max_minutes:
            cap = f"time cap {self.max_minutes:g} min"
            parts.append(f"{cap}: stops near step {f.total} of {trainer.max_steps}" if f.capped else cap)
        metrics = self.get_metrics(trainer, pl_module)
        parts += [f"{k.split('/', 1)[1]} {float(v):.4g}" for k, v in metrics.items() if k.startswith("train/")]
        self.bar.set_postfix_str(", ".join(parts), refresh=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()


class GracefulStop(Callback):
    """Ctrl-C / SIGTERM: stop after the current optimiser step with ``last.ckpt`` and the model
    saved (a second signal stops at once; the run then resumes from the last periodic checkpoint).
    When training ends before ``max_steps`` (by a signal or the time cap), says so in one line.

    Place it after ``SaveLast``, ``EMAWeightAveraging`` and the exporting callbacks: its
    ``on_train_end`` reports what they saved."""

    def __init__(self, last: Path, max_minutes: float | None = None) -> None:
        self.last, self.max_minutes = Path(last), max_minutes
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        os.write(2, (f"\n{signal.Signals(signum).name}: stopping after this optimiser step and saving "
                     f"{self.last}; send it again to stop at once (the run then resumes from its last "
                     "periodic checkpoint)\n").encode())

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False):  # any rank stops all
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()
        step, max_steps = trainer.global_step, trainer.max_steps
        if self.signum is not None:
            log.warning("%s: stopped at step %d of %d; %s and the model are saved at that step: run the same "
                        "command again to resume", signal.Signals(self.signum).name, step, max_steps, self.last)
            return
        timer = _timer(trainer)
        if timer is not None and step < max_steps and timer.time_remaining() <= 0:
            log.warning("time cap (%g min) reached at step %d of %d; the model and %s are saved there. To "
                        "continue, run the same command with a larger cap (train.max_minutes, or --minutes; it "
                        "counts every resumed segment) or train.max_minutes=null", self.max_minutes, step,
                        max_steps, self.last)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()


def run_callbacks(last: Path, progress: bool, desc: str = "train", max_minutes: float | None = None) -> list[Callback]:
    """The callbacks every run adds after its checkpoint and export callbacks."""
    return [*([StepProgressBar(desc, max_minutes)] if progress else []), GracefulStop(last, max_minutes)]


def fit(trainer: L.Trainer, module: L.LightningModule, loader, last: Path) -> None:
    """``trainer.fit``, resuming from ``last`` when it exists; a run stopped by a signal raises it
    again once everything is saved (``KeyboardInterrupt``, or ``SystemExit(128 + signum)``)."""
    with warnings.catch_warnings():  # with ResumeState among the callbacks a mid-epoch resume is exact
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable")
        trainer.fit(module, loader, ckpt_path=str(last) if Path(last).exists() else None)
    stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
    if stop is not None and stop.signum == signal.SIGINT:
        raise KeyboardInterrupt
    if stop is not None and stop.signum is not None:
        raise SystemExit(128 + stop.signum)


class WarmupEMA(EMAWeightAveraging):
    """EMA of the weights whose decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates (as timm's and TensorFlow's EMA do), so a short run's exported weights are not held back
    by its initial ones: with a fixed 0.995, 22% of the average after 300 steps is the initial weights."""

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay)

        def average(ema: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            d = min(decay, (1 + float(n)) / (10 + float(n)))
            return ema + (current - ema) * (1 - d)

        self._kwargs["avg_fn"] = average

    @property
    def state_key(self) -> str:  # checkpoints written with Lightning's plain EMA callback resume its average
        return "EMAWeightAveraging"
