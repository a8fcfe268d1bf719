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
    """``k`` consecutive frames of one episode of a dataset folder (see ``avid data``), uniformly; or,
    with ``near_end`` N > 0, a share ``near_end_share`` of them drawn from the last N frames before
    an episode of the dataset ended (not where a stored stream was merely cut), so that imagined
    episodes also start close to where real ones end, where a sparse reward is (a start curriculum
    in the manner of Backplay, Resnick et al. 2018: only the dataset's own episode boundaries are used)."""

    def __init__(self, folder: str | Path, cond_frames: int, near_end: int = 0, near_end_share: float = 0.5) -> None:
        if near_end < 0 or not 0 <= near_end_share <= 1:
            raise ValueError(f"near_end must be >= 0 and near_end_share in [0, 1], got {near_end}, {near_end_share}")
        self.windows = WindowDataset(folder, cond_frames + 1, cond_frames)
        self.frame_size = int(self.windows.frames.shape[1])
        self.share = near_end_share if near_end else 0.0
        self.near = self._near_end(cond_frames, near_end) if near_end else np.zeros(0, np.int64)
        if near_end and len(self.near) == 0:
            raise ValueError(f"no episode of {folder} ends inside it: near_end needs episodes that end")

    def _near_end(self, k: int, n: int) -> np.ndarray:
        """Indices of the windows whose last frame lies at most ``n`` frames before an episode's last."""
        cuts = np.cumsum([0] + [int(sh["frames"]) for sh in self.windows.store.shards])[:-1]
        ends = np.setdiff1d(np.flatnonzero(self.windows.firsts), cuts) - 1  # the last frame of every episode that ended
        last = self.windows.starts + k - 1  # each window's last (conditioning) frame
        nxt = np.searchsorted(ends, last)  # the first ending at or after it (windows stay inside an episode)
        ok = nxt < len(ends)
        dist = np.where(ok, ends[np.minimum(nxt, len(ends) - 1)] - last, -1)
        return np.flatnonzero(ok & (dist >= 0) & (dist < n))

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if self.share and rng.random() < self.share:
            idx = int(self.near[rng.integers(len(self.near))])
        else:
            idx = int(rng.integers(len(self.windows)))
        return to_uint8(self.windows[idx]["first"]).numpy()


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


def open_starts(spec: str | Starts, cond_frames: int, near_end: int = 0) -> Starts:
    """A start source from ``spec``: a dataset folder, ``procgen:GAME`` (levels 0-99),
    ``procgen:GAME:START-STOP`` (levels START..STOP inclusive), or a ``Starts`` object. ``near_end``
    (dataset folders only): half the starts within that many frames of an episode's end (``DatasetStarts``)."""
    if not isinstance(spec, str):
        if near_end:
            raise ValueError("near_end applies to a dataset folder given as starts, not to a Starts object")
        return spec
    if spec.startswith("procgen:") and near_end:
        raise ValueError(f"near_end needs a dataset folder as starts (where episodes end), not {spec!r}")
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
    return DatasetStarts(spec, cond_frames, near_end)
