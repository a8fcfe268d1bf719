"""``AVID_TINY=1``: every command at smoke-test size, to check that commands run, not what they give.

With the environment variable ``AVID_TINY=1`` every command keeps its arguments, its meaning and
its files, and only its sizes shrink (one home for all of them, here):

- generated datasets: at most 2 levels per game, 30 steps per level, 2 trajectories per game;
  robot datasets: at most 2 episodes or 2 trajectories;
- training (methods, base models, classifiers): at most 2 optimiser steps of batch 2;
- sampling: 2 DDIM steps (DDPM included);
- ``avid bench`` (``--blackbox`` too): 1 warm-up and 1 timed step (or round); ``avid loss``: at most
  8 windows; evaluations: at most 2 held-out trajectories (the fewest an FVD, a bootstrap interval or a
  covariance can use; each one is an I3D forward pass at 224x224); experiments: at most 2 seeds
  (enough for a mean and an interval) and the first 2 values of each sweep option (enough for a choice).

Network sizes are untouched. ``tests/test_readme*.py`` run every command block of the README this
way, in order within each group of sections (``GROUPS`` in tests/test_readme.py). Numbers made under
``AVID_TINY`` mean nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TypeVar

ENV = "AVID_TINY"
T = TypeVar("T")

DATA = {"num_levels": 2, "steps_per_level": 30, "trajectories": 2}
ROBOT = {"episodes": 2, "trajectories": 2}
TRAIN = {"max_steps": 2, "batch_size": 2, "ckpt_every": 2, "num_workers": 0}
SAMPLE_STEPS = 2
BENCH_STEPS = 1
LOSS_WINDOWS = 8
EVAL_TRAJECTORIES = 2
SEEDS = 2
SWEEP_VALUES = 2
PREDICTABILITY = {"states": 2, "futures": 2, "shift_radius": 1}


def active() -> bool:
    return os.environ.get(ENV, "").strip() not in ("", "0")


def _shrink(obj: T, limits: dict[str, int]) -> T:
    """``obj`` (a dataclass) with each field of ``limits`` capped at its limit when tiny."""
    if not active():
        return obj
    changes = {k: v for k, v in limits.items() if getattr(obj, k) is not None and getattr(obj, k) > v}
    return dataclasses.replace(obj, **changes) if changes else obj


def procgen(spec: T) -> T:
    """A ``ProcgenSpec`` at tiny size."""
    return _shrink(spec, DATA)


def robot(spec: T) -> T:
    """A ``RobotSpec`` at tiny size."""
    return _shrink(spec, ROBOT)


def predictability(spec: T) -> T:
    """A ``PredictabilitySpec`` at tiny size."""
    return _shrink(spec, PREDICTABILITY)


def training(cfg: T) -> T:
    """A ``TrainConfig`` (of a method, the base model or a classifier) at tiny size."""
    return _shrink(cfg, TRAIN)


def run(cfg: T) -> T:
    """A ``RunConfig`` whose ``train`` section is at tiny size."""
    return dataclasses.replace(cfg, train=training(cfg.train)) if active() else cfg


def sampling(cfg: T) -> T:
    """A ``SampleConfig`` with ``SAMPLE_STEPS`` DDIM steps (DDPM walks every diffusion step)."""
    if not active():
        return cfg
    return dataclasses.replace(cfg, sampler="ddim", steps=min(cfg.steps or SAMPLE_STEPS, SAMPLE_STEPS))


def count(n: int, small: int) -> int:
    """``n``, or at most ``small`` when tiny (repeats, windows)."""
    return min(n, small) if active() else n
