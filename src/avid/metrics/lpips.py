"""LPIPS (Zhang et al. 2018), version 0.1, VGG16 backbone, in plain PyTorch.

    d(x, y) = sum_l mean_{h,w} w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2

with ``f_l`` the 5 relu taps of VGG16 (relu1_2 ... relu5_3), unit-normalised over channels
(eps 1e-10), ``w_l`` the non-negative 1x1 "linear" heads, on inputs mapped to [-1, 1] and then
shifted/scaled by the v0.1 scaling layer. Images are compared at their own resolution (no resize),
as the official package does.

Weights: the backbone from torchvision's ``vgg16-397923af.pth`` (``features.*`` keys), the heads
from the official ``vgg.pth`` (v0.1, keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``: the
official ``NetLinLayer`` is ``Sequential(Dropout, Conv2d)``, so the conv sits at index 1).
"""

from __future__ import annotations

import os

import torch
from einops import rearrange
from torch import nn

from avid.metrics.networks.vgg import CHANNELS, VGG16Features
from avid.metrics.weights import WeightsMismatch, find_all, load_exact, read_state_dict

CONVENTION = ("LPIPS v0.1, VGG16 backbone (torchvision vgg16-397923af.pth) + official v0.1 linear heads "
              "(vgg.pth); frames in [0,1] mapped to [-1,1]; each predicted frame against its ground truth "
              "at native resolution; mean over frames")


class ScalingLayer(nn.Module):
    """The v0.1 input normalisation: ``(x - shift) / scale`` on inputs in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """One head: ``model = Sequential(Dropout, Conv2d(c, 1, 1, bias=False))`` (official key layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Heads(nn.Module):
    """The five heads with the official attribute names, so ``state_dict()`` reads ``lin0.model.1.weight``..."""

    def __init__(self) -> None:
        super().__init__()
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(c))

    def __getitem__(self, k: int) -> NetLinLayer:
        return getattr(self, f"lin{k}")


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Features()
        self.heads = Heads()
        self.eval().requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in [0, 1] -> the backbone's input: ``2x - 1``, then the scaling layer."""
        return self.scaling_layer(2 * x - 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images ``x, y (N, 3, H, W)`` in [0, 1] -> LPIPS distance per pair ``(N,)``."""
        fx, fy = self.net(self.preprocess(x)), self.net(self.preprocess(y))
        return sum(self.heads[k]((_unit(a) - _unit(b)).pow(2)).mean((1, 2, 3)) for k, (a, b) in enumerate(zip(fx, fy)))


def load_lpips(weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               check: bool = True) -> LPIPS:
    """LPIPS-VGG from the two published files (see ``avid.metrics.weights``); raises
    ``WeightsNotFound`` / ``WeightsMismatch`` with the file name when one is absent or wrong."""
    model = LPIPS()
    vgg_path, lin_path = find_all(["vgg16", "lpips_vgg"], weights_dir, check=check)  # names every absent file
    vgg = read_state_dict(vgg_path)
    other = sorted(k for k in vgg if not k.startswith(("features.", "classifier.")))
    if other:
        raise WeightsMismatch(f"{vgg_path} is not a torchvision VGG16 state dict: unexpected keys {other[:6]}")
    load_exact(model.net, {k: v for k, v in vgg.items() if k.startswith("features.")}, vgg_path)
    load_exact(model.heads, read_state_dict(lin_path), lin_path)
    return model.to(device)


def _check_videos(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.ndim != 5 or real.shape != fake.shape or real.shape[1] != 3:
        raise ValueError(f"expected two RGB videos (N, 3, T, H, W) of one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")


@torch.no_grad()
def lpips_per_frame(real: torch.Tensor, fake: torch.Tensor, net: LPIPS, batch_size: int = 64) -> torch.Tensor:
    """LPIPS of every frame ``(N * T,)`` of videos ``(N, 3, T, H, W)`` in [0, 1]."""
    _check_videos(real, fake)
    device = next(net.parameters()).device
    a, b = (rearrange(v.float(), "n c t h w -> (n t) c h w") for v in (real, fake))
    out = [net(a[i:i + batch_size].to(device), b[i:i + batch_size].to(device)).cpu()
           for i in range(0, a.shape[0], batch_size)]
    return torch.cat(out)


def lpips_videos(real: torch.Tensor, fake: torch.Tensor, net: LPIPS, batch_size: int = 64) -> float:
    """Mean LPIPS over all frames of videos ``(N, 3, T, H, W)`` in [0, 1]."""
    return float(lpips_per_frame(real, fake, net, batch_size).mean())
