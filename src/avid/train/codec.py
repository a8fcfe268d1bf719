"""Training the codec of a latent base model (``avid codec train``): the project's autoencoder
(``avid.nn.autoencoder``) on the frames of a dataset, through the same Lightning harness as every
other trainable thing (resume from ``checkpoints/last.ckpt``, graceful stop, one writer).

The folder it writes (``model.safetensors`` + ``config.yaml`` of kind ``avid-codec``) is what
``avid pretrain`` takes as ``codec:`` to train a latent base model, which ships a copy of it; the
latent scale is fitted on training frames and the held-out reconstruction error is recorded.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from avid import tiny
from avid.checkpoint import resolve, save_model
from avid.config import TrainConfig, from_dict, load
from avid.data import EpisodeStore, WindowDataset
from avid.locks import locked
from avid.nn import count_parameters
from avid.nn.autoencoder import Autoencoder, AutoencoderConfig
from avid.options import build
from avid.train.harness import fit_run, start
from avid.train.run_folder import claim_run_folder
from avid.whitebox import CODEC_KIND

log = logging.getLogger("avid")
CODEC_LR = 3e-4  # the autoencoder's learning rate when ``train.lr`` is null


def codec_training() -> TrainConfig:
    """The codec's training defaults (the shared ``TrainConfig``): no EMA, no gradient clipping."""
    return TrainConfig(max_steps=3000, batch_size=16, lr=CODEC_LR, ema_decay=None, grad_clip=0.0, ckpt_every=250,
                       log_every=25)  # batch: windows of 2 frames, 32 frames a step


@dataclass
class CodecRunConfig:
    out: str = "runs/codec-robot"
    data: str = "data/robot-pretrain-cpu"
    eval_data: str | None = None  # frames to report the held-out reconstruction error on
    codec: dict[str, Any] = field(default_factory=dict, metadata={"keys_of": AutoencoderConfig})
    train: TrainConfig = field(default_factory=codec_training)

    def __post_init__(self) -> None:
        self.eval_data = self.eval_data or None  # '': none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def codec_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                     values: dict[str, Any] | None = None) -> CodecRunConfig:
    """Defaults, then the YAML file, then ``--set`` overrides, then flags (``avid.config.load``)."""
    return load(CodecRunConfig, path, overrides, values, "codec config")


def frames_of(data: str | Path, limit: int) -> torch.Tensor:
    """Up to ``limit`` frames of a dataset, evenly spread, as ``(1, 3, N, H, W)`` in [-1, 1]."""
    ds = WindowDataset(resolve(data), frames=2, cond_frames=1)
    idx = torch.linspace(0, len(ds) - 1, min(limit, len(ds))).round().long()
    return torch.cat([ds[int(j)]["first"] for j in idx], dim=1)[None]


@torch.no_grad()
def reconstruction_mse(codec: Autoencoder, video: torch.Tensor, chunk: int = 64) -> float:
    """Mean squared error of ``decode(encode(video))`` in [-1, 1] units, ``video`` ``(1, 3, N, H, W)``."""
    errs = [(codec.decode(codec.encode(part)) - part).pow(2).mean() * part.shape[2]
            for part in video.split(chunk, dim=2)]
    return float(sum(errs) / video.shape[2])


@locked(lambda a: a["run"].out)
def train_codec(run: CodecRunConfig) -> Path:
    """Train the autoencoder on ``run.data``'s frames into ``run.out`` (``avid.train.harness``; resumes);
    every export (each checkpoint and the end) is a complete codec: scale fitted, held-out error
    measured. Returns the folder."""
    t = tiny.training(run.train)  # AVID_TINY=1: smoke-test size
    run = replace(run, train=t if t.lr is not None else replace(t, lr=CODEC_LR))
    out = Path(run.out)
    claim_run_folder(out, CODEC_KIND, run.to_dict(), ("codec", "data"),
                     normalise=lambda d: from_dict(CodecRunConfig, d).to_dict())
    precision = start(run.train)
    store = EpisodeStore(resolve(run.data))
    data = WindowDataset(store, frames=2, cond_frames=1)
    cfg = build(AutoencoderConfig, run.codec, "config section 'codec'")
    codec = Autoencoder(cfg)
    size = int(store.meta.get("frame_size", 64))
    if size % cfg.factor:
        raise ValueError(f"{size}px frames do not divide into the codec's {cfg.factor}x latents")
    log.info("codec: %dpx -> %dpx x %d latents", size, size // cfg.factor, cfg.latent_channels)
    scale_frames = frames_of(store.root, 256)
    held_out = frames_of(run.eval_data, 256) if run.eval_data else None

    def write(weights: dict[str, torch.Tensor], step: int) -> None:
        shipped = Autoencoder(cfg)
        shipped.load_state_dict(weights)
        shipped.eval()
        info: dict[str, Any] = {"kind": CODEC_KIND, "codec": cfg.to_dict(), "frame_size": size,
                                "latent_size": size // cfg.factor, "scale": shipped.fit_scale(scale_frames),
                                "step": step, "parameters": count_parameters(shipped), "run": run.to_dict()}
        if held_out is not None:
            info.update(eval_data=run.eval_data, held_out_mse=round(reconstruction_mse(shipped, held_out), 6))
            log.info("step %d: held-out reconstruction MSE on %s: %.5f", step, run.eval_data, info["held_out_mse"])
        save_model(out, shipped.state_dict(), info)

    fit_run(codec, data, run.train, out, run.to_dict(), write, "codec", precision)
    return out
