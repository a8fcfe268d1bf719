"""The provider's side of the door: the network itself, answering queries.

A ``Provider`` holds the weights and runs them. It lives only where a model provider would run it:
in the worker process behind ``open_denoiser`` (``avid.blackbox.worker``) and in the ``avid serve``
server; no method ever holds one. ``open_provider(path)`` loads

- a base model of this project (a folder with ``model.safetensors`` + ``config.yaml`` of kind
  ``avid-base-model``), or
- a diffusers image-to-video model (a folder with ``model_index.json``; ``avid.blackbox.diffusers_i2v``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import torch

from avid.blackbox.denoiser import DenoiserSpec, check_denoise_inputs
from avid.checkpoint import WEIGHTS, resolve, sha256
from avid.diffusion import Diffusion, DiffusionConfig
from avid.nn import ResidualOutput, with_first_frames
from avid.options import build
from avid.precision import resolve_precision
from avid.whitebox import load_base_model, load_codec



class Provider(Protocol):
    spec: DenoiserSpec

    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor: ...
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...


def spec_from_config(cfg: dict, fingerprint: str) -> DenoiserSpec:
    return DenoiserSpec(diffusion=build(DiffusionConfig, cfg["diffusion"], "the base model's `diffusion`"),
                        channels=cfg["channels"],
                        cond_frames=cfg["cond_frames"], frame_size=cfg["frame_size"],
                        max_frames=cfg["unet"]["max_frames"], fingerprint=fingerprint,
                        latent="codec" in cfg, pixel_size=cfg.get("pixel_size"),
                        settings=dict(cfg.get("residual_output") or {}))


class BaseModelProvider:
    """The project's own base model (pixel-space, or latent with its codec in ``codec/``). ``precision``: "auto" (``avid.precision``: bf16 where this
    machine runs it natively, else fp32), "fp32", "bf16" or "fp16" (GPUs). A residual base model (``residual: true`` in its config) predicts
    the change from the last conditioning frame (``avid.nn.ResidualOutput``: that frame, moved by its
    shift path if it has one, plus the network's change)."""

    def __init__(self, path: str | Path, precision: str = "auto", device: str = "cpu") -> None:
        self.precision = resolve_precision(precision, device)
        folder = resolve(path)
        model, cfg = load_base_model(folder)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.codec = None
        fingerprint = sha256(folder / WEIGHTS)
        if "codec" in cfg:  # a latent model: the fingerprint covers the codec's weights too
            self.codec = load_codec(folder / cfg["codec"])[0].to(device)
            fingerprint = hashlib.sha256((fingerprint + sha256(folder / cfg["codec"] / WEIGHTS)).encode()).hexdigest()
        self.spec = spec_from_config(cfg, fingerprint)
        self.output = ResidualOutput.from_config(cfg, self.spec.channels)
        if self.output is not None:
            self.output.to(device)
        self.from_x0 = Diffusion(self.spec.diffusion).from_x0

    @torch.no_grad()
    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        check_denoise_inputs(self.spec, x_i, i, first)
        x_i, i, first = x_i.to(self.device).float(), i.to(self.device).long(), first.to(self.device).float()
        with self.precision.autocast():
            out = self.model(with_first_frames(x_i, first), i)
        out = out.float()
        return self.output(out, first, x_i, i, self.from_x0)[0] if self.output else out

    def _codec(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if self.codec is None:
            raise ValueError("this is a pixel-space model: it has no codec (encode/decode)")
        with torch.no_grad():
            return getattr(self.codec, kind)(x.to(self.device).float()).float().cpu()

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` pixels in [-1, 1] -> ``(B, C, T, h, w)`` latents."""
        return self._codec("encode", video)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` latents -> ``(B, 3, T, H, W)`` pixels in [-1, 1]."""
        return self._codec("decode", latent)


def open_provider(path: str | Path, precision: str = "auto", device: str = "cpu") -> Provider:
    """Load the model at ``path`` (an avid base model or a diffusers image-to-video folder)."""
    folder = resolve(path)
    if (folder / "model_index.json").exists():
        from avid.blackbox.diffusers_i2v import DiffusersI2VProvider

        return DiffusersI2VProvider(folder, precision=precision, device=device)
    return BaseModelProvider(folder, precision=precision, device=device)
