"""The white box: the base model's network itself, with its parameters.

Two kinds of code may hold it: the provider side of the black box (the worker process behind
``avid.blackbox.open_denoiser`` and the ``avid serve`` server), and the methods the paper marks
as requiring parameter access (ControlNet, ControlNet-Small, fine-tuning), through
``avid.methods._parameter_access``. Every other method only sees the black box's outputs.
"""

from __future__ import annotations

from pathlib import Path

from avid.checkpoint import load_config, load_weights, require_keys, resolve
from avid.nn import UNet3D, UNetConfig
from avid.options import build

BASE_KIND = "avid-base-model"


def load_base_model(path: str | Path) -> tuple[UNet3D, dict]:
    """The base network (eval mode, ``requires_grad=False``) and its config.

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
