"""Building a method's UNet from the shared size options and the method's input/output layout."""

from __future__ import annotations

import torch

from avid.methods.base import Context
from avid.nn import UNet3D, UNetConfig, zero_module
from avid.options import build


def build_unet(ctx: Context, unet: dict, in_channels: int, out_channels: int, actions: bool,
               zero_output: bool | int = False) -> UNet3D:
    """A UNet of the given size (``unet``: UNetConfig fields) wired to this method's layout.
    ``zero_output``: the last convolution starts at zero (residual outputs start as what they add to);
    a number zeroes only that many leading output channels, leaving the others (e.g. a mask logit
    that a zero-initialised layer reads next) their random start, so gradients reach both layers."""
    fixed = {"in_channels": in_channels, "out_channels": out_channels,
             "num_steps": ctx.diffusion.num_steps,
             "action_kind": ctx.action_kind if actions else "none", "num_actions": ctx.num_actions}
    net = UNet3D(build(UNetConfig, unet, "the method's `unet` options", **fixed))
    if zero_output is True:
        zero_module(net.head[-1])
    elif zero_output:
        conv, per_channel = net.head[-1], net.cfg.patch_size ** 2  # pixel-unshuffled: p*p conv channels each
        with torch.no_grad():
            conv.weight[: zero_output * per_channel].zero_()
            conv.bias[: zero_output * per_channel].zero_()
    return net
