"""The runs a pipeline trains (``avid experiment coinrun``, ``avid experiment scaling``): a method's run
config at a size preset's size, training that records its wall and CPU time beside the run
(``experiment.json``, summed over resumed segments), and the step a run has reached.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from avid.checkpoint import load_config
from avid.config import RunConfig, load
from avid.cputime import cpu_seconds
from avid.data.storage import atomic_write_text
from avid.methods.sizes import SizePreset
from avid.train import train, with_method_defaults

def _dotted(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _dotted(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def sized_run_config(template: RunConfig, method: str, preset: SizePreset, train_dir: Path, out: Path, name: str,
                     settings: dict[str, Any] | None = None, **train_values: Any) -> RunConfig:
    """``template`` training ``method`` at the preset's size on ``train_dir`` into ``out``, with
    ``train_values`` in its ``train`` section (None included: ``max_minutes=None`` lifts a cap), then
    the dotted ``settings`` (e.g. ``{"train.lr": 2e-5}``), merged by the one rule (``avid.config.load``)."""
    start = dataclasses.replace(template, train=dataclasses.replace(template.train, **train_values))
    values = {"name": name, "out": str(out), "data.train": str(train_dir),
              "method": {"name": method, "options": preset.options(method)}, **dict(_dotted(settings or {}))}
    return with_method_defaults(load(RunConfig, values=values, start=start, what="run config"))


def trained_step(folder: Path) -> int | None:
    """The step of the exported model in ``folder`` (None: nothing exported yet)."""
    return int(load_config(folder)["step"]) if (folder / "config.yaml").exists() else None


def budget_record(folder: Path) -> dict[str, Any]:
    """The training a run folder has had: wall and CPU seconds (this process, all threads, and the
    black-box worker it started: ``avid.cputime``), segments."""
    path = folder / "experiment.json"
    return {"train_seconds": 0.0, "cpu_seconds": 0.0, "segments": 0, **(json.loads(path.read_text()) if path.exists()
                                                                        else {})}


def timed_train(cfg: RunConfig) -> dict[str, Any]:
    """``train(cfg)``, adding its wall and CPU seconds to the run folder's record (``budget_record``),
    also when the segment is stopped (Ctrl-C, SIGTERM: the run resumes, and its budget counts the time)."""
    folder = Path(cfg.out)
    record = budget_record(folder)
    t0, c0 = time.time(), cpu_seconds()
    try:
        train(cfg)
    finally:
        record = {"train_seconds": record["train_seconds"] + time.time() - t0,
                  "cpu_seconds": record["cpu_seconds"] + cpu_seconds() - c0, "segments": record["segments"] + 1}
        if folder.is_dir():
            atomic_write_text(folder / "experiment.json", json.dumps(record, indent=1))
    return record
