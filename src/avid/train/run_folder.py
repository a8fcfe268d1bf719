"""What a training run may do to its output folder.

``claim_run_folder`` refuses a folder that holds anything but a run of the same kind and identity
(a base model, a classifier, an ``avid export`` folder, a dataset, a run of another method or base):
training would overwrite it. It also removes the temporary files a killed writer left there; call it
while holding the folder's lock (``avid.locks``). ``AtomicCheckpointIO`` writes Lightning
checkpoints to a temporary file and renames them, so ``last.ckpt`` is always a whole checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from lightning.pytorch.plugins.io import TorchCheckpointIO

from avid.checkpoint import CONFIG, load_config
from avid.data.storage import atomic_write, clean_temp
from avid.locks import LOCK_NAME

RUN_RECORD = "run.yaml"


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def claim_run_folder(out: str | Path, kind: str, run: dict[str, Any], same: tuple[str, ...],
                     normalise: Callable[[dict[str, Any]], dict[str, Any]] = dict) -> None:
    """Refuse ``out`` unless it is new, empty, or holds a run (``run.yaml``) that wrote models of
    ``kind`` with the same values at the dotted keys ``same``. ``normalise`` turns a recorded
    ``run.yaml`` into the form of ``run`` (raising ``ValueError`` for a record of another kind)."""
    out = Path(out)
    if not out.is_dir():
        return
    clean_temp(out)
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if not entries:
        return
    refuse = f"training would overwrite it: choose a new or empty `out` folder (not {out})"
    if (out / CONFIG).exists() and (found := load_config(out).get("kind")) != kind:
        raise ValueError(f"{out} holds a model of kind {found!r}, this run writes {kind!r}; {refuse}")
    record = out / RUN_RECORD
    if not record.exists():
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"{out} holds files no training run of avid made ({shown}; no {RUN_RECORD}); {refuse}")
    try:
        recorded = normalise(yaml.safe_load(record.read_text()) or {})
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{out} holds a run of another kind ({record}: {e}); {refuse}") from None
    for key in same:
        if _get(recorded, key) != _get(run, key):
            raise ValueError(f"{out} holds a run with another {key} ({_get(recorded, key)!r}; this run: "
                             f"{_get(run, key)!r}); resuming would mix the two: {refuse}, or delete it to start over")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written whole or not at all; an unreadable one is a clear error."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, *args, **kwargs) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"cannot resume: checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete "
                             "it to train from the start") from None
