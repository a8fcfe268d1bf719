"""The spatio-temporal 3D UNet used for the base model, AVID's adapter and the baselines.

Input ``(B, C_in, T, H, W)``, output ``(B, C_out, T, H, W)``. Conditioning (paper section 3.3): a
learned embedding table of the diffusion step ``i`` and a per-frame action embedding (embedding
table for discrete actions, linear layer for continuous ones) are concatenated and passed through
an MLP; every conv block turns the result into a FiLM scale and shift for each frame. A learned
frame-position embedding is added to the step embedding so the model knows which frame is which.

``patch_size > 1`` adds a space-to-depth stem (pixel-unshuffle), the CPU-friendly layout; the
paper's layouts use ``patch_size=1`` (full resolution).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from einops import rearrange
from torch import nn

from avid.nn.blocks import Attention, Downsample, ResBlock, Upsample, group_norm

ACTION_KINDS = ("none", "discrete", "continuous")


@dataclass
class UNetConfig:
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 64
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1
    attn_from_level: int = 0  # spatial + temporal attention at levels >= this (and the middle)
    attn_heads: int = 4
    attn_head_dim: int = 32
    temporal_kernel: int = 3  # 3: full 3D conv (3,3,3); 1: spatial-only (1,3,3) as in Ho et al.
    patch_size: int = 1
    groups: int = 8
    cond_dim: int = 128
    num_steps: int = 200  # size of the diffusion-step embedding table
    max_frames: int = 32
    action_kind: str = "none"
    num_actions: int = 15  # discrete: number of actions; continuous: action dimension

    def __post_init__(self) -> None:
        if self.action_kind not in ACTION_KINDS:
            raise ValueError(f"action_kind must be one of {ACTION_KINDS}, got {self.action_kind!r}")
        self.channel_mults = list(self.channel_mults)

    @property
    def downscale(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class Conditioning(nn.Module):
    """``(i, actions)`` -> per-frame conditioning vectors ``(B, T, cond_dim)``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        d = cfg.cond_dim
        self.cfg = cfg
        self.step = nn.Embedding(cfg.num_steps, d)
        self.frame = nn.Embedding(cfg.max_frames, d)
        n_in = d
        if cfg.action_kind == "discrete":
            self.action = nn.Embedding(cfg.num_actions, d)
        elif cfg.action_kind == "continuous":
            self.action = nn.Linear(cfg.num_actions, d)
        if cfg.action_kind != "none":
            self.null_action = nn.Parameter(torch.zeros(d))  # "no action" (classifier-free dropout)
            n_in = 2 * d
        self.mlp = nn.Sequential(nn.Linear(n_in, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

    def forward(self, i: torch.Tensor, actions: torch.Tensor | None, frames: int,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        b = i.shape[0]
        e = self.step(i)[:, None, :] + self.frame.weight[None, :frames, :]  # (B, T, D)
        if self.cfg.action_kind == "none":
            return self.mlp(e)
        if actions is None:
            ea = self.null_action.expand(b, frames, -1)
        else:
            ea = self.action(actions if self.cfg.action_kind == "discrete" else actions.float())
            if drop is not None:  # (B,) bool: replace this sample's actions by the null action
                ea = torch.where(drop[:, None, None], self.null_action.to(ea.dtype), ea)
        return self.mlp(torch.cat([e, ea], dim=-1))


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, k = cfg.patch_size, (cfg.temporal_kernel, 3, 3)
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        rb = lambda a, b: ResBlock(a, b, cfg.cond_dim, k, cfg.groups)  # noqa: E731
        attn = lambda c: nn.ModuleList([  # noqa: E731
            Attention(c, cfg.attn_heads, cfg.attn_head_dim, "space", cfg.groups),
            Attention(c, cfg.attn_heads, cfg.attn_head_dim, "time", cfg.groups)])
        self.cond = Conditioning(cfg)
        self.stem = nn.Conv3d(cfg.in_channels * p * p, chs[0], k, padding=tuple(x // 2 for x in k))
        self.down = nn.ModuleList()
        cin = chs[0]
        for lvl, c in enumerate(chs):
            self.down.append(nn.ModuleDict({
                "res": nn.ModuleList([rb(cin if j == 0 else c, c) for j in range(cfg.num_res_blocks)]),
                "attn": attn(c) if lvl >= cfg.attn_from_level else nn.ModuleList(),
                "down": Downsample(c) if lvl < len(chs) - 1 else nn.Identity(),
            }))
            cin = c
        self.mid = nn.ModuleList([rb(chs[-1], chs[-1]), *attn(chs[-1]), rb(chs[-1], chs[-1])])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(chs))):
            c, cout = chs[lvl], chs[max(lvl - 1, 0)]
            self.up.append(nn.ModuleDict({
                "res": nn.ModuleList([rb(2 * c if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]),
                "attn": attn(cout) if lvl >= cfg.attn_from_level else nn.ModuleList(),
                "up": Upsample(cout) if lvl > 0 else nn.Identity(),
            }))
        self.head = nn.Sequential(group_norm(chs[0], cfg.groups), nn.SiLU(),
                                  nn.Conv3d(chs[0], cfg.out_channels * p * p, k, padding=tuple(x // 2 for x in k)))

    # ---- input checks --------------------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, actions: torch.Tensor | None) -> None:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected input (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        if h % cfg.downscale or w % cfg.downscale:
            raise ValueError(f"frame size {h}x{w} must be divisible by {cfg.downscale} for this UNet")
        if t > cfg.max_frames:
            raise ValueError(f"{t} frames exceed this UNet's max_frames={cfg.max_frames}")
        if actions is not None and cfg.action_kind != "none":
            check_actions(actions, b, t, cfg.action_kind, cfg.num_actions)

    # ---- the two halves (ControlNet and the action classifier reuse them) ---------------------
    def embed(self, i: torch.Tensor, actions: torch.Tensor | None, frames: int,
              drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.cond(i, actions, frames, drop)

    def encode(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stem + down path + middle: the bottleneck features and one skip per level."""
        p = self.cfg.patch_size
        if p > 1:
            x = rearrange(x, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)
        h = self.stem(x)
        skips = []
        for level in self.down:
            for block in level["res"]:
                h = block(h, cond)
            for a in level["attn"]:
                h = a(h)
            skips.append(h)
            h = level["down"](h)
        h = self.mid[0](h, cond)
        h = self.mid[2](self.mid[1](h))
        return self.mid[3](h, cond), skips

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        for level, skip in zip(self.up, reversed(skips)):
            h = torch.cat([h, skip], dim=1)
            for block in level["res"]:
                h = block(h, cond)
            for a in level["attn"]:
                h = a(h)
            h = level["up"](h)
        out = self.head(h)
        p = self.cfg.patch_size
        if p > 1:
            out = rearrange(out, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=p, p2=p)
        return out

    def forward(self, x: torch.Tensor, i: torch.Tensor, actions: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, C_in, T, H, W)``; ``i``: ``(B,)`` steps; ``actions``: ``(B, T)`` integer or
        ``(B, T, A)`` float, or None for "no action". Returns ``(B, C_out, T, H, W)``."""
        self.check_inputs(x, actions)
        cond = self.embed(i, actions, x.shape[2], drop)
        h, skips = self.encode(x, cond)
        return self.decode(h, skips, cond)


def check_actions(actions: torch.Tensor, b: int, t: int, kind: str, num_actions: int) -> None:
    """Clear errors for actions that do not match an action space: discrete ``(B, T)`` integers in
    ``[0, num_actions)``, or continuous ``(B, T, num_actions)`` floats."""
    if kind == "discrete":
        if tuple(actions.shape) != (b, t) or actions.dtype.is_floating_point:
            raise ValueError(f"expected integer actions of shape {(b, t)}, got {actions.dtype} {tuple(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= num_actions):
            raise ValueError(f"discrete actions must lie in [0, {num_actions}), got range "
                             f"[{int(actions.min())}, {int(actions.max())}]")
    elif tuple(actions.shape) != (b, t, num_actions):
        raise ValueError(f"expected {num_actions}-D continuous actions of shape {(b, t, num_actions)}, "
                         f"got {tuple(actions.shape)}")


def with_first_frames(*videos: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """Image-to-video input layout: the given videos ``(B, C, T, H, W)`` and the first frames
    ``(B, C, k, H, W)`` repeated over time, concatenated channel-wise: ``(B, C (n + k), T, H, W)``."""
    *videos, first = videos if first is None else (*videos, first)
    t = videos[0].shape[2]
    rep = first.flatten(1, 2)[:, :, None].expand(-1, -1, t, -1, -1)
    return torch.cat([*videos, rep], dim=1)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


__all__ = ["UNet3D", "UNetConfig", "check_actions", "count_parameters", "with_first_frames", "zero_module"]
