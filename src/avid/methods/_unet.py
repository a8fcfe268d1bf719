"""Building a method's UNet from the shared size options and the method's input/output layout."""

from __future__ import annotations

from avid.methods.base import Context
from avid.nn import UNet3D, UNetConfig, zero_module
from avid.options import build


def build_unet(ctx: Context, unet: dict, in_channels: int, out_channels: int, actions: bool,
               zero_output: bool = False) -> UNet3D:
    """A UNet of the given size (``unet``: UNetConfig fields) wired to this method's layout.
    ``zero_output``: the last convolution starts at zero (residual outputs start as what they add to)."""
    fixed = {"in_channels": in_channels, "out_channels": out_channels,
             "num_steps": ctx.diffusion.num_steps,
             "action_kind": ctx.action_kind if actions else "none", "num_actions": ctx.num_actions}
    net = UNet3D(build(UNetConfig, unet, "the method's `unet` options", **fixed))
    if zero_output:
        zero_module(net.head[-1])
    return net
