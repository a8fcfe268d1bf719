"""Building blocks of the spatio-temporal 3D UNet (Ho et al., 2022; paper section 3.3).

Feature maps are ``(B, C, T, H, W)``; the per-frame conditioning is ``(B, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


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

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: tuple[int, int, int], groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, padding=tuple(k // 2 for k in kernel))
        self.norm = group_norm(cout, groups)
        self.film = FiLM(cond_dim, cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return F.silu(self.film(self.norm(self.conv(x)), cond))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: tuple[int, int, int], groups: int) -> None:
        super().__init__()
        self.block1 = ConvBlock(cin, cout, cond_dim, kernel, groups)
        self.block2 = ConvBlock(cout, cout, cond_dim, kernel, groups)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block2(self.block1(x, cond), cond)


class Attention(nn.Module):
    """Multi-head self-attention over space (each frame) or time (each pixel), pre-norm, residual."""

    def __init__(self, channels: int, heads: int, head_dim: int, axis: str, groups: int) -> None:
        super().__init__()
        if axis not in ("space", "time"):
            raise ValueError(f"axis must be 'space' or 'time', got {axis!r}")
        self.axis, self.heads = axis, heads
        inner = heads * head_dim
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        pattern = "b c t h w -> (b t) (h w) c" if self.axis == "space" else "b c t h w -> (b h w) t c"
        tokens = rearrange(self.norm(x), pattern)
        q, k, v = rearrange(self.qkv(tokens), "n s (three k d) -> three n k s d", three=3, k=self.heads)
        o = rearrange(F.scaled_dot_product_attention(q, k, v), "n k s d -> n s (k d)")
        o = self.out(o)
        back = "(b t) (h w) c -> b c t h w" if self.axis == "space" else "(b h w) t c -> b c t h w"
        return x + rearrange(o, back, b=b, t=t, h=h, w=w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))
