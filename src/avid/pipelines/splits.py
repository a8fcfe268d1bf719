"""The datasets of an experiment: a training set, a validation split on which every choice is made
(sweep values, learning rates, budgets), and a test split that only the final tables read. Each is
an existing folder or generated once (resumably) from a Procgen or robot-arm preset; they must not
share a folder, a level or (robot) a seed, and every report names the split and the levels or
episodes of each number it gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from avid.checkpoint import resolve
from avid.data import EpisodeStore
from avid.data import procgen, robot
from avid.data.procgen import describe_levels, shared_levels


@dataclass
class ExperimentData:
    root: str = "data/coinrun"  # generated sets: <root>/train-<levels>x<steps>, <root>/val-<n>, <root>/eval-<n>
    train: str | None = None  # an existing training set instead (nothing generated)
    val: str | None = None  # an existing validation set instead (its first trajectories)
    eval: str | None = None  # an existing test set instead (its first trajectories)
    train_preset: str = "coinrun100k"
    levels: int | None = None  # None: the preset's number of levels ...
    steps_per_level: int | None = None  # ... and steps per level
    episodes: int | None = None  # robot presets: None, the preset's number of episodes
    val_preset: str = "coinrun-val"  # levels 5000-5999, random actions: sweeps and other choices
    eval_preset: str = "coinrun-eval"  # levels 10000-10999, random actions (section 9.1): the tables


@dataclass
class Split:
    role: str  # "training", "validation" or "test"
    folder: Path
    meta: dict

    def describe(self, trajectories: int | None = None) -> str:
        """E.g. ``validation split: 16 trajectories of coinrun levels 5000-5999 (data/coinrun/val-16)``."""
        n = f"{trajectories} trajectories of " if trajectories else ""
        what = robot.describe(self.meta) if self.meta.get("source") == "robot" else describe_levels(self.meta)
        return f"{self.role} split: {n}{what} (`{self.folder}`)"


def _existing(role: str, folder: str) -> Split:
    path = resolve(folder)
    return Split(role, path, EpisodeStore(path).meta)  # a clear error when there is no dataset


def training_set(d: ExperimentData) -> Split:
    if d.train:
        return _existing("training", d.train)
    spec, generate = _preset(d.train_preset)
    if isinstance(spec, robot.RobotSpec):
        spec = dataclasses.replace(spec, episodes=d.episodes or spec.episodes)
        folder = Path(d.root) / f"train-{spec.episodes}x{spec.episode_len}"
    else:
        spec = dataclasses.replace(spec, num_levels=d.levels or spec.num_levels,
                                   steps_per_level=d.steps_per_level or spec.steps_per_level)
        folder = Path(d.root) / f"train-{spec.num_levels}x{spec.steps_per_level}"
    return Split("training", folder, generate(spec, str(folder)).meta)


def _preset(name: str):
    """The spec and the generator of a named dataset (Procgen's or the robot arm's presets)."""
    for module in (procgen, robot):
        if name in module.PRESETS:
            return module.PRESETS[name], module.generate
    raise ValueError(f"unknown dataset preset {name!r}; choose from {sorted(procgen.PRESETS) + sorted(robot.PRESETS)}")


def held_out_set(d: ExperimentData, role: str, trajectories: int) -> Split:
    """The ``"validation"`` or ``"test"`` split: ``data.val`` / ``data.eval``, else ``trajectories``
    generated from ``data.val_preset`` / ``data.eval_preset`` into ``<root>/val-<n>`` / ``<root>/eval-<n>``."""
    given, preset, stem = {"validation": (d.val, d.val_preset, "val"), "test": (d.eval, d.eval_preset, "eval")}[role]
    if given:
        return _existing(role, given)
    folder = Path(d.root) / f"{stem}-{trajectories}"
    spec, generate = _preset(preset)
    return Split(role, folder, generate(dataclasses.replace(spec, trajectories=trajectories), str(folder)).meta)


def check_disjoint(*splits: Split) -> None:
    """No two splits may be one folder or share a level of a game (when their data records levels)."""
    for k, a in enumerate(splits):
        for b in splits[k + 1:]:
            if a.folder.resolve() == b.folder.resolve():
                raise ValueError(f"the {a.role} and {b.role} splits are the same folder {a.folder}: choices and "
                                 "scores would be made on the same trajectories; give separate data folders")
            common = shared_levels(a.meta, b.meta) or robot.shared_episodes(a.meta, b.meta)
            if common:
                raise ValueError(f"the {a.role} split ({a.folder}) and the {b.role} split ({b.folder}) share "
                                 f"{common}; use presets or folders with disjoint levels")
