"""Where imagined episodes start: ``k`` real first frames, drawn from a dataset or from the real game.

A start source is called with a numpy generator and returns ``(k, H, W, 3)`` uint8 frames, so an
env reset with the same seed starts from the same frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from avid.data import WindowDataset, to_uint8
from avid.data.procgen import GAMES, NOOP, play_level


class Starts(Protocol):
    frame_size: int

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """``(k, H, W, 3)`` uint8 real frames to start an imagined episode from."""


class DatasetStarts:
    """``k`` consecutive frames of one episode of a dataset folder (see ``avid data``), uniformly."""

    def __init__(self, folder: str | Path, cond_frames: int) -> None:
        self.windows = WindowDataset(folder, cond_frames + 1, cond_frames)
        self.frame_size = int(self.windows.frames.shape[1])

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        item = self.windows[int(rng.integers(len(self.windows)))]
        return to_uint8(item["first"]).numpy()


class ProcgenStarts:
    """The first ``k`` frames of a real Procgen level drawn uniformly from ``levels`` (the agent
    presses nothing between them): each imagined episode starts where the real game starts."""

    frame_size = 64

    def __init__(self, game: str, levels: range, cond_frames: int, distribution_mode: str = "hard") -> None:
        if game not in GAMES:
            raise ValueError(f"unknown Procgen game {game!r}; choose from {GAMES}")
        if len(levels) < 1:
            raise ValueError(f"need at least one level, got {levels}")
        self.game, self.levels, self.k, self.mode = game, levels, cond_frames, distribution_mode

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        level = self.levels[int(rng.integers(len(self.levels)))]
        return play_level(self.game, level, np.full(self.k - 1, NOOP), self.mode)[0]


def open_starts(spec: str | Starts, cond_frames: int) -> Starts:
    """A start source from ``spec``: a dataset folder, ``procgen:GAME`` (levels 0-99),
    ``procgen:GAME:START-STOP`` (levels START..STOP inclusive), or a ``Starts`` object."""
    if not isinstance(spec, str):
        return spec
    if spec.startswith("procgen:"):
        parts = spec.split(":")
        try:
            lo, hi = (int(v) for v in parts[2].split("-")) if len(parts) > 2 else (0, 99)
        except ValueError:
            raise ValueError(f"starts {spec!r}: write procgen:GAME or procgen:GAME:START-STOP (e.g. "
                             "procgen:coinrun:10000-10999)") from None
        return ProcgenStarts(parts[1], range(lo, hi + 1), cond_frames)
    if not (Path(spec) / "index.json").exists():
        raise ValueError(f"starts {spec!r} is neither a dataset folder (no index.json there; make one with "
                         "`avid data`) nor procgen:GAME[:START-STOP]")
    return DatasetStarts(spec, cond_frames)
