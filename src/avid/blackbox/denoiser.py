"""The only door to a pretrained model: its predictions, nothing else.

A ``Denoiser`` answers ``(x_i, i, first frames) -> prediction`` in its own parameterisation and
publishes what a model provider would document (``DenoiserSpec``): the diffusion process it was
trained with, its parameterisation, the number of conditioning frames, channels and frame size, and
a fingerprint of the exact weights. It exposes no parameters, no gradients and no module: it holds
only a *backend* that talks to wherever the network lives — a worker process on this machine
(``avid.blackbox.worker``) or a provider's server (``avid.blackbox.remote``) — and counts what
every query costs (``QueryStats``). Latent models also answer ``codec.encode`` / ``codec.decode``;
pixel models use ``IdentityCodec``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from avid.diffusion import DiffusionConfig


@dataclass(frozen=True)
class DenoiserSpec:
    """What the provider publishes about a black-box model."""

    diffusion: DiffusionConfig
    channels: int  # of x_i (latent channels for a latent model)
    cond_frames: int
    frame_size: int  # of x_i (the latent size for a latent model)
    max_frames: int
    fingerprint: str  # identifies the exact model (e.g. a weights hash); adapters record it
    latent: bool = False  # True: x_i lives in the space of the provider's codec (encode/decode)
    pixel_size: int | None = None  # a latent model's frame size in pixels (what codec.decode returns)
    # inference-only settings of the model's output (a residual base's snap, shift_hard, shift_stay): the
    # same weights answer differently under other settings, so cached samples key on them too
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DenoiserSpec":
        return cls(**{**d, "diffusion": DiffusionConfig(**d["diffusion"])})


def check_denoise_inputs(spec: DenoiserSpec, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> None:
    """``x_i (B, C, T, H, W)``, ``i (B,)`` integer steps in ``[0, N)``, ``first (B, C, k, H, W)``
    as the spec says; a ``ValueError`` naming the expected and the received shape otherwise."""
    s = spec
    size = (s.frame_size, s.frame_size)
    if x_i.ndim != 5 or x_i.shape[1] != s.channels or tuple(x_i.shape[-2:]) != size:
        raise ValueError(f"black-box model expects x_i of shape (B, {s.channels}, T, {size[0]}, {size[1]}), "
                         f"got {tuple(x_i.shape)}")
    if not 1 <= x_i.shape[2] <= s.max_frames:
        raise ValueError(f"black-box model takes 1 to {s.max_frames} frames, got {x_i.shape[2]}")
    want = (x_i.shape[0], s.channels, s.cond_frames, *size)
    if tuple(first.shape) != want:
        raise ValueError(f"black-box model expects first frames of shape {want}, got {tuple(first.shape)}")
    if not (x_i.is_floating_point() and first.is_floating_point()):
        raise ValueError(f"x_i and first frames must be floating point, got {x_i.dtype} and {first.dtype}")
    if i.shape != (x_i.shape[0],) or i.is_floating_point() or i.is_complex():
        raise ValueError(f"expected integer diffusion steps of shape ({x_i.shape[0]},), got {i.dtype} {tuple(i.shape)}")
    if len(i) and (int(i.min()) < 0 or int(i.max()) >= s.diffusion.num_steps):
        raise ValueError(f"diffusion steps must lie in [0, {s.diffusion.num_steps})")


class Codec(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


class IdentityCodec:
    """Pixel-space models: the "latent" is the video itself."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


class Backend(Protocol):
    """Where the network lives. Each call returns ``(tensor, bytes sent, bytes received)``."""

    spec: DenoiserSpec

    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, int, int]: ...
    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, int, int]: ...
    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, int, int]: ...
    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


@dataclass
class QueryStats:
    """What the black box cost: queries, frames (``B * T`` of every query), bytes each way, and the
    wall time spent waiting for answers."""

    calls: int = 0
    frames: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wait_s: float = 0.0

    def add(self, frames: int, sent: int, received: int, seconds: float) -> None:
        self.calls += 1
        self.frames += frames
        self.bytes_sent += sent
        self.bytes_received += received
        self.wait_s += seconds

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def __sub__(self, other: "QueryStats") -> "QueryStats":
        return QueryStats(**{k: v - getattr(other, k) for k, v in self.to_dict().items()})


class _BackendCodec:
    """A latent model's codec, answered by its provider (counted like denoising queries)."""

    def __init__(self, denoiser: "Denoiser") -> None:
        self._denoiser = denoiser

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` pixels in [-1, 1] -> ``(B, C, T, h, w)`` latents."""
        return self._denoiser._query("encode", video, frames=video.shape[0] * video.shape[2])

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` latents -> ``(B, 3, T, H, W)`` pixels."""
        return self._denoiser._query("decode", latent, frames=latent.shape[0] * latent.shape[2])


class Denoiser:
    """A black-box image-to-video denoiser: ``x_i (B, C, T, H, W)``, ``i (B,)``, ``first (B, C, k, H, W)``
    -> prediction ``(B, C, T, H, W)``, float32, detached, on ``x_i``'s device."""

    def __init__(self, backend: Backend) -> None:
        self.__backend = backend  # name-mangled: not part of the interface
        self.spec = backend.spec
        self.stats = QueryStats()
        self.codec: Codec = _BackendCodec(self) if self.spec.latent else IdentityCodec()

    @property
    def calls(self) -> int:
        return self.stats.calls

    def check(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> None:
        check_denoise_inputs(self.spec, x_i, i, first)

    def _query(self, kind: str, *tensors: torch.Tensor, frames: int) -> torch.Tensor:
        device = tensors[0].device
        t0 = time.perf_counter()
        with torch.no_grad():
            args = [t.detach().cpu() for t in tensors]
            out, sent, received = getattr(self.__backend, kind)(*args)
        self.stats.add(frames, sent, received, time.perf_counter() - t0)
        return out.detach().float().to(device)

    def __call__(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        self.check(x_i, i, first)
        return self._query("denoise", x_i.float(), i.long(), first.float(), frames=x_i.shape[0] * x_i.shape[2])

    def close(self) -> None:
        """Stop the backend (a worker process ends; a remote session closes). Idempotent."""
        self.__backend.close()

    @property
    def closed(self) -> bool:
        """True once closed (or its worker process died): it answers no more queries."""
        return self.__backend.closed

    def __enter__(self) -> "Denoiser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # A black box is shared, not copied (EMA copies of a method keep calling the same model).
    def __deepcopy__(self, memo) -> "Denoiser":
        return self

    def __getstate__(self):
        raise TypeError("a black-box Denoiser cannot be pickled; save the path of its model instead")
