"""Backend: the project's own pretrained base model, served as a black box.

``open_denoiser(path)`` is what every method without parameter access uses. ``load_base_model``
returns the network itself and is for the methods the paper marks as requiring parameter access
(ControlNet, fine-tuning) and for the base model's own training and tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avid.blackbox.denoiser import Denoiser, DenoiserSpec
from avid.checkpoint import WEIGHTS, load_config, load_weights, require_keys, resolve, sha256
from avid.diffusion import Diffusion, DiffusionConfig
from avid.nn import UNet3D, UNetConfig, with_first_frames
from avid.options import build
from avid.precision import resolve_precision

BASE_KIND = "avid-base-model"


def load_base_model(path: str | Path) -> tuple[UNet3D, dict]:
    """The base network and its config (parameter access: only for methods marked as such).
    When ``cfg["residual"]`` is true the network predicts the change from the last conditioning
    frame: its prediction is ``Diffusion.hold_last(first, x_i, i) + network output``."""
    folder = resolve(path)
    cfg = load_config(folder)
    if cfg.get("kind") != BASE_KIND:
        raise ValueError(f"{folder} is not a base model (config kind {cfg.get('kind')!r}, expected {BASE_KIND!r})")
    require_keys(cfg, ("unet", "diffusion", "channels", "cond_frames", "frame_size"), folder)
    model = UNet3D(build(UNetConfig, cfg["unet"], f"{folder}/config.yaml `unet`"))
    load_weights(folder, model, prefix="net.")
    model.eval().requires_grad_(False)
    return model, cfg


def spec_from_config(cfg: dict, fingerprint: str) -> DenoiserSpec:
    return DenoiserSpec(diffusion=build(DiffusionConfig, cfg["diffusion"], "the base model's `diffusion`"),
                        channels=cfg["channels"],
                        cond_frames=cfg["cond_frames"], frame_size=cfg["frame_size"],
                        max_frames=cfg["unet"]["max_frames"], fingerprint=fingerprint)


def open_denoiser(path: str | Path, precision: str = "auto") -> Denoiser:
    """The base model behind the black-box door. ``precision``: "auto" (chosen per device, see
    ``avid.precision``), "fp32", "bf16" or "fp16"."""
    resolve_precision(precision)  # an unknown name fails here, not at the first call
    folder = resolve(path)
    model, cfg = load_base_model(folder)
    spec = spec_from_config(cfg, sha256(folder / WEIGHTS))
    hold_last = Diffusion(spec.diffusion).hold_last if cfg.get("residual") else None

    def predict(x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        model.to(x_i.device)
        with resolve_precision(precision, x_i.device).autocast():
            out = model(with_first_frames(x_i, first), i)
        return out.float() + hold_last(first, x_i, i) if hold_last else out

    return Denoiser(predict, spec)
