"""FID (Heusel et al. 2017) over the frames of videos, with the TF-ported FID Inception-v3.

Convention (returned as ``info``):

- network: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (TF ``inception-2015-12-05``),
  2048-d pool3 features;
- every frame of every video is one image (``N * T`` images per set; the caller passes the
  predicted frames only);
- frames in [0, 1] are resized to 299x299 with **bilinear, align_corners=False, no antialias**
  (what pytorch-fid does; torchmetrics' FID antialiases by default, and the original TF code
  resized with TF's bilinear op). For Coinrun's 64x64 frames the resize is an upsampling, where
  antialiasing makes no difference; it matters only for frames larger than 299;
- then scaled to [-1, 1]; Fréchet distance of the two feature sets (``avid.metrics.frechet``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from einops import rearrange

from avid.metrics.frechet import frechet_distance
from avid.metrics.networks.inception import FIDInceptionV3
from avid.metrics.weights import find_weights, load_exact, read_state_dict

INCEPTION_SIZE = 299


def convention(size: int | None = None, antialias: bool = False) -> str:
    return (f"TF Inception-v3 (pytorch-fid pt_inception-2015-12-05-6726825d.pth), 2048-d pool3 "
            f"features of every frame, bilinear resize to {size or INCEPTION_SIZE}x{size or INCEPTION_SIZE} "
            f"(align_corners=False, antialias={antialias}), inputs scaled to [-1,1]")


def load_inception(weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                   check: bool = True) -> FIDInceptionV3:
    """The FID Inception from ``pt_inception-2015-12-05-6726825d.pth`` (exact key layout)."""
    net = FIDInceptionV3()
    path = find_weights("inception_fid", weights_dir, check=check)
    load_exact(net, read_state_dict(path), path)
    return net.to(device)


def frames_of(videos: torch.Tensor) -> torch.Tensor:
    """Videos ``(N, 3, T, H, W)`` -> frames ``(N * T, 3, H, W)``."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected RGB videos (N, 3, T, H, W), got {tuple(videos.shape)}")
    return rearrange(videos.float(), "n c t h w -> (n t) c h w")


@torch.no_grad()
def inception_features(images: torch.Tensor, net: FIDInceptionV3, batch_size: int = 32,
                       size: int | None = None, antialias: bool = False) -> torch.Tensor:
    """Images ``(M, 3, H, W)`` in [0, 1] -> pool features ``(M, 2048)`` (float64, CPU)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (M, 3, H, W), got {tuple(images.shape)}")
    size = size or INCEPTION_SIZE
    device = next(net.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device, torch.float32)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        out.append(net(2 * x - 1).double().cpu())
    return torch.cat(out)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between feature sets ``(M1, 2048)`` and ``(M2, 2048)``."""
    return frechet_distance(real, fake)


def fid(real: torch.Tensor, fake: torch.Tensor, net: FIDInceptionV3, batch_size: int = 32,
        size: int | None = None, antialias: bool = False) -> tuple[float, str]:
    """FID over all frames of videos ``(N, 3, T, H, W)`` in [0, 1]; returns ``(value, info)``."""
    feats = [inception_features(frames_of(v), net, batch_size, size, antialias) for v in (real, fake)]
    counts = f"; {feats[0].shape[0]} real and {feats[1].shape[0]} generated frames"
    return fid_from_features(*feats), convention(size, antialias) + counts
