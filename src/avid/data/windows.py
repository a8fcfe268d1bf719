"""Windows of ``T`` consecutive frames for training and evaluation, and the per-step ``Batch``.

A window has ``k`` conditioning frames (the "first frames") followed by ``T - k`` frames to
predict. Each predicted frame ``x^tau`` is paired with the action that produced it (the action
taken at frame ``tau - 1``), so a window yields ``T - k`` actions aligned with the predicted frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from avid.data.storage import EpisodeStore


@dataclass
class Batch:
    """One step's data. Videos are float in [-1, 1].

    first:   ``(B, C, k, H, W)``  conditioning frames
    x0:      ``(B, C, T', H, W)`` frames to predict (``T' = T - k``)
    actions: ``(B, T')`` int64, or ``(B, T', A)`` float, aligned with ``x0``
    """

    first: torch.Tensor
    x0: torch.Tensor
    actions: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(self.first.to(device), self.x0.to(device), self.actions.to(device))

    def __len__(self) -> int:
        return self.x0.shape[0]


def to_video(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., T, H, W, C)`` -> float ``(..., C, T, H, W)`` in [-1, 1]."""
    x = torch.as_tensor(frames).float().div(127.5).sub(1)
    return x.movedim(-1, -4)


def frames_to_video(frames: np.ndarray, what: str = "frames") -> torch.Tensor:
    """User-given uint8 frames ``(..., T, H, W, 3)`` -> float video ``(..., 3, T, H, W)`` in [-1, 1];
    a clear error for anything else (floats in [0, 1], channels first, ...)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        span = f" in [{frames.min():.3g}, {frames.max():.3g}]" if frames.size and frames.dtype.kind in "fiu" else ""
        raise ValueError(f"{what} must be uint8 (0..255), got {frames.dtype}{span}; e.g. "
                         "(x * 255).round().astype(np.uint8) for floats in [0, 1]")
    if frames.ndim < 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be (..., T, H, W, 3) RGB, got shape {frames.shape}")
    return to_video(frames)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float ``(..., C, T, H, W)`` in [-1, 1] -> uint8 ``(..., T, H, W, C)``."""
    return video.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).movedim(-4, -1)


class WindowDataset(Dataset):
    """All windows of ``frames`` frames that stay inside one episode.

    ``stride`` spaces the window starts (evaluation sets use ``stride == frames`` so each stored
    trajectory is one window). Items are dicts ``{"first", "x0", "actions"}`` of one sample.
    """

    def __init__(self, store: EpisodeStore | str, frames: int = 10, cond_frames: int = 2, stride: int = 1,
                 limit: int | None = None) -> None:
        store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        if limit is not None and limit < 1:
            raise ValueError(f"a limit on the windows must be at least 1 (unset: all), got {limit}")
        if not 1 <= cond_frames < frames:
            raise ValueError(f"need 1 <= cond_frames < frames, got cond_frames={cond_frames}, frames={frames}")
        self.store, self.T, self.k = store, frames, cond_frames
        # windows never cross a shard (each starts an episode), so the first ``limit`` windows lie in
        # the first shards: load only as many as they need (twice as many per try)
        shards = 1 if limit is not None else None
        while True:
            data = store.load_all(shards)
            self.frames, self.actions, self.firsts = data["frames"], data["actions"], data["firsts"]
            self.starts = _window_starts(self.firsts, frames, stride)
            if limit is None or len(self.starts) >= limit or shards >= len(store.shards):
                break
            shards *= 2
        if len(self.firsts) < frames:  # every shard was read (a limit stops early only with windows found)
            raise ValueError(f"dataset {store.root} has {len(self.firsts)} frames, fewer than one window of {frames}")
        if limit is not None:
            self.starts = self.starts[:limit]
        if len(self.starts) == 0:
            raise ValueError(f"dataset {store.root} has no window of {frames} frames inside one episode")

    @property
    def action_kind(self) -> str:
        return self.store.meta.get("action_kind", "discrete")

    @property
    def num_actions(self) -> int:
        return int(self.store.meta.get("num_actions", 15))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[idx])
        video = to_video(self.frames[s:s + self.T])
        return {"first": video[:, :self.k], "x0": video[:, self.k:], "actions": self.window_actions(idx)}

    def window_actions(self, idx: int) -> torch.Tensor:
        """The actions of window ``idx`` alone (its frames are not read)."""
        s = int(self.starts[idx])
        return torch.as_tensor(self.actions[s + self.k - 1:s + self.T - 1])


class LatentWindows(Dataset):
    """The windows of ``windows`` (a ``WindowDataset``) in a codec's latent space, every stored frame
    encoded once up front instead of every window at every training step (a window's frames are
    re-encoded ~T times per epoch otherwise: half of a robot adapter's step). Only for a codec that
    encodes each frame on its own (``avid.methods.base.encodes_frames_apart``): ``encode`` takes
    ``(B, C, T, H, W)`` videos in [-1, 1]; ``chunk`` frames go in per call."""

    def __init__(self, windows: WindowDataset, encode, chunk: int = 128) -> None:
        self.windows = windows
        parts = []
        with torch.no_grad():
            for s in range(0, len(windows.frames), chunk):
                parts.append(encode(to_video(windows.frames[s:s + chunk])[None])[0].float())
        self.latents = torch.cat(parts, dim=1)  # (c, N, h, w)

    @property
    def action_kind(self) -> str:
        return self.windows.action_kind

    @property
    def num_actions(self) -> int:
        return self.windows.num_actions

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        s, k = int(self.windows.starts[idx]), self.windows.k
        z = self.latents[:, s:s + self.windows.T]
        return {"first": z[:, :k], "x0": z[:, k:], "actions": self.windows.window_actions(idx)}


def _window_starts(firsts: np.ndarray, frames: int, stride: int) -> np.ndarray:
    """Starts of the windows of ``frames`` frames that stay inside one episode (no episode starts
    inside ``(s, s + frames)``), spaced by ``stride``."""
    n = len(firsts) - frames + 1
    if n <= 0:
        return np.zeros(0, np.int64)
    starts_after = np.cumsum(firsts)
    s = np.arange(n)
    return _strided(s[starts_after[s + frames - 1] == starts_after[s]], stride)


def _strided(valid: np.ndarray, stride: int) -> np.ndarray:
    """Greedy non-overlapping starts spaced at least ``stride`` apart."""
    if stride == 1:
        return valid
    out, nxt = [], -1
    for v in valid:
        if v >= nxt:
            out.append(v)
            nxt = v + stride
    return np.asarray(out, dtype=np.int64)


def collate(items: list[dict[str, torch.Tensor]]) -> Batch:
    return Batch(*(torch.stack([it[k] for it in items]) for k in ("first", "x0", "actions")))
