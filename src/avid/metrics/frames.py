"""Frame metrics (paper section 4.2): PSNR and SSIM per predicted frame, averaged.

Videos are float ``(N, C, T, H, W)`` in [0, 1] (``data_range=1``); only the predicted frames are
passed in, never the conditioning frames. PSNR of identical frames is infinite; it is capped at
``PSNR_CAP`` dB (the value of an MSE of 1e-10) so averages stay finite.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torchmetrics.functional.image import structural_similarity_index_measure as _ssim

from avid.metrics.bootstrap import bootstrap_ci

PSNR_CAP = 100.0


def _frames(video: torch.Tensor) -> torch.Tensor:
    if video.ndim != 5:
        raise ValueError(f"expected videos (N, C, T, H, W), got {tuple(video.shape)}")
    return rearrange(video.float(), "n c t h w -> (n t) c h w")


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape:
        raise ValueError(f"real and generated videos differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")


def per_trajectory(per_frame: torch.Tensor, n: int) -> torch.Tensor:
    """The mean over each trajectory's frames ``(n,)`` of a per-frame score ``(n * T,)``, laid out as the
    per-frame functions give it (``_frames``: trajectory-major)."""
    return per_frame.reshape(n, -1).mean(1)


def psnr_per_frame(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of every frame ``(N * T,)``, from each frame's MSE, capped at ``PSNR_CAP``."""
    _check(real, fake)
    return _psnr(_frame_mse(real, fake))


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return (10 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_CAP / 10)))).clamp(max=PSNR_CAP)


def ssim_per_frame(real: torch.Tensor, fake: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """SSIM of every frame ``(N * T,)`` (Gaussian window 11, sigma 1.5, ``data_range=1``), ``chunk``
    frames at a time (all 8192 frames of 1024 trajectories at once took 18 GB; 256 frames of 64x64
    at a time peak 1.1 GB above the inputs, 64 frames 0.28 GB, no slower)."""
    _check(real, fake)
    a, b = _frames(fake), _frames(real)
    return torch.cat([_ssim(a[i:i + chunk], b[i:i + chunk], data_range=1.0, reduction="none")
                      for i in range(0, a.shape[0], chunk)])


def frame_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Mean PSNR and SSIM over all predicted frames."""
    return {"psnr": float(psnr_per_frame(real, fake).mean()), "ssim": float(ssim_per_frame(real, fake).mean())}


def _frame_mse(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (_frames(real) - _frames(fake)).pow(2).flatten(1).mean(1)


def against_copy_last(real: torch.Tensor, fakes: dict[str, torch.Tensor], copy: torch.Tensor) -> dict:
    """Where the copy-last-frame baseline's score comes from. A predicted frame whose ground truth
    equals the last conditioning frame ("still": nothing moved, exactly, in 8 bits) is copied exactly
    by the baseline and scored at ``PSNR_CAP``, so a few still frames dominate its mean PSNR. Returns
    ``{"still_frames": fraction, "psnr_moving": {name: mean PSNR over the other frames},
    "beats_copy_last": {name: fraction of frames with a lower MSE than the baseline's},
    "psnr_vs_copy": {name: [mean PSNR minus the baseline's, low, high]}}``, the last a paired 95%
    percentile-bootstrap interval over trajectories (each trajectory's frames stay together, and a
    method and the baseline are drawn with the same trajectories); the names are those of ``fakes``
    plus ``"copy"`` in ``psnr_moving``."""
    for fake in (copy, *fakes.values()):
        _check(real, fake)
    copy_mse = _frame_mse(real, copy)
    moving = copy_mse > 0
    out = {"still_frames": float((~moving).float().mean()), "psnr_moving": {}, "beats_copy_last": {},
           "psnr_vs_copy": {}}
    for name, fake in {**fakes, "copy": copy}.items():
        mse = copy_mse if fake is copy else _frame_mse(real, fake)
        out["psnr_moving"][name] = float(_psnr(mse)[moving].mean()) if bool(moving.any()) else float("nan")
        if fake is not copy:
            out["beats_copy_last"][name] = float((mse < copy_mse).float().mean())
            diff = per_trajectory(_psnr(mse) - _psnr(copy_mse), real.shape[0]).double().numpy()
            out["psnr_vs_copy"][name] = [float(diff.mean()), *bootstrap_ci(np.mean, diff)]
    return out
