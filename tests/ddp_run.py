"""Entry point of the DDP test (tests/test_ddp.py): one AVID training run on 2 CPU processes
(Lightning's "ddp" strategy, gloo backend). Lightning starts rank 1 by running this script again.

Each rank writes ``<folder>/rank<R>.json``: the digest of its trainable weights after training and
every path under the run folder that the process opened for writing (seen by an audit hook)."""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

folder = Path(sys.argv[1])
run = (folder / "run").resolve()
written: set[str] = set()


def _audit(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        path, mode, flags = str(args[0]), args[1], args[2]
        writing = (mode and any(m in mode for m in "wax+")) or (mode is None and flags & (os.O_WRONLY | os.O_RDWR))
        if writing and str(Path(path).resolve()).startswith(str(run)):
            written.add(str(Path(path).resolve().relative_to(run)))


sys.addaudithook(_audit)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avid.train import harness, run as run_mod  # noqa: E402
from tests.test_train import run_config  # noqa: E402

trainers = []


class RecordingTrainer(harness.L.Trainer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        trainers.append(self)


harness.L.Trainer = RecordingTrainer
torch.set_num_threads(1)
cfg = run_config(folder, folder / "base", folder / "data", steps=int(sys.argv[2]), devices=2, strategy="ddp",
                 accelerator="cpu")
run_mod.train(cfg)
trainer = trainers[0]
digest = hashlib.sha256()
for name, p in sorted(trainer.lightning_module.named_parameters()):
    if p.requires_grad:
        digest.update(name.encode() + p.detach().cpu().numpy().tobytes())
(folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(
    {"rank": trainer.global_rank, "world_size": trainer.world_size, "step": trainer.global_step,
     "weights": digest.hexdigest(), "written": sorted(written)}))
