"""Attention over the frames of a video feature map ``(B, C, T, H, W)``: softmax attention over
space (each frame's pixels) or time (each pixel's frames), linear attention over space, and the
temporal position terms of Video Diffusion Models' Unet3D (Ho et al., 2022): a T5-style relative
position bias shared by every temporal attention, and rotary embeddings of queries and keys.
Every module here is pre-norm and residual: ``x + attn(norm(x))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head softmax self-attention over space (each frame) or time (each pixel).

    ``norm``: the pre-norm module; ``rotary_dim > 0`` rotates the first ``rotary_dim`` features of
    each head's queries and keys by their frame index (time attention); ``forward``'s ``bias``
    ``(heads, T, T)`` is added to the attention logits (the relative position bias)."""

    def __init__(self, channels: int, heads: int, head_dim: int, axis: str, norm: nn.Module,
                 out_bias: bool = True, rotary_dim: int = 0) -> None:
        super().__init__()
        if axis not in ("space", "time"):
            raise ValueError(f"axis must be 'space' or 'time', got {axis!r}")
        self.axis, self.heads = axis, heads
        inner = heads * head_dim
        self.norm = norm
        self.qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.out = nn.Linear(inner, channels, bias=out_bias)
        self.rotary = Rotary(rotary_dim) if rotary_dim else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        pattern = "b c t h w -> (b t) (h w) c" if self.axis == "space" else "b c t h w -> (b h w) t c"
        tokens = rearrange(self.norm(x), pattern)
        q, k, v = _heads(self.qkv, tokens, self.heads)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        if bias is not None:
            bias = bias.to(q.dtype)
        o = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), "n k s d -> n s (k d)")
        o = self.out(o)
        back = "(b t) (h w) c -> b c t h w" if self.axis == "space" else "(b h w) t c -> b c t h w"
        return x + rearrange(o, back, b=b, t=t, h=h, w=w)


def _heads(qkv: nn.Linear, tokens: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """``(N, S, C)`` tokens -> queries, keys, values ``(N, heads, S, D)``. The projection runs on one
    contiguous ``(N S, C)`` matrix: on a permuted view PyTorch falls back to a batched matmul
    against the weight expanded per token, several times slower on CPU."""
    n, s, c = tokens.shape
    out = qkv(tokens.reshape(n * s, c)).view(n, s, 3, heads, -1)
    return out.permute(2, 0, 3, 1, 4).unbind(0)


class LinearAttention(nn.Module):
    """Linear attention over each frame's pixels (Shen et al., 2021, "efficient attention"; the
    per-level spatial attention of Unet3D): queries softmaxed over features, keys over positions,
    ``out = (k v^T)^T q``: cost linear in the number of pixels. 1x1 projections, pre-norm, residual."""

    def __init__(self, channels: int, heads: int, head_dim: int, norm: nn.Module) -> None:
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        inner = heads * head_dim
        self.norm = norm
        self.qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = rearrange(self.norm(x), "b c t h w -> (b t) (h w) c")
        q, k, v = _heads(self.qkv, tokens, self.heads)
        q = q.softmax(dim=-1) * self.scale  # over features
        k = k.softmax(dim=-2)  # over positions
        o = q @ (k.transpose(-1, -2) @ v)  # (n, heads, s, d): each query reads the (d x d) context
        o = self.out(rearrange(o, "n k s d -> n s (k d)"))
        return x + rearrange(o, "(b t) (h w) c -> b c t h w", b=b, t=t, h=h, w=w)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., 2021) of the first ``dim`` features of ``(..., S, D)``
    by position ``0..S-1``: feature pairs ``(j, j + dim/2)`` rotate by ``s * 10000^(-2j/dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dimension must be even, got {dim}")
        self.dim = dim
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(0, dim, 2).float() / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-2]
        angles = torch.arange(s, device=x.device, dtype=self.inv_freq.dtype)[:, None] * self.inv_freq  # (S, dim/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        half = self.dim // 2
        x = x.contiguous()
        a, b, rest = x[..., :half], x[..., half:self.dim], x[..., self.dim:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos, rest], dim=-1)


class RelativePositionBias(nn.Module):
    """A learned bias per head for each query-key frame offset, in T5's buckets (Raffel et al.,
    2020): half the buckets for each direction, exact offsets below ``buckets // 4``, log-spaced up
    to ``max_distance``. One table is shared by every temporal attention of the network."""

    def __init__(self, heads: int, buckets: int = 32, max_distance: int = 32) -> None:
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.table = nn.Embedding(buckets, heads)

    def bucket(self, offset: torch.Tensor) -> torch.Tensor:
        """``offset = key - query`` frame index -> bucket index."""
        half = self.buckets // 2
        exact = half // 2
        side = (offset > 0).long() * half
        n = offset.abs()
        log_part = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
                            * (half - exact)).long()
        return side + torch.where(n < exact, n, log_part.clamp(max=half - 1))

    def forward(self, frames: int) -> torch.Tensor:
        """``(heads, T, T)``: the bias added to the logits of query frame i for key frame j."""
        pos = torch.arange(frames, device=self.table.weight.device)
        return rearrange(self.table(self.bucket(pos[None, :] - pos[:, None])), "i j h -> h i j")
