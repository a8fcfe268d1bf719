"""ControlNet and ControlNet-Small (paper section 4.1, after Zhang et al., 2023). Requires the
base model's parameters.

The base network is frozen (a submodule with ``requires_grad=False``). A trainable,
action-conditioned encoder reads the same input (``x_i`` and the first frames); its middle features
and its skip of every level enter the frozen base decoder through zero-initialised 1x1x1
convolutions, added to the base's own:

    final = decode_pre(h_pre + Z_mid(h_ctrl), [s_pre + Z_l(s_ctrl) for each level l])

so at initialisation ``final`` is the base prediction exactly.

- ``controlnet``: the trainable encoder is a copy of the base's conditioning and encoder,
  initialised from its weights, with an action embedding concatenated to its step embedding.
- ``controlnet-small``: its own narrower encoder (``unet`` options over the base's layout: same
  number of levels and stem patch size), so the 1x1x1 convolutions are learned projections to the
  base widths; sized to match AVID's trainable parameters (``configs/sizes``).
"""

from __future__ import annotations

import torch
from torch import nn

from avid.methods._encoder import encoder_only, level_widths
from avid.methods._parameter_access import action_conditioned_copy, load_frozen_base
from avid.methods._unet import build_unet
from avid.methods.base import Context, Method
from avid.nn import UNet3D, UNetConfig, with_first_frames, zero_module


class ControlBranch(nn.Module):
    """The trainable side: ``(x (B, C_in, T, H, W), i (B,), actions)`` -> the residuals to add to
    the base's middle features ``(B, C_mid, T, h, w)`` and to each level's skip."""

    def __init__(self, encoder: UNet3D, base_cfg: UNetConfig) -> None:
        super().__init__()
        ecfg = encoder.cfg
        if (len(ecfg.channel_mults), ecfg.patch_size, ecfg.blocks) != (
                len(base_cfg.channel_mults), base_cfg.patch_size, base_cfg.blocks):
            raise ValueError(
                f"the control encoder must have the base's levels, stem and blocks to join its decoder: base has "
                f"{len(base_cfg.channel_mults)} levels, patch_size {base_cfg.patch_size} and {base_cfg.blocks!r} "
                f"blocks, got {len(ecfg.channel_mults)}, {ecfg.patch_size} and {ecfg.blocks!r}")
        if ecfg.in_channels != base_cfg.in_channels:
            raise ValueError(f"the control encoder reads the base's input ({base_cfg.in_channels} channels), "
                             f"got {ecfg.in_channels}")
        widths = level_widths(encoder)
        base_widths = base_cfg.skip_widths
        self.encoder = encoder
        self.zero_skips = nn.ModuleList(zero_module(nn.Conv3d(a, b, 1)) for a, b in zip(widths, base_widths))
        self.zero_mid = zero_module(nn.Conv3d(widths[-1], base_widths[-1], 1))

    def forward(self, x: torch.Tensor, i: torch.Tensor, actions: torch.Tensor | None):
        self.encoder.check_inputs(x, actions)
        h, skips = self.encoder.encode(x, self.encoder.embed(i, actions, x.shape[2]))
        return self.zero_mid(h), [z(s) for z, s in zip(self.zero_skips, skips)]


def small_control_branch(ctx: Context, base_cfg: UNetConfig, unet: dict) -> ControlBranch:
    """ControlNet-Small's trainable part: a fresh action-conditioned encoder of ``unet`` options
    (over the base's layout) with learned zero-initialised projections to the base widths."""
    encoder = build_unet(ctx, {**base_cfg.to_dict(), **unet}, base_cfg.in_channels, ctx.channels, actions=True)
    return ControlBranch(encoder_only(encoder), base_cfg)


class ControlNet(Method):
    name = "controlnet"
    needs_parameters = True
    uses_base = False  # runs its own frozen copy of the base network, never the black box

    def __init__(self, ctx: Context, small: bool = False, unet: dict | None = None) -> None:
        super().__init__(ctx)
        if unet is not None and not small:
            raise ValueError("controlnet copies the base encoder; `unet` sizes only controlnet-small")
        self.small = small
        self.base_net, self.output = load_frozen_base(ctx, self.name)
        base_cfg = self.base_net.cfg
        if small:
            self.unet_options = dict(unet) if unet is not None else {"base_channels": base_cfg.base_channels // 2}
            self.control = small_control_branch(ctx, base_cfg, self.unet_options)
        else:
            self.unet_options = None
            self.control = ControlBranch(encoder_only(action_conditioned_copy(self.base_net, ctx)), base_cfg)

    def train(self, mode: bool = True) -> "ControlNet":
        super().train(mode)
        self.base_net.eval()  # frozen: always in inference mode
        return self

    def predict(self, x_i, i, first, actions):
        x = with_first_frames(x_i, first=first)
        base = self.base_net
        base.check_inputs(x, None)
        with torch.no_grad():  # the frozen encoder; gradients reach the control branch via the decoder
            cond = base.embed(i, None, x.shape[2])
            h, skips = base.encode(x, cond)
        d_mid, d_skips = self.control(x, i, actions)
        out = base.decode(h + d_mid, [s + d for s, d in zip(skips, d_skips)], cond)
        return self.output(out, first, x_i, i, self.diffusion.from_x0) if self.output else (out, {})


class ControlNetSmall(ControlNet):
    """ControlNet with its own narrower encoder, sized to match AVID's trainable parameters."""

    name = "controlnet-small"
    size_entry = "controlnet-small"

    def __init__(self, ctx: Context, small: bool = True, unet: dict | None = None) -> None:
        super().__init__(ctx, small, unet)
