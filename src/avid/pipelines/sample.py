"""``avid sample``: videos from first frames and actions with a trained method (or a base model),
written as ``videos.npy`` ``(N, T, H, W, 3)`` uint8, AVID's mask (``mask.npy``, ``mask_per_step.npy``)
and a GIF grid: last conditioning frame | ground truth (with a dataset) | sample (| mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avid.config import SampleConfig
from avid.data import WindowDataset, collate, to_uint8
from avid.data.windows import frames_to_video
from avid.locks import locked
from avid.pipelines.report import mask_to_video, video_grid, write_video
from avid.rollout import sample_videos
from avid.train import load_method


def inputs(frames: int, cond_frames: int, data: str | None = None, limit: int | None = None,
           first_frames: str | None = None, actions: str | None = None):
    """``(first (N, C, k, H, W), actions, ground truth or None)``: ``limit`` trajectories evenly spread
    over the dataset ``data``, or the ``.npy`` files ``first_frames`` (``(N, k, H, W, 3)`` uint8) and ``actions``."""
    if data:
        ds = WindowDataset(data, frames, cond_frames, stride=frames)
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be at least 1 (leave it out for all), got {limit}")
        n = min(limit or len(ds), len(ds))
        batch = collate([ds[int(j)] for j in np.linspace(0, len(ds) - 1, n).round()])  # spread over the set
        return batch.first, batch.actions, batch.x0
    if not (first_frames and actions):
        raise ValueError("give --data DIR, or both --first-frames and --actions (.npy files)")
    first = frames_to_video(np.load(first_frames), "--first-frames")  # (N, k, H, W, 3) uint8
    acts = torch.as_tensor(np.load(actions))
    return (first[None], acts[None], None) if first.ndim == 4 else (first, acts, None)


@locked(lambda a: a["out"])  # created, writable and ours before any sampling
def sample_to_folder(checkpoint: str, out: str | Path, cfg: SampleConfig, data: str | None = None,
                     limit: int | None = None, first_frames: str | None = None, actions: str | None = None) -> str:
    """Sample ``checkpoint`` from the given first frames and actions into ``out``; returns what was written."""
    method, mc = load_method(checkpoint, cfg.precision)
    first, acts, truth = inputs(mc["frames"], mc["cond_frames"], data, limit, first_frames, actions)
    roll = sample_videos(method, first, acts, cfg)
    out = Path(out)
    np.save(out / "videos.npy", to_uint8(roll.videos).numpy())
    cols = [first[:, :, -1:].expand(-1, -1, roll.videos.shape[2], -1, -1), roll.videos]
    if truth is not None:  # ground truth beside the sample
        cols.insert(1, truth)
    if roll.mask is not None:
        np.save(out / "mask.npy", roll.mask.numpy())
        np.save(out / "mask_per_step.npy", roll.mask_per_step.numpy())
        cols.append(mask_to_video(roll.mask))
    write_video(out / "samples.gif", video_grid(cols, rows=8))
    return (f"{len(first)} videos -> {out}/videos.npy (N, T, H, W, 3 uint8), samples.gif"
            + (", mask.npy, mask_per_step.npy" if roll.mask is not None else ""))
