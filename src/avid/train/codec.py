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

import lightning as L
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

from avid import tiny
from avid.checkpoint import resolve, save_model
from avid.config import build_section, check_numbers
from avid.data import EpisodeStore, WindowDataset, collate
from avid.data.storage import atomic_write_text
from avid.locks import locked
from avid.nn import count_parameters
from avid.nn.autoencoder import Autoencoder, AutoencoderConfig
from avid.options import build
from avid.precision import resolve_precision
from avid.train.callbacks import SaveEvery, SaveLast, fit, run_callbacks
from avid.train.data_order import ResumeState, training_loader
from avid.train.module import MethodModule
from avid.train.run_folder import AtomicCheckpointIO, claim_run_folder
from avid.whitebox import CODEC_KIND

log = logging.getLogger("avid")


@dataclass
class CodecTrainConfig:
    max_steps: int = 3000
    batch_size: int = 16  # windows of 2 frames: 32 frames a step
    lr: float = 3e-4
    ckpt_every: int = 250
    log_every: int = 25
    num_workers: int = 0
    seed: int = 0
    precision: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        check_numbers(self, "train", at_least_1=("max_steps", "batch_size", "ckpt_every", "log_every"),
                      at_least_0=("lr", "num_workers"))


@dataclass
class CodecRunConfig:
    out: str = "runs/codec-robot"
    data: str = "data/robot-pretrain-cpu"
    eval_data: str | None = None  # frames to report the held-out reconstruction error on
    codec: dict[str, Any] = field(default_factory=dict)  # AutoencoderConfig fields
    train: CodecTrainConfig = field(default_factory=CodecTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def codec_run_config(d: dict[str, Any]) -> CodecRunConfig:
    d = dict(d)
    return build_section(CodecRunConfig, {**d, "train": build_section(CodecTrainConfig, d.pop("train", None) or {},
                                                                      "train")}, "top level")


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
    """Train the autoencoder on ``run.data``'s frames into ``run.out`` (resumes); returns the folder."""
    run = replace(run, train=tiny.training(run.train))
    tc, out = run.train, Path(run.out)
    claim_run_folder(out, CODEC_KIND, run.to_dict(), ("codec", "data"), normalise=lambda d: codec_run_config(d).to_dict())
    L.seed_everything(tc.seed, workers=True, verbose=False)
    store = EpisodeStore(resolve(run.data))
    data = WindowDataset(store, frames=2, cond_frames=1)
    codec = Autoencoder(build(AutoencoderConfig, run.codec, "config section 'codec'"))
    size = int(store.meta.get("frame_size", 64))
    if size % codec.cfg.factor:
        raise ValueError(f"{size}px frames do not divide into the codec's {codec.cfg.factor}x latents")
    atomic_write_text(out / "run.yaml", yaml.safe_dump(run.to_dict(), sort_keys=False))
    log.info("codec: %.2fM parameters, %d training frame pairs, %dpx -> %dpx x %d latents",
             count_parameters(codec) / 1e6, len(data), size, size // codec.cfg.factor, codec.cfg.latent_channels)
    loader = training_loader(data, tc.batch_size, tc.num_workers, tc.seed, collate)
    last = out / "checkpoints" / "last.ckpt"
    save_last = SaveLast(last)
    precision = resolve_precision(tc.precision, "cpu" if not torch.cuda.is_available() else "cuda")
    trainer = L.Trainer(
        max_steps=tc.max_steps, max_epochs=-1, devices=1, precision=precision.lightning,
        callbacks=[save_last, SaveEvery(save_last, tc.ckpt_every), *run_callbacks(last, tc.progress, "train codec"),
                   ResumeState(loader)],
        logger=CSVLogger(out, name="logs", version=""), log_every_n_steps=tc.log_every, enable_progress_bar=tc.progress,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=out,
        plugins=[AtomicCheckpointIO()])
    fit(trainer, MethodModule(codec, lr=tc.lr), loader, last)
    codec.eval()
    scale = codec.fit_scale(frames_of(store.root, 256))
    info: dict[str, Any] = {"kind": CODEC_KIND, "codec": codec.cfg.to_dict(), "frame_size": size,
                            "latent_size": size // codec.cfg.factor, "scale": scale, "step": trainer.global_step,
                            "parameters": count_parameters(codec), "run": run.to_dict()}
    if run.eval_data:
        info.update(eval_data=run.eval_data, held_out_mse=round(reconstruction_mse(codec, frames_of(run.eval_data, 256)), 6))
        log.info("held-out reconstruction MSE on %s: %.5f", run.eval_data, info["held_out_mse"])
    save_model(out, codec.state_dict(), info)
    return out
