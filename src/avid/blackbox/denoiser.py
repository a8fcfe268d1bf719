"""The only door to a pretrained model: its predictions, nothing else.

A ``Denoiser`` answers ``(x_i, i, first frames) -> prediction`` in its own parameterisation and
publishes what a model provider would document: the diffusion process it was trained with, its
parameterisation, the number of conditioning frames, channels and frame size. It exposes no
parameters, no gradients and no module: outputs come back detached, computed under ``no_grad``.
A ``Codec`` (encode/decode) stands beside it for latent models; pixel models use ``IdentityCodec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from avid.diffusion import DiffusionConfig


@dataclass(frozen=True)
class DenoiserSpec:
    """What the provider publishes about a black-box model."""

    diffusion: DiffusionConfig
    channels: int
    cond_frames: int
    frame_size: int
    max_frames: int
    fingerprint: str  # identifies the exact model (e.g. a weights hash); adapters record it


class Codec(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


class IdentityCodec:
    """Pixel-space models: the "latent" is the video itself."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


class Denoiser:
    """A black-box image-to-video denoiser built from a prediction function.

    ``fn(x_i, i, first)`` is called under ``torch.no_grad()``; its result is detached and returned
    in float32. ``x_i``: ``(B, C, T, H, W)``; ``i``: ``(B,)``; ``first``: ``(B, C, k, H, W)``.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 spec: DenoiserSpec, codec: Codec | None = None) -> None:
        self.__fn = fn  # name-mangled: not part of the interface
        self.spec = spec
        self.codec = codec or IdentityCodec()
        self.calls = 0

    def check(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> None:
        s = self.spec
        size = (s.frame_size, s.frame_size)
        if x_i.ndim != 5 or x_i.shape[1] != s.channels or tuple(x_i.shape[-2:]) != size:
            raise ValueError(f"black-box model expects x_i of shape (B, {s.channels}, T, {size[0]}, {size[1]}), "
                             f"got {tuple(x_i.shape)}")
        want = (x_i.shape[0], s.channels, s.cond_frames, *size)
        if tuple(first.shape) != want:
            raise ValueError(f"black-box model expects first frames of shape {want}, got {tuple(first.shape)}")
        if i.shape != (x_i.shape[0],):
            raise ValueError(f"expected diffusion steps of shape ({x_i.shape[0]},), got {tuple(i.shape)}")
        if int(i.min()) < 0 or int(i.max()) >= s.diffusion.num_steps:
            raise ValueError(f"diffusion steps must lie in [0, {s.diffusion.num_steps})")

    def __call__(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        self.check(x_i, i, first)
        self.calls += 1
        with torch.no_grad():
            out = self.__fn(x_i.detach(), i, first.detach())
        return out.detach().float()

    # A black box is shared, not copied (EMA copies of a method keep calling the same model).
    def __deepcopy__(self, memo) -> "Denoiser":
        return self

    def __getstate__(self):
        raise TypeError("a black-box Denoiser cannot be pickled; save the path of its model instead")
