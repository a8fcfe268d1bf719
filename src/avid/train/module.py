"""The Lightning module: sums nothing, knows nothing of the method; ``method.loss(batch)`` returns
``(loss, logs)`` and the module logs, checks and optimises it."""

from __future__ import annotations

import logging
import math
from typing import Callable

import lightning as L
import torch

from avid.data import Batch
from avid.methods import Method


class NonFiniteLoss(FloatingPointError):
    pass


class NonFiniteWeights(NonFiniteLoss):
    """An optimiser step made a weight NaN or infinite (caught before any checkpoint holds it)."""


LR_SCHEDULES = ("constant", "cosine")
WEIGHTS_ADVICE = ("the last good checkpoint is untouched. Try a lower learning rate, train.precision=32-true, "
                  "or train.grad_clip.")
log = logging.getLogger("avid")


def lr_factor(step: int, schedule: str, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier on the base learning rate at optimiser step ``step``: a linear warm-up over
    ``warmup_steps``, then constant or a cosine decay reaching ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class MethodModule(L.LightningModule):
    """``transform``: applied to every batch before the loss (a latent run's ``to_latent``)."""

    def __init__(self, method: Method, lr: float = 1e-4, weight_decay: float = 0.0, lr_schedule: str = "constant",
                 warmup_steps: int = 0, max_steps: int = 1, min_lr_ratio: float = 0.1,
                 transform: Callable[[Batch], Batch] | None = None) -> None:
        super().__init__()
        self.transform = transform
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.method = method
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule = (lr_schedule, warmup_steps, max_steps, min_lr_ratio)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.transform is not None:
            batch = self.transform(batch)
        self.last_batch = batch  # the weights a checkpoint is about to hold are checked on it (check_weights)
        loss, logs = self.method.loss(batch)
        if not math.isfinite(float(loss.detach())):
            raise NonFiniteLoss(
                f"non-finite training loss ({float(loss.detach())}) at step {self.global_step} of method "
                f"{self.method.name!r}; the last good checkpoint is untouched. Try a lower learning rate, "
                "train.precision=32-true, or loss weighting 'min_snr'.")
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(batch))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=len(batch))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        params = [p for p in self.method.parameters() if p.requires_grad]
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteWeights(
                f"non-finite weights after optimiser step {self.global_step + 1} of method {self.method.name!r} "
                f"(learning rate {self.trainer.optimizers[0].param_groups[0]['lr']:g}); {WEIGHTS_ADVICE}")

    def check_weights(self) -> None:
        """Before a checkpoint: the weights give a finite loss on the batch just trained (same random
        state afterwards; one more black-box query per checkpoint). Finite but blown-up weights, as one
        step at a huge learning rate leaves them, would otherwise be saved, and every resume, at any
        learning rate, would fail at once."""
        batch = getattr(self, "last_batch", None)
        if batch is None:
            return
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                self.trainer.precision_plugin.train_step_context():  # as in training (bf16 autocast)
            loss = float(self.method.loss(batch)[0])
        if not math.isfinite(loss):
            raise NonFiniteWeights(
                f"the weights after optimiser step {self.global_step} of method {self.method.name!r} give a "
                f"non-finite loss ({loss}) (learning rate {self.trainer.optimizers[0].param_groups[0]['lr']:g}); "
                f"they were not saved: {WEIGHTS_ADVICE}")

    def on_train_start(self) -> None:
        """This run's learning rate and weight decay replace what a resumed optimiser state holds, so
        a deliberate change on resume is applied (at the schedule's current point)."""
        opt, sched = self.trainer.optimizers[0], self.lr_schedulers()
        before = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"])
        factor = 1.0 if sched is None else lr_factor(sched.last_epoch, *self.schedule)
        for g in opt.param_groups:
            g["lr"], g["weight_decay"] = self.lr * factor, self.weight_decay
            if "initial_lr" in g:
                g["initial_lr"] = self.lr
        if sched is not None:
            sched.base_lrs = [self.lr] * len(opt.param_groups)
            sched._last_lr = [g["lr"] for g in opt.param_groups]
        if before != self.lr:
            log.info("learning rate %g (was %g in the resumed optimiser state)", self.lr, before)

    def configure_optimizers(self):
        params = [p for p in self.method.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"method {self.method.name!r} has no trainable parameters; nothing to train")
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule[0] == "constant" and not self.schedule[1]:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, *self.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
