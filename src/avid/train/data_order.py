"""The training data order and random state, resumable: a run killed and resumed from a
checkpoint sees the same batches and the same noise as one that never stopped.

``EpochOrder`` draws each epoch's permutation from (seed, epoch) alone and can start mid-epoch;
``ResumeState`` stores the step and torch's random generators with every checkpoint and, on
resume, puts the order at that step and the generators back. Exact on one device (with more,
Lightning's distributed sampler reshuffles and only the random state is restored).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

KEY = "avid_resume_state"


class EpochOrder(Sampler[int]):
    """A permutation of ``range(n)`` per epoch, from ``seed`` and the epoch number only."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def __len__(self) -> int:
        return self.n

    def start_at(self, epoch: int, skip: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``skip`` indices."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.skip:].tolist()
        self.epoch, self.skip = self.epoch + 1, 0
        yield from order


def training_loader(data: Dataset, batch_size: int, num_workers: int, seed: int, collate_fn) -> DataLoader:
    """Shuffled full batches in an ``EpochOrder``; a clear error when not even one batch fits."""
    if batch_size > len(data):
        raise ValueError(f"the batch size ({batch_size}) is larger than the {len(data)} training windows, so no "
                         "full batch exists: lower train.batch_size or use more data")
    # the loader's own generator: creating an iterator must not draw from the global one
    return DataLoader(data, batch_size=batch_size, sampler=EpochOrder(len(data), seed), drop_last=True,
                      num_workers=num_workers, collate_fn=collate_fn, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))


class ResumeState(L.Callback):
    """Saves the step and the random generators with each checkpoint; restores both on resume."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        state = {"step": trainer.global_step, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint[KEY] = state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        state = checkpoint.get(KEY)
        if state is None:  # a checkpoint from before this state was kept: resumes, not exactly
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        order = self.loader.sampler
        if isinstance(order, EpochOrder) and trainer.world_size == 1:
            per_epoch = len(self.loader)
            order.start_at(state["step"] // per_epoch, state["step"] % per_epoch * self.loader.batch_size)
