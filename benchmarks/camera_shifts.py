"""How much of Coinrun's next frames is the camera: copy-last-frame against two whole-frame-shift
predictions of each window's predicted frames, on a stored evaluation set.

- "constant velocity": the last frame moved by k times the shift between the two conditioning frames;
- "best shift (oracle)": the last frame moved by the whole-frame shift that best matches each true
  frame (``avid.nn.best_shifts``; it reads the truth, so it is a ceiling, not a predictor).

It also prints the per-frame vertical shifts of a few windows beside their actions (the jump arcs).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/camera_shifts.py --data data/coinrun-val --limit 64
"""

from __future__ import annotations

import argparse

import torch

from avid.data import WindowDataset, collate
from avid.metrics.frames import psnr_per_frame
from avid.nn import best_shifts, shift_frame


def one_hot_shift(index: torch.Tensor, radius: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index.clamp(0, 2 * radius), 2 * radius + 1).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/coinrun-val")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--radius", type=int, default=32, help="largest shift searched, pixels per axis")
    ap.add_argument("--show", type=int, default=6, help="windows whose shifts and actions are printed")
    args = ap.parse_args()
    ds = WindowDataset(args.data, frames=10, cond_frames=2, stride=10, limit=args.limit)
    b = collate([ds[j] for j in range(len(ds))])
    r = args.radius
    last = b.first[:, :, -1]
    truth = (b.x0 + 1) / 2
    t = b.x0.shape[2]
    copy = last[:, :, None].expand_as(b.x0)
    step = best_shifts(b.first[:, :, 0], b.first[:, :, 1:], r)[:, 0] - r  # (B, 2): the conditioning frames' move
    k = torch.arange(1, t + 1)[None, :, None]
    cv = (step[:, None, :] * k) + r  # (B, T, 2) indices
    const_vel = shift_frame(last, one_hot_shift(cv[..., 0], r), one_hot_shift(cv[..., 1], r))
    best = best_shifts(last, b.x0, r)
    oracle = shift_frame(last, one_hot_shift(best[..., 0], r), one_hot_shift(best[..., 1], r))
    print(f"{len(b)} windows of {args.data}, {t} predicted frames each")
    for name, video in (("copy last frame", copy), ("constant velocity", const_vel), ("best shift (oracle)", oracle)):
        v = (video + 1) / 2
        psnr = psnr_per_frame(truth, v)
        print(f"{name:>20}: PSNR {psnr.mean():.2f} dB, MSE {(truth - v).pow(2).mean():.5f}")
    frames = torch.cat([b.first, b.x0], dim=2)
    per_step = torch.stack([best_shifts(frames[:, :, j], frames[:, :, j + 1:j + 2], r)[:, 0] - r
                            for j in range(frames.shape[2] - 1)], dim=1)  # (B, T + k - 1, 2)
    for j in range(min(args.show, len(b))):
        print(f"window {j}: rows moved per frame {per_step[j, :, 0].tolist()}, actions {b.actions[j].tolist()}")


if __name__ == "__main__":
    main()
