"""Training and evaluating the action classifier of the Action Error Ratio (paper section 9.3).

Trained by the same harness as every method (``avid.train.harness``), with the same ``TrainConfig``:
a run folder holds ``run.yaml`` (resolved config), ``checkpoints/last.ckpt`` (full state for resume),
``model.safetensors`` + ``config.yaml`` (the classifier, EMA weights when EMA is on) and
``logs/version_N/``. Running the same command again resumes from ``last.ckpt``. With ``export``
set, the finished classifier is also written there (in ``export_dtype``) together with its held-out
score, measured on the exported weights themselves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from avid import tiny
from avid.checkpoint import resolve
from avid.config import TrainConfig, from_dict, load
from avid.data import EpisodeStore, WindowDataset, collate
from avid.locks import locked
from avid.metrics.action_classifier import (CLASSIFIER_KIND, ActionClassifier, ClassifierConfig, action_accuracy,
                                            action_mae, load_classifier, save_classifier)
from avid.options import build
from avid.precision import resolve_precision
from avid.train.harness import fit_run, start
from avid.train.run_folder import claim_run_folder

log = logging.getLogger("avid")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def classifier_training() -> TrainConfig:
    """The classifier's training defaults (the shared ``TrainConfig``)."""
    return TrainConfig(max_steps=4000, batch_size=16, lr=3e-4, weight_decay=0.01, ema_decay=0.999, log_every=25,
                       ckpt_every=250)


@dataclass
class ClassifierRunConfig:
    """One classifier experiment. ``classifier`` holds ``ClassifierConfig`` fields; the action space
    and frame size come from the training data's metadata."""

    out: str = "runs/action-classifier"
    data: str = "data/coinrun-classifier-cpu"
    eval_data: str | None = None  # held-out trajectories (one window each)
    eval_limit: int | None = None
    export: str | None = None  # also write the finished classifier here
    export_dtype: str = "float32"  # dtype of the weights written to ``export``
    classifier: dict[str, Any] = field(default_factory=dict, metadata={"keys_of": ClassifierConfig})
    train: TrainConfig = field(default_factory=classifier_training)

    def __post_init__(self) -> None:
        self.eval_data, self.export = self.eval_data or None, self.export or None  # '': none
        if self.export_dtype not in DTYPES:
            raise ValueError(f"export_dtype must be one of {sorted(DTYPES)}, got {self.export_dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classifier_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                          values: dict[str, Any] | None = None) -> ClassifierRunConfig:
    """Defaults, then the YAML file, then ``--set`` overrides, then flags (``avid.config.load``)."""
    return load(ClassifierRunConfig, path, overrides, values, "classifier config")


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


def mean_action_mae(regressor: ActionClassifier, data: str | Path, limit: int | None = None) -> float:
    """A continuous regressor's chance level: the held-out MAE of always predicting the training
    set's mean action (0 in its normalised units)."""
    _, _, actions = heldout(data, regressor.cfg, limit)
    return float(regressor.normalise(actions).abs().mean())


def score_line(classifier: str | Path, data: str | Path, limit: int | None = None, classes: str | None = None,
               precision: str = "auto") -> str:
    """``avid classifier eval``: the held-out score of the classifier folder ``classifier`` on ``data``
    in words: accuracy (over the action classes of an aliasing report ``classes`` if given) or MAE."""
    clf = load_classifier(classifier)
    with resolve_precision(precision).autocast():
        if classes:
            from avid.data.aliasing import load_classes

            labels = load_classes(classes)
            score = evaluate_classifier(clf, data, limit, classes=labels)
            return (f"held-out accuracy over the {max(labels) + 1} action classes of {classes}: {score:.4f} "
                    f"(chance and ceiling: {classes.rsplit('.', 1)[0]}.md) on {data}")
        score = evaluate_classifier(clf, data, limit)
    name = "accuracy" if clf.discrete else "MAE (normalised actions)"
    chance = (f" (chance {1 / clf.cfg.num_actions:.3f})" if clf.discrete else
              f" (predicting the training mean action: {mean_action_mae(clf, data, limit):.4f})")
    return f"held-out action {name}: {score:.4f}{chance} on {data}"


@locked(lambda a: a["run"].out)
def train_classifier(run: ClassifierRunConfig) -> Path:
    """Train an action classifier on ``run.data``'s windows into ``run.out`` (``avid.train.harness``);
    returns the folder that holds the finished classifier (``run.export`` when set, else ``run.out``).
    Resumes from ``out/checkpoints/last.ckpt``."""
    run = replace(run, train=tiny.training(run.train))  # AVID_TINY=1: smoke-test size
    out = Path(run.out)
    claim_run_folder(out, CLASSIFIER_KIND, run.to_dict(), ("classifier",),
                     normalise=lambda d: from_dict(ClassifierRunConfig, d).to_dict())
    precision = start(run.train)
    store = EpisodeStore(resolve(run.data))
    defaults = ClassifierConfig()
    data = WindowDataset(store, run.classifier.get("frames", defaults.frames),
                         run.classifier.get("cond_frames", defaults.cond_frames))
    clf = build_classifier(store.meta, run.classifier, data.actions)

    def write(weights: dict[str, torch.Tensor], step: int) -> None:
        save_classifier(out, clf, state=weights, step=step, run=run.to_dict())

    step = fit_run(clf, data, run.train, out, run.to_dict(), write, "action classifier", precision)
    return finish(out, run, step)


def finish(out: Path, run: ClassifierRunConfig, step: int) -> Path:
    """Write the trained classifier to ``run.export`` (or back to ``out``) in ``train.export_dtype``
    and score the held-out set with the weights as written, after the dtype cast."""
    dest = Path(run.export) if run.export else out
    dtype = DTYPES[run.export_dtype]
    info: dict[str, Any] = {"step": step, "weights_dtype": run.export_dtype, "run": run.to_dict()}
    save_classifier(dest, load_classifier(out), dtype=dtype, **info)
    if run.eval_data:
        shipped = load_classifier(dest)
        score = evaluate_classifier(shipped, run.eval_data, run.eval_limit)
        name = "held_out_accuracy" if shipped.discrete else "held_out_mae"
        log.info("%s on %s: %.4f", name, run.eval_data, score)
        info.update({name: round(score, 4), "eval_data": run.eval_data, "eval_limit": run.eval_limit})
        if not shipped.discrete:  # the chance level of a regressor: predicting the training mean action
            info["held_out_mae_of_mean_action"] = round(mean_action_mae(shipped, run.eval_data, run.eval_limit), 4)
        save_classifier(dest, shipped, dtype=dtype, **info)
    return dest


__all__ = ["ClassifierRunConfig", "classifier_run_config", "classifier_training", "evaluate_classifier",
           "heldout", "mean_action_mae", "score_line", "train_classifier"]
