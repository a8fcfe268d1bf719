"""Building blocks of the spatio-temporal 3D UNet (Ho et al., 2022; paper section 3.3).

Feature maps are ``(B, C, T, H, W)``; the per-frame conditioning is ``(B, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _frames_in_batch(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B T, C, H, W)``."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _frames_back(y: torch.Tensor, t: int) -> torch.Tensor:
    """``(B T, C, H, W)`` -> ``(B, C, T, H, W)``."""
    bt, c, h, w = y.shape
    return y.reshape(bt // t, t, c, h, w).transpose(1, 2)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters, same initialisation) that runs a kernel of temporal extent 1
    as a 2D convolution over every frame: on CPU PyTorch sends (1, k, k) 3D convolutions to its
    slow reference kernel, 2-5x slower than the 2D one with the frames folded into the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size[0] != 1 or self.stride[0] != 1 or self.padding[0] != 0 or self.padding_mode != "zeros":
            return super().forward(x)
        y = F.conv2d(_frames_in_batch(x), self.weight[:, :, 0], self.bias, self.stride[1:], self.padding[1:],
                     self.dilation[1:], self.groups)
        return _frames_back(y, x.shape[2])


class ConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` that runs a (1, k, k) kernel as a 2D transposed convolution per frame."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.kernel_size[0] != 1 or self.stride[0] != 1 or self.padding[0] != 0 or output_size is not None:
            return super().forward(x, output_size)
        y = F.conv_transpose2d(_frames_in_batch(x), self.weight[:, :, 0], self.bias, self.stride[1:],
                               self.padding[1:], self.output_padding[1:], self.groups, self.dilation[1:])
        return _frames_back(y, x.shape[2])


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class RMSNorm(nn.Module):
    """Each position's channel vector scaled to norm sqrt(C), times a learned gain (Unet3D's conv blocks)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * (x.shape[1] ** 0.5) * self.gain


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each position, learned gain, no bias (Unet3D's pre-norm)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gain


class FiLM(nn.Module):
    """Per-frame scale and shift from the conditioning vector (Perez et al., 2018)."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * channels))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = rearrange(self.proj(cond), "b t (two c) -> two b c t 1 1", two=2)
        return h * (1 + scale) + shift


class ConvBlock(nn.Module):
    """3D conv -> GroupNorm -> FiLM(gamma^tau, beta^tau per frame) -> SiLU."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: tuple[int, int, int], groups: int,
                 norm: str = "group") -> None:
        super().__init__()
        self.conv = Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel))
        self.norm = group_norm(cout, groups) if norm == "group" else RMSNorm(cout)
        self.film = FiLM(cond_dim, cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return F.silu(self.film(self.norm(self.conv(x)), cond))


class ResBlock(nn.Module):
    """Two conv blocks and a (1x1x1 where the width changes) skip. ``norm``: "group" or "rms"."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: tuple[int, int, int], groups: int,
                 norm: str = "group") -> None:
        super().__init__()
        self.block1 = ConvBlock(cin, cout, cond_dim, kernel, groups, norm)
        self.block2 = ConvBlock(cout, cout, cond_dim, kernel, groups, norm)
        self.skip = Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block2(self.block1(x, cond), cond)


class Downsample(nn.Module):
    """Halve height and width: a strided (1, k, k) convolution (k = 3, or 4 as in Unet3D)."""

    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        self.conv = Conv3d(channels, channels, (1, k, k), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest neighbours then a (1, 3, 3) convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


def transposed_upsample(channels: int) -> nn.ConvTranspose3d:
    """Double height and width with a (1, 4, 4) transposed convolution of stride 2 (Unet3D's)."""
    return ConvTranspose3d(channels, channels, (1, 4, 4), (1, 2, 2), (0, 1, 1))
