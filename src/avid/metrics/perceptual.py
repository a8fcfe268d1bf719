"""LPIPS, FID and FVD in one call, with the standard networks when their weights are on disk.

A metric whose weight file is absent is reported as ``"n/a (weights not found: <file> in <dir>)"``,
never as a number. A file that is present but fails its checksum or has the wrong layout raises
(``WeightsMismatch``, a ``ValueError``): a broken file is a fault to fix, not a missing metric.
"""

from __future__ import annotations

import os

import torch

from avid.metrics import fid as fid_mod
from avid.metrics import fvd as fvd_mod
from avid.metrics.lpips import CONVENTION as LPIPS_CONVENTION
from avid.metrics.lpips import load_lpips, lpips_videos
from avid.metrics.weights import WeightsNotFound

PERCEPTUAL_METRICS = ("lpips", "fid", "fvd")  # the value keys of ``perceptual_metrics``


def perceptual_metrics(real: torch.Tensor, fake: torch.Tensor, first: torch.Tensor | None = None,
                       weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                       batch_size: int = 32, check: bool = True) -> dict:
    """LPIPS, FID and FVD of generated videos against the ground truth.

    real, fake: ``(N, 3, T, H, W)`` in [0, 1], the predicted frames only (LPIPS pairs frames,
        FID pools all frames);
    first: ``(N, 3, k, H, W)`` conditioning frames, prepended to both sets for FVD only;
    batch_size: frames per forward pass (LPIPS, FID); FVD takes ``max(1, batch_size // clip length)``
        clips at a time;
    check: verify the SHA-256 of weight files whose checksum is known.

    Returns ``{"lpips": float | str, "fid": float | str, "fvd": float | str,
    "conventions": {"lpips": str, "fid": str, "fvd": str}}``; a string value is
    ``"n/a (weights not found: <file> in <dir>)"``.
    """
    if real.ndim != 5 or real.shape != fake.shape or real.shape[1] != 3:
        raise ValueError(f"expected real and generated videos (N, 3, T, H, W) of one shape, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    out: dict = {}
    conventions = {"lpips": LPIPS_CONVENTION, "fid": fid_mod.convention(), "fvd": fvd_mod.CONVENTION}
    try:
        out["lpips"] = lpips_videos(real, fake, load_lpips(weights_dir, device, check), batch_size)
    except WeightsNotFound as e:
        out["lpips"] = f"n/a ({e.short})"
    try:
        out["fid"], conventions["fid"] = fid_mod.fid(real, fake, fid_mod.load_inception(weights_dir, device, check),
                                                     batch_size)
    except WeightsNotFound as e:
        out["fid"] = f"n/a ({e.short})"
    try:
        clip_length = real.shape[2] + (0 if first is None else first.shape[2])
        out["fvd"], conventions["fvd"] = fvd_mod.fvd(real, fake, fvd_mod.load_i3d(weights_dir, device, check), first,
                                                     max(1, batch_size // clip_length))
    except WeightsNotFound as e:
        out["fvd"] = f"n/a ({e.short})"
    out["conventions"] = conventions
    return out
