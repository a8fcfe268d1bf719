"""Training and evaluating the action classifier of the Action Error Ratio (paper section 9.3).

A run folder holds ``run.yaml`` (resolved config), ``checkpoints/last.ckpt`` (full state for
resume), ``model.safetensors`` + ``config.yaml`` (the classifier, EMA weights when EMA is on) and
``logs/metrics.csv``. Running the same command again resumes from ``last.ckpt``. With ``export``
set, the finished classifier is also written there (in ``train.export_dtype``) together with its
held-out score, measured on the exported weights themselves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from avid import tiny
from avid.checkpoint import resolve
from avid.config import apply_overrides, build_section, read_mapping
from avid.data import EpisodeStore, WindowDataset, collate
from avid.data.storage import atomic_write_text
from avid.config import check_numbers
from avid.locks import locked
from avid.metrics.action_classifier import (CLASSIFIER_KIND, ActionClassifier, ClassifierConfig, action_accuracy,
                                            action_mae, load_classifier, save_classifier)
from avid.nn import count_parameters
from avid.options import build
from avid.train.data_order import ResumeState, training_loader
from avid.train.module import MethodModule
from avid.precision import resolve_precision
from avid.train.callbacks import SaveEvery, SaveLast, WarmupEMA, fit, run_callbacks
from avid.train.run import train_device
from avid.train.run_folder import AtomicCheckpointIO, claim_run_folder

log = logging.getLogger("avid")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ClassifierTrainConfig:
    max_steps: int = 4000
    max_minutes: float | None = None  # stop after this wall time (whichever comes first)
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float | None = 0.999  # None: no EMA
    precision: str = "auto"  # see avid.precision: "auto", "fp32", "bf16" (Lightning names accepted)
    num_workers: int = 0
    log_every: int = 25
    ckpt_every: int = 250
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: all cores)
    accelerator: str = "auto"
    progress: bool = True
    export_dtype: str = "float32"  # dtype of the weights written to ``export``

    def __post_init__(self) -> None:
        check_numbers(self, "train", at_least_1=("max_steps", "batch_size", "log_every", "ckpt_every"),
                      at_least_0=("lr", "weight_decay", "grad_clip", "num_workers"))
        if self.export_dtype not in DTYPES:
            raise ValueError(f"export_dtype must be one of {sorted(DTYPES)}, got {self.export_dtype!r}")


@dataclass
class ClassifierRunConfig:
    """One classifier experiment. ``classifier`` holds ``ClassifierConfig`` fields; the action space
    and frame size come from the training data's metadata."""

    out: str = "runs/action-classifier"
    data: str = "data/coinrun-classifier-cpu"
    eval_data: str | None = None  # held-out trajectories (one window each)
    eval_limit: int | None = None
    export: str | None = None  # also write the finished classifier here
    classifier: dict[str, Any] = field(default_factory=dict)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classifier_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ClassifierRunConfig:
    """Defaults, then the YAML file, then ``dotted.key=value`` overrides (values parsed as YAML)."""
    return classifier_run_config_from_dict(apply_overrides(read_mapping(path) if path is not None else {}, overrides))


def classifier_run_config_from_dict(d: dict[str, Any]) -> ClassifierRunConfig:
    d = dict(d)
    train = build_section(ClassifierTrainConfig, d.pop("train", None) or {}, "train")
    return build_section(ClassifierRunConfig, {**d, "train": train}, "top level")


def build_classifier(meta: dict[str, Any], options: dict[str, Any], actions=None) -> ActionClassifier:
    """A fresh classifier for a dataset's action space and frame size (``meta``); continuous actions
    get the per-dimension mean and standard deviation of the training ``actions`` for normalisation."""
    opts = dict(options)
    opts.update(action_kind=meta.get("action_kind", "discrete"), num_actions=int(meta.get("num_actions", 15)),
                frame_size=int(meta.get("frame_size", 64)))
    if opts["action_kind"] == "continuous":
        a = torch.as_tensor(actions).float()
        opts.update(action_mean=a.mean(0).tolist(), action_std=a.std(0).clamp_min(1e-6).tolist())
    return ActionClassifier(build(ClassifierConfig, opts, "config section 'classifier'"))


def heldout(data: str | Path, cfg: ClassifierConfig, limit: int | None = None):
    """``(first, x0, actions)`` of every stored trajectory of ``data`` (one window per trajectory)."""
    ds = WindowDataset(resolve(data), cfg.frames, cfg.cond_frames, stride=cfg.frames, limit=limit)
    b = collate([ds[j] for j in range(len(ds))])
    return b.first, b.x0, b.actions


def evaluate_classifier(classifier: ActionClassifier, data: str | Path, limit: int | None = None,
                        batch_size: int = 64, classes: list[int] | None = None) -> float:
    """Held-out accuracy (discrete; over action ``classes`` if given) or MAE on normalised actions
    (continuous) on real videos."""
    first, x0, actions = heldout(data, classifier.cfg, limit)
    if classes is not None:
        return action_accuracy(classifier, first, x0, actions, batch_size, classes)
    score = action_accuracy if classifier.discrete else action_mae
    return score(classifier, first, x0, actions, batch_size)


class ExportClassifier(Callback):
    """Writes the classifier folder (``model.safetensors`` + ``config.yaml``) into the run folder
    at every checkpoint (from the EMA weights when EMA is on) and when training ends."""

    def __init__(self, out: Path, run: ClassifierRunConfig) -> None:
        self.out, self.run = out, run

    def export(self, trainer: L.Trainer, pl_module: MethodModule, state: dict[str, torch.Tensor]) -> None:
        if trainer.global_rank != 0:
            return
        clf = pl_module.method
        own = set(clf.state_dict())
        weights = {k[7:]: v for k, v in state.items() if k.startswith("method.") and k[7:] in own}
        save_classifier(self.out, clf, state=weights, step=trainer.global_step, run=self.run.to_dict())

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.export(trainer, pl_module, checkpoint["state_dict"])

    def on_train_end(self, trainer, pl_module) -> None:  # EMA weights are copied in by now
        self.export(trainer, pl_module, pl_module.state_dict())


@locked(lambda a: a["out"])
def train_classifier(data_dir: str | Path, out: str | Path, run: ClassifierRunConfig | None = None,
                     **train_overrides: Any) -> Path:
    """Train an action classifier on ``data_dir``'s windows into ``out``; returns the folder that
    holds the finished classifier (``run.export`` when set, else ``out``). Resumes from
    ``out/checkpoints/last.ckpt``. ``train_overrides`` set ``ClassifierTrainConfig`` fields."""
    run = run or ClassifierRunConfig()
    run = replace(run, data=str(data_dir), out=str(out),
                  train=tiny.training(ClassifierTrainConfig(**{**asdict(run.train), **train_overrides})))
    tc = run.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    out = Path(out)
    claim_run_folder(out, CLASSIFIER_KIND, run.to_dict(), ("classifier",),
                     normalise=lambda d: classifier_run_config_from_dict(d).to_dict())
    L.seed_everything(tc.seed, workers=True, verbose=False)
    store = EpisodeStore(resolve(data_dir))
    defaults = ClassifierConfig()
    data = WindowDataset(store, run.classifier.get("frames", defaults.frames),
                         run.classifier.get("cond_frames", defaults.cond_frames))
    clf = build_classifier(store.meta, run.classifier, data.actions)
    atomic_write_text(out / "run.yaml", yaml.safe_dump(run.to_dict(), sort_keys=False))
    log.info("action classifier: %.2fM parameters, %d training windows, %s actions", count_parameters(clf) / 1e6,
             len(data), clf.cfg.action_kind)
    loader = training_loader(data, tc.batch_size, tc.num_workers, tc.seed, collate)
    module = MethodModule(clf, lr=tc.lr, weight_decay=tc.weight_decay)
    last = out / "checkpoints" / "last.ckpt"
    save_last = SaveLast(last)
    callbacks = [save_last]  # before EMA: its on_train_end must see the raw weights
    if tc.ema_decay:
        callbacks.append(WarmupEMA(tc.ema_decay))
    callbacks += [ExportClassifier(out, run), SaveEvery(save_last, tc.ckpt_every),
                  *run_callbacks(last, tc.progress, "train action classifier", tc.max_minutes),
                  ResumeState(loader)]
    precision = resolve_precision(tc.precision, train_device(tc.accelerator))
    log.info("precision: %s", precision.describe())
    trainer = L.Trainer(
        max_steps=tc.max_steps, max_epochs=-1,
        max_time=timedelta(minutes=tc.max_minutes) if tc.max_minutes else None,
        accelerator=tc.accelerator, devices=1, precision=precision.lightning, gradient_clip_val=tc.grad_clip or None,
        callbacks=callbacks, logger=CSVLogger(out, name="logs", version=""), log_every_n_steps=tc.log_every,
        enable_progress_bar=tc.progress, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
        default_root_dir=out, plugins=[AtomicCheckpointIO()])
    t0 = time.time()
    fit(trainer, module, loader, last)  # Ctrl-C / SIGTERM: saved, then raised again
    log.info("trained to step %d in %.0f s", trainer.global_step, time.time() - t0)
    return finish(out, run, trainer.global_step)


def finish(out: Path, run: ClassifierRunConfig, step: int) -> Path:
    """Write the trained classifier to ``run.export`` (or back to ``out``) in ``train.export_dtype``
    and score the held-out set with the weights as written, after the dtype cast."""
    dest = Path(run.export) if run.export else out
    dtype = DTYPES[run.train.export_dtype]
    info: dict[str, Any] = {"step": step, "weights_dtype": run.train.export_dtype, "run": run.to_dict()}
    save_classifier(dest, load_classifier(out), dtype=dtype, **info)
    if run.eval_data:
        shipped = load_classifier(dest)
        score = evaluate_classifier(shipped, run.eval_data, run.eval_limit)
        name = "held_out_accuracy" if shipped.discrete else "held_out_mae"
        log.info("%s on %s: %.4f", name, run.eval_data, score)
        info.update({name: round(score, 4), "eval_data": run.eval_data, "eval_limit": run.eval_limit})
        save_classifier(dest, shipped, dtype=dtype, **info)
    return dest


__all__ = ["ClassifierRunConfig", "ClassifierTrainConfig", "classifier_run_config", "evaluate_classifier",
           "heldout", "train_classifier"]
