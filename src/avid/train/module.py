"""The Lightning module: sums nothing, knows nothing of the method; ``method.loss(batch)`` returns
``(loss, logs)`` and the module logs, checks and optimises it."""

from __future__ import annotations

import math

import lightning as L
import torch

from avid.data import Batch
from avid.methods import Method


class NonFiniteLoss(FloatingPointError):
    pass


LR_SCHEDULES = ("constant", "cosine")


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
    def __init__(self, method: Method, lr: float = 1e-4, weight_decay: float = 0.0, lr_schedule: str = "constant",
                 warmup_steps: int = 0, max_steps: int = 1, min_lr_ratio: float = 0.1) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.method = method
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule = (lr_schedule, warmup_steps, max_steps, min_lr_ratio)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, logs = self.method.loss(batch)
        if not math.isfinite(float(loss.detach())):
            raise NonFiniteLoss(
                f"non-finite training loss ({float(loss.detach())}) at step {self.global_step} of method "
                f"{self.method.name!r}; the last good checkpoint is untouched. Try a lower learning rate, "
                "train.precision=32-true, or loss weighting 'min_snr'.")
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.method.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"method {self.method.name!r} has no trainable parameters; nothing to train")
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule[0] == "constant" and not self.schedule[1]:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, *self.schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
