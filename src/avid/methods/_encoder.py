"""The encoder half of a UNet3D, for the baselines that read features rather than predictions
(ControlNet's trainable branch, the noisy action classifier of classifier guidance)."""

from __future__ import annotations

from torch import nn

from avid.nn import UNet3D


def encoder_only(net: UNet3D) -> UNet3D:
    """Drop the decoder (``up`` path and ``head``) so only ``embed`` and ``encode`` remain and the
    parameter count is the encoder's. ``forward`` of the result is meaningless: call
    ``encode(x, embed(i, actions, T))`` -> bottleneck ``(B, C_mid, T, h, w)`` and one skip per level."""
    net.up, net.head = nn.ModuleList(), nn.Identity()
    return net


def level_widths(net: UNet3D) -> list[int]:
    """Channels of each skip ``encode`` returns (the last is also the bottleneck's)."""
    return net.cfg.skip_widths
