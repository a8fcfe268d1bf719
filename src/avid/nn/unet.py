"""The spatio-temporal 3D UNet used for the base model, AVID's adapter and the baselines.

Input ``(B, C_in, T, H, W)``, output ``(B, C_out, T, H, W)``. Conditioning (paper section 3.3): a
learned embedding table of the diffusion step ``i`` and a per-frame action embedding (embedding
table for discrete actions, linear layer for continuous ones) are concatenated and passed through
an MLP; every conv block turns the result into a FiLM scale and shift for each frame. A learned
frame-position embedding is added to the step embedding so the model knows which frame is which.

``patch_size > 1`` adds a space-to-depth stem (pixel-unshuffle), the CPU-friendly layout; the
paper's layouts use ``patch_size=1`` (full resolution).

``blocks`` picks the block family. ``"cpu"``: the project's compact blocks (GroupNorm, (1|3,3,3)
strided / nearest-neighbour resampling, a norm + conv head). ``"paper"``: the blocks of Video
Diffusion Models' ``Unet3D`` as the official AVID code uses it (RMSNorm conv blocks; channel
LayerNorm before attention; a (1,7,7) stem followed by temporal attention; (1,4,4) strided and
transposed resampling; temporal attention with a T5 relative position bias shared by the whole
network and rotary queries/keys; the stem's features concatenated before a conv block and a 1x1x1
output conv). Both FiLM every conv's output (paper section 3.3). ``spatial_attn`` is the spatial
attention at the levels: ``"full"`` softmax over each frame's pixels or ``"linear"`` (Unet3D's);
the middle block always has full spatial attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from einops import rearrange
from torch import nn

from avid.nn.attention import Attention, LinearAttention, RelativePositionBias
from avid.nn.blocks import (ChannelLayerNorm, Conv3d, Downsample, ResBlock, RMSNorm, Upsample, group_norm,
                            transposed_upsample)
from avid.options import check_numbers

ACTION_KINDS = ("none", "discrete", "continuous")
HISTORY_SCALE = 4.0  # the running sum of T embeddings grows ~T times (or sqrt T) larger: ~1 at 16 frames
BLOCKS = ("cpu", "paper")
SPATIAL_ATTN = ("full", "linear")


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
    blocks: str = "cpu"  # "cpu": the project's compact blocks; "paper": Unet3D's (module docstring)
    spatial_attn: str = "full"  # spatial attention at the levels: "full" or "linear" (middle: full)
    spatial_head_dim: int | None = None  # head width of spatial attention (None: attn_head_dim)
    action_history: bool = False  # each frame also sees the running sum of the actions up to it (Conditioning)

    def __post_init__(self) -> None:
        for name, allowed in (("action_kind", ACTION_KINDS), ("blocks", BLOCKS), ("spatial_attn", SPATIAL_ATTN)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.channel_mults = list(self.channel_mults)
        counts = ("in_channels", "out_channels", "base_channels", "num_res_blocks", "attn_heads", "attn_head_dim",
                  "temporal_kernel", "patch_size", "groups", "cond_dim", "num_steps", "max_frames") + \
            (("num_actions",) if self.action_kind != "none" else ())  # a model without actions may say 0
        check_numbers(self, "unet", whole=counts)
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"unet.channel_mults must be a non-empty list of whole numbers >= 1, got {self.channel_mults}")
        if self.attn_from_level < 0 or (self.spatial_head_dim is not None and self.spatial_head_dim < 1):
            raise ValueError(f"unet.attn_from_level must be >= 0 and unet.spatial_head_dim >= 1 (or null), got "
                             f"{self.attn_from_level} and {self.spatial_head_dim}")

    @property
    def downscale(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)

    @property
    def widths(self) -> list[int]:
        """Channels of each level."""
        return [self.base_channels * m for m in self.channel_mults]

    @property
    def skip_widths(self) -> list[int]:
        """Channels of each skip ``encode`` returns: the stem's first in the paper blocks, then one per level."""
        return ([self.widths[0]] if self.blocks == "paper" else []) + self.widths

    def to_dict(self) -> dict:
        return asdict(self)


class Conditioning(nn.Module):
    """``(i, actions)`` -> per-frame conditioning vectors ``(B, T, cond_dim)``.

    ``action_history``: frame ``t``'s action embedding also gets the running sum of a second embedding
    of the actions ``0..t`` (zero at initialisation). Where an action moves something by a step (a
    robot's end-effector deltas, a platformer's runs), frame ``t`` shows the sum of the steps so far;
    a frame's own action alone leaves that integration to the network's few temporal layers."""

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
        if cfg.action_history and cfg.action_kind != "none":
            self.history = type(self.action)(cfg.num_actions, d)
            nn.init.zeros_(self.history.weight)
            if getattr(self.history, "bias", None) is not None:
                nn.init.zeros_(self.history.bias)
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
            a = actions if self.cfg.action_kind == "discrete" else actions.float()
            ea = self.action(a)
            if self.cfg.action_history:
                ea = ea + self.history(a).cumsum(dim=1) / HISTORY_SCALE
            if drop is not None:  # (B,) bool: replace this sample's actions by the null action
                ea = torch.where(drop[:, None, None], self.null_action.to(ea.dtype), ea)
        return self.mlp(torch.cat([e, ea], dim=-1))


class UNet3D(nn.Module):
    channels_last = False  # inputs to channels-last 3D memory (``tune_networks``)

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        paper = cfg.blocks == "paper"
        p, k = cfg.patch_size, (cfg.temporal_kernel, 3, 3)
        chs = cfg.widths
        norm = "rms" if paper else "group"
        rb = lambda a, b: ResBlock(a, b, cfg.cond_dim, k, cfg.groups, norm)  # noqa: E731
        self.cond = Conditioning(cfg)
        if paper:  # one relative position bias for every temporal attention
            self.time_bias = RelativePositionBias(cfg.attn_heads)
            stem_k = (cfg.temporal_kernel, 7, 7)
            self.stem = Conv3d(cfg.in_channels * p * p, chs[0], stem_k, padding=tuple(x // 2 for x in stem_k))
            self.stem_attn = self._temporal(chs[0])
        else:
            self.stem = Conv3d(cfg.in_channels * p * p, chs[0], k, padding=tuple(x // 2 for x in k))
        self.down = nn.ModuleList()
        cin = chs[0]
        for lvl, c in enumerate(chs):
            self.down.append(nn.ModuleDict({
                "res": nn.ModuleList([rb(cin if j == 0 else c, c) for j in range(cfg.num_res_blocks)]),
                "attn": self._attention(c, cfg.spatial_attn) if lvl >= cfg.attn_from_level else nn.ModuleList(),
                "down": (Downsample(c, 4 if paper else 3) if lvl < len(chs) - 1 else nn.Identity()),
            }))
            cin = c
        self.mid = nn.ModuleList([rb(chs[-1], chs[-1]), *self._attention(chs[-1], "full"), rb(chs[-1], chs[-1])])
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(chs))):
            c, cout = chs[lvl], chs[max(lvl - 1, 0)]
            self.up.append(nn.ModuleDict({  # built in this order: the random init follows it
                "res": nn.ModuleList([rb(2 * c if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]),
                "attn": self._attention(cout, cfg.spatial_attn) if lvl >= cfg.attn_from_level else nn.ModuleList(),
                "up": ((transposed_upsample(cout) if paper else Upsample(cout)) if lvl > 0 else nn.Identity()),
            }))
        cout = cfg.out_channels * p * p
        if paper:  # the stem's features join the decoder's output: conv block, then a 1x1x1 conv
            self.head = nn.Sequential(Conv3d(2 * chs[0], chs[0], k, padding=tuple(x // 2 for x in k)),
                                      RMSNorm(chs[0]), nn.SiLU(), Conv3d(chs[0], cout, 1))
        else:
            self.head = nn.Sequential(group_norm(chs[0], cfg.groups), nn.SiLU(),
                                      Conv3d(chs[0], cout, k, padding=tuple(x // 2 for x in k)))

    def _norm(self, c: int) -> nn.Module:
        return ChannelLayerNorm(c) if self.cfg.blocks == "paper" else group_norm(c, self.cfg.groups)

    def _temporal(self, c: int) -> Attention:
        cfg = self.cfg
        if cfg.blocks == "paper":
            return Attention(c, cfg.attn_heads, cfg.attn_head_dim, "time", self._norm(c), out_bias=False,
                             rotary_dim=min(32, cfg.attn_head_dim) // 2 * 2)
        return Attention(c, cfg.attn_heads, cfg.attn_head_dim, "time", self._norm(c))

    def _attention(self, c: int, spatial: str) -> nn.ModuleList:
        """Spatial then temporal attention at width ``c``."""
        cfg = self.cfg
        d = cfg.spatial_head_dim or cfg.attn_head_dim
        if spatial == "linear":
            space = LinearAttention(c, cfg.attn_heads, d, self._norm(c))
        else:
            space = Attention(c, cfg.attn_heads, d, "space", self._norm(c), out_bias=cfg.blocks != "paper")
        return nn.ModuleList([space, self._temporal(c)])

    def _attend(self, modules, h: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        for a in modules:
            h = a(h, bias) if isinstance(a, Attention) and a.axis == "time" else a(h)
        return h

    def _time_bias(self, frames: int) -> torch.Tensor | None:
        return self.time_bias(frames) if self.cfg.blocks == "paper" else None

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
        """Stem + down path + middle: the bottleneck features and the skips (``cfg.skip_widths``:
        the stem's first in the paper blocks, then one per level)."""
        p = self.cfg.patch_size
        if p > 1:
            x = rearrange(x, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)
        bias = self._time_bias(x.shape[2])
        h = self.stem(x)
        skips = []
        if self.cfg.blocks == "paper":
            h = self.stem_attn(h, bias)
            skips.append(h)
        for level in self.down:
            for block in level["res"]:
                h = block(h, cond)
            h = self._attend(level["attn"], h, bias)
            skips.append(h)
            h = level["down"](h)
        h = self.mid[0](h, cond)
        h = self._attend(self.mid[1:3], h, bias)
        return self.mid[3](h, cond), skips

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        bias = self._time_bias(h.shape[2])
        for level, skip in zip(self.up, reversed(skips)):
            h = torch.cat([h, skip], dim=1)
            for block in level["res"]:
                h = block(h, cond)
            h = self._attend(level["attn"], h, bias)
            h = level["up"](h)
        if self.cfg.blocks == "paper":
            h = torch.cat([h, skips[0]], dim=1)
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
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        cond = self.embed(i, actions, x.shape[2], drop)
        h, skips = self.encode(x, cond)
        return self.decode(h, skips, cond)


def check_actions(actions: torch.Tensor, b: int, t: int, kind: str, num_actions: int) -> None:
    """Clear errors for actions that do not match an action space: discrete ``(B, T)`` integers in
    ``[0, num_actions)``, or continuous ``(B, T, num_actions)`` floats."""
    if kind == "discrete":
        if tuple(actions.shape) != (b, t) or actions.dtype.is_floating_point:
            raise ValueError(f"expected integer actions of shape {(b, t)}, got {actions.dtype} {tuple(actions.shape)}")
        unchecked = torch.compiler.is_compiling() or not actions.numel()  # a compiled graph reads no values
        if not unchecked and (int(actions.min()) < 0 or int(actions.max()) >= num_actions):
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


def to_channels_last(module: nn.Module) -> nn.Module:
    """Every 5-D weight of ``module`` in channels-last 3D memory (``Module.to(memory_format=...)``
    refuses modules that also hold weights of other ranks)."""
    for p in module.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return module


def tune_networks(module: nn.Module, compile: bool = False, channels_last: bool = False, **compile_options) -> int:
    """Every ``UNet3D`` inside ``module``: ``channels_last`` keeps its weights and activations in
    channels-last 3D memory (for CUDA: the (1, k, k) convolutions then fold frames into the batch
    without a copy and reach cuDNN's NHWC kernels); ``compile`` compiles its forward in place
    (``nn.Module.compile(**compile_options)``: parameter names and checkpoints stay as they are).
    Returns how many."""
    nets = [m for m in module.modules() if isinstance(m, UNet3D)]
    for net in nets:
        if channels_last:
            to_channels_last(net)
            net.channels_last = True
        if compile:
            net.compile(**compile_options)
    return len(nets)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


__all__ = ["UNet3D", "UNetConfig", "check_actions", "count_parameters", "to_channels_last", "tune_networks",
           "with_first_frames", "zero_module"]
