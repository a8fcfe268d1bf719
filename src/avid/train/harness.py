"""One training harness for every trainable thing: a method (``avid train``), the base model's
pretraining (``avid pretrain``), the action classifier (``avid classifier train``) and a latent base
model's codec (``avid codec train``).

``start(t)`` sets threads and seeds and picks the precision; ``fit_run(model, data, t, out, ...)``
fits ``model.loss(batch)`` with Lightning into the run folder ``out``:

- ``run.yaml``: the resolved config; ``checkpoints/last.ckpt``: the full state, written atomically
  (every ``ckpt_every`` steps, at the end, on Ctrl-C / SIGTERM / the time cap);
- the model folder (``model.safetensors`` + ``config.yaml``) written by the caller's ``write`` from
  the EMA weights at every checkpoint and at the end;
- ``logs/version_N/`` (CSV + TensorBoard), one per resumed segment: a resume never overwrites history.

Running the same command again resumes exactly (optimiser, schedule, data order, random state); a
changed learning rate is applied; non-finite losses and weights stop the run before a checkpoint
holds them (``MethodModule``).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import Dataset

from avid.config import TrainConfig
from avid.data import Batch, collate
from avid.data.storage import atomic_write_text
from avid.nn import count_parameters
from avid.precision import Precision, resolve_precision
from avid.train.callbacks import SaveEvery, SaveLast, WarmupEMA, fit, run_callbacks
from avid.train.data_order import ResumeState, training_loader
from avid.train.module import MethodModule
from avid.train.run_folder import AtomicCheckpointIO

log = logging.getLogger("avid")

WriteModel = Callable[[dict[str, torch.Tensor], int], None]  # (weights of the model, step) -> the model folder


def train_device(accelerator: str) -> str:
    """The device type Lightning trains on for ``train.accelerator``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def start(t: TrainConfig) -> Precision:
    """Before anything is built: torch threads, every seed (``t.seed``), and the precision to train in."""
    if t.threads:
        torch.set_num_threads(t.threads)
    L.seed_everything(t.seed, workers=True, verbose=False)
    precision = resolve_precision(t.precision, train_device(t.accelerator))
    log.info("precision: %s", precision.describe())
    return precision


class Export(Callback):
    """Calls ``write(weights, step)`` with the trained model's weights at every checkpoint (the EMA
    weights, as the checkpoint holds them) and when training ends (EMA weights copied in by then)."""

    def __init__(self, write: WriteModel) -> None:
        self.write = write

    def export(self, trainer: L.Trainer, pl_module: MethodModule, state: dict[str, torch.Tensor]) -> None:
        if trainer.global_rank != 0:
            return
        own, prefix = set(pl_module.method.state_dict()), "method."
        self.write({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own},
                   trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.export(trainer, pl_module, checkpoint["state_dict"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.export(trainer, pl_module, pl_module.state_dict())


def fit_run(model: nn.Module, data: Dataset, t: TrainConfig, out: Path, run: dict[str, Any], write: WriteModel,
            what: str, precision: Precision, callbacks: tuple[Callback, ...] = (),
            transform: Callable[[Batch], Batch] | None = None, collate_fn: Callable = collate) -> int:
    """Fit ``model`` (``model.loss(batch) -> (loss, logs)``; ``what`` names it in the log and the progress
    bar) on ``data`` with ``t`` into ``out``, recording ``run`` (the resolved config) as ``run.yaml``;
    resumes from ``out/checkpoints/last.ckpt``. ``transform``: applied to every batch before the loss
    (a latent run whose codec mixes frames: its encoding, ``avid.train.run.latent_data``);
    ``collate_fn``: how items become a batch (default: the videos' ``Batch``). Returns the step reached."""
    module = MethodModule(model, lr=t.lr, weight_decay=t.weight_decay, lr_schedule=t.lr_schedule,
                          warmup_steps=t.warmup_steps, max_steps=t.max_steps, min_lr_ratio=t.min_lr_ratio,
                          transform=transform)
    if rank_zero_only.rank == 0:  # further ranks of a multi-device run write nothing
        atomic_write_text(out / "run.yaml", yaml.safe_dump(run, sort_keys=False))
    log.info("%s: %.2fM trainable parameters, %d training windows", what, count_parameters(model) / 1e6, len(data))
    loader = training_loader(data, t.batch_size, t.num_workers, t.seed, collate_fn)
    last = out / "checkpoints" / "last.ckpt"
    segment = f"version_{len(list((out / 'logs').glob('version_*')))}"
    save_last = SaveLast(last)
    trainer = L.Trainer(
        max_steps=t.max_steps, max_epochs=-1, max_time=timedelta(minutes=t.max_minutes) if t.max_minutes else None,
        accelerator=t.accelerator, devices=t.devices, precision=precision.lightning,
        # methods hold parameters a step may leave unused (the null action outside classifier-free dropout)
        strategy={"ddp": "ddp_find_unused_parameters_true"}.get(t.strategy, t.strategy),
        gradient_clip_val=t.grad_clip or None,
        callbacks=[save_last,  # before EMA: its on_train_end must see the raw weights
                   *([WarmupEMA(t.ema_decay)] if t.ema_decay else []), Export(write),
                   SaveEvery(save_last, t.ckpt_every), *run_callbacks(last, t.progress, f"train {what}", t.max_minutes),
                   ResumeState(loader),  # the data order and random state: a resumed run continues exactly
                   *callbacks],
        logger=[CSVLogger(out, name="logs", version=segment), TensorBoardLogger(out, name="logs", version=segment)],
        log_every_n_steps=t.log_every, enable_progress_bar=t.progress, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=out, plugins=[AtomicCheckpointIO()])
    t0 = time.time()
    fit(trainer, module, loader, last)  # Ctrl-C / SIGTERM: saved, then raised again
    log.info("trained to step %d in %.0f s; model in %s", trainer.global_step, time.time() - t0, out)
    return trainer.global_step
