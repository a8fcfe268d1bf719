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


class MethodModule(L.LightningModule):
    def __init__(self, method: Method, lr: float = 1e-4, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.method = method
        self.lr, self.weight_decay = lr, weight_decay

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
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
