"""The white box: the base model's network itself, with its parameters.

A latent base model also holds its codec (``load_codec``: the autoencoder in its ``codec/``
subfolder), which the black box serves as ``encode`` / ``decode`` only. Two kinds of code may hold the network: the provider side of the black box (the worker process behind
``avid.blackbox.open_denoiser`` and the ``avid serve`` server), and the methods the paper marks
as requiring parameter access (ControlNet, ControlNet-Small, fine-tuning), through
``avid.methods._parameter_access``. Every other method only sees the black box's outputs.
"""

from __future__ import annotations

from pathlib import Path

from avid.checkpoint import load_config, load_weights, require_keys, resolve
from avid.nn import UNet3D, UNetConfig
from avid.nn.autoencoder import Autoencoder, AutoencoderConfig
from avid.options import build

BASE_KIND = "avid-base-model"
CODEC_KIND = "avid-codec"
CODEC_FOLDER = "codec"  # a latent base model's codec: a subfolder of the base model's folder


def load_base_model(path: str | Path) -> tuple[UNet3D, dict]:
    """The base network (eval mode, ``requires_grad=False``) and its config.

    When ``cfg["residual"]`` is true the network predicts the change from the last conditioning
    frame: ``avid.nn.ResidualOutput.from_config(cfg, channels)`` turns its output into the prediction."""
    folder = resolve(path)
    cfg = load_config(folder)
    if cfg.get("kind") != BASE_KIND:
        raise ValueError(f"{folder} is not a base model (config kind {cfg.get('kind')!r}, expected {BASE_KIND!r})")
    require_keys(cfg, ("unet", "diffusion", "channels", "cond_frames", "frame_size"), folder)
    model = UNet3D(build(UNetConfig, cfg["unet"], f"{folder}/config.yaml `unet`"))
    load_weights(folder, model, prefix="net.")
    model.eval().requires_grad_(False)
    return model, cfg


def load_codec(path: str | Path) -> tuple[Autoencoder, dict]:
    """A codec (the project's autoencoder; eval mode, ``requires_grad=False``) and its config."""
    folder = resolve(path)
    cfg = load_config(folder)
    if cfg.get("kind") != CODEC_KIND:
        raise ValueError(f"{folder} is not a codec (config kind {cfg.get('kind')!r}, expected {CODEC_KIND!r})")
    require_keys(cfg, ("codec", "frame_size"), folder)
    codec = Autoencoder(build(AutoencoderConfig, cfg["codec"], f"{folder}/config.yaml `codec`"))
    load_weights(folder, codec)
    codec.eval().requires_grad_(False)
    return codec, cfg
