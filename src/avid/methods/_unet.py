"""Building a method's UNet from the shared size options and the method's input/output layout."""

from __future__ import annotations

from avid.methods.base import Context
from avid.nn import UNet3D, UNetConfig


def build_unet(ctx: Context, unet: dict, in_channels: int, out_channels: int, actions: bool) -> UNet3D:
    """A UNet of the given size (``unet``: UNetConfig fields) wired to this method's layout."""
    fixed = {"in_channels": in_channels, "out_channels": out_channels,
             "num_steps": ctx.diffusion.num_steps,
             "action_kind": ctx.action_kind if actions else "none", "num_actions": ctx.num_actions}
    return UNet3D(UNetConfig(**{**unet, **fixed}))
