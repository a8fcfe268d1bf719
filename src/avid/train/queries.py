"""Query accounting: what the black box cost a training run.

``QueryLog`` records the base model's queries (calls, frames, bytes each way, seconds spent waiting
for answers) as ``blackbox/*`` metrics at every step and in ``<run>/blackbox.json`` at every
checkpoint and at the end. The totals travel in the checkpoint, so a resumed run keeps counting
from its saved step (queries of steps that were lost to a crash and redone are counted once).
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from avid.blackbox import Denoiser, QueryStats
from avid.data.storage import atomic_write_text


class QueryLog(Callback):
    def __init__(self, denoiser: Denoiser, path: Path, base: str) -> None:
        self.denoiser, self.path, self.base = denoiser, Path(path), base
        self.before = QueryStats()  # totals of earlier segments of this run (from the checkpoint)
        self.start = QueryStats(**denoiser.stats.to_dict())  # this process's count when the segment began

    def total(self) -> QueryStats:
        now = self.denoiser.stats - self.start
        return QueryStats(**{k: v + getattr(now, k) for k, v in self.before.to_dict().items()})

    def state_dict(self) -> dict:
        return self.total().to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.before = QueryStats(**state)
        self.start = QueryStats(**self.denoiser.stats.to_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        t = self.total()
        pl_module.log_dict({"blackbox/calls": float(t.calls), "blackbox/frames": float(t.frames),
                            "blackbox/mb_sent": t.bytes_sent / 1e6, "blackbox/wait_s": t.wait_s},
                           on_step=True, on_epoch=False, batch_size=len(batch))

    def write(self, trainer) -> None:
        if trainer.global_rank != 0:
            return
        t = self.total()
        steps = max(trainer.global_step, 1)
        record = {"base": self.base, "fingerprint": self.denoiser.spec.fingerprint, "step": trainer.global_step,
                  **t.to_dict(), "calls_per_step": t.calls / steps, "wait_s_per_call": t.wait_s / max(t.calls, 1)}
        atomic_write_text(self.path, json.dumps(record, indent=2) + "\n")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer)
