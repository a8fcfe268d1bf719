"""Backend: the project's own pretrained base model, served as a black box.

``open_denoiser(path)`` is what every method without parameter access uses. ``load_base_model``
returns the network itself and is for the methods the paper marks as requiring parameter access
(ControlNet, fine-tuning) and for the base model's own training and tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avid.blackbox.denoiser import Denoiser, DenoiserSpec
from avid.checkpoint import WEIGHTS, load_config, load_weights, resolve, sha256
from avid.diffusion import Diffusion, DiffusionConfig
from avid.nn import UNet3D, UNetConfig, with_first_frames

BASE_KIND = "avid-base-model"


def load_base_model(path: str | Path) -> tuple[UNet3D, dict]:
    """The base network and its config (parameter access: only for methods marked as such).
    When ``cfg["residual"]`` is true the network predicts the change from the last conditioning
    frame: its prediction is ``Diffusion.hold_last(first, x_i, i) + network output``."""
    folder = resolve(path)
    cfg = load_config(folder)
    if cfg.get("kind") != BASE_KIND:
        raise ValueError(f"{folder} is not a base model (config kind {cfg.get('kind')!r}, expected {BASE_KIND!r})")
    model = UNet3D(UNetConfig(**cfg["unet"]))
    load_weights(folder, model, prefix="net.")
    model.eval().requires_grad_(False)
    return model, cfg


def spec_from_config(cfg: dict, fingerprint: str) -> DenoiserSpec:
    return DenoiserSpec(diffusion=DiffusionConfig(**cfg["diffusion"]), channels=cfg["channels"],
                        cond_frames=cfg["cond_frames"], frame_size=cfg["frame_size"],
                        max_frames=cfg["unet"]["max_frames"], fingerprint=fingerprint)


def open_denoiser(path: str | Path, precision: str = "bf16") -> Denoiser:
    """The base model behind the black-box door. ``precision``: "bf16" (CPU-fast) or "fp32"."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    folder = resolve(path)
    model, cfg = load_base_model(folder)
    dtype = torch.bfloat16 if precision == "bf16" else None
    spec = spec_from_config(cfg, sha256(folder / WEIGHTS))
    hold_last = Diffusion(spec.diffusion).hold_last if cfg.get("residual") else None

    def predict(x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        model.to(x_i.device)
        with torch.autocast(x_i.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(with_first_frames(x_i, first), i)
        return out.float() + hold_last(first, x_i, i) if hold_last else out

    return Denoiser(predict, spec)
