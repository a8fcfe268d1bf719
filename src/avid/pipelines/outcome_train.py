"""``avid outcome train``: collect real steps of the game on three disjoint level ranges, train the
reward/termination model on the first, choose its thresholds on the second and state its precision
and recall on the third (unseen levels), at the game's own event rates.

Trained by the project's one harness (``avid.train.harness``) like every other trainable thing: the
run folder (``run``) holds ``run.yaml``, ``checkpoints/last.ckpt`` (rerunning resumes) and
``logs/``; the finished model, its thresholds and its scores go to ``out``. The collected steps are
kept in ``data`` and reused when the same command runs again. Configured through ``avid.config.load``
(defaults, ``--config`` YAML, ``--set key=value``, then the command's flags)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avid import tiny
from avid.checkpoint import load_config
from avid.config import TrainConfig, load
from avid.data.procgen import collect_outcomes
from avid.data.storage import atomic_write
from avid.envs.outcome import (HEADS, OUTCOME_KIND, BalancedSteps, OutcomeConfig, OutcomeModel, OutcomeNet,
                               best_threshold, collate_steps, labels, load_outcome, precision_recall,
                               save_outcome)
from avid.locks import folder_lock, locked
from avid.train.harness import fit_run, start
from avid.train.run_folder import claim_run_folder

log = logging.getLogger("avid")
SPLITS = ("train", "val", "test")


@dataclass
class OutcomeSplit:
    """Levels ``start_level .. start_level + levels - 1``, ``steps`` steps of 64 parallel games."""

    start_level: int
    levels: int
    steps: int
    seed: int


def outcome_training() -> TrainConfig:
    """The outcome model's training defaults (the shared ``TrainConfig``)."""
    return TrainConfig(max_steps=2000, batch_size=64, lr=1e-3, weight_decay=1e-4, ema_decay=None, log_every=50,
                       ckpt_every=500)


@dataclass
class OutcomeRunConfig:
    game: str = "coinrun"
    data: str = "data/outcomes-coinrun"  # the collected steps (reused)
    run: str = "runs/outcome-coinrun"  # the training run's folder (resumable)
    out: str = "assets/outcome-coinrun"  # the finished model, with its thresholds and scores
    keep_negatives: float = 0.02  # steps without an event are kept with this probability (and weight 1/it)
    width: int = 32
    # disjoint level ranges
    train_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(50000, 1000, 12000, 0))
    val_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(51000, 500, 3000, 1))
    test_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(52000, 500, 6000, 2))
    train: TrainConfig = field(default_factory=outcome_training)

    def __post_init__(self) -> None:
        if not 0 < self.keep_negatives <= 1:
            raise ValueError(f"keep_negatives must lie in (0, 1], got {self.keep_negatives}")
        spans = sorted((s.start_level, s.start_level + s.levels, name) for name, s in self.splits().items())
        for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
            if begin < end:
                raise ValueError(f"the {a} and {b} splits share levels: their level ranges must be disjoint")

    def splits(self) -> dict[str, OutcomeSplit]:
        return {"train": self.train_split, "val": self.val_split, "test": self.test_split}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                       values: dict[str, Any] | None = None) -> OutcomeRunConfig:
    return load(OutcomeRunConfig, path, overrides, values, "outcome config")


def load_split(cfg: OutcomeRunConfig, split: str, progress: bool = True) -> dict[str, np.ndarray]:
    s = cfg.splits()[split]
    wanted = {"game": cfg.game, "start_level": s.start_level, "num_levels": s.levels, "steps": s.steps,
              "seed": s.seed, "cond_frames": 2, "keep_negatives": cfg.keep_negatives, "num_envs": 64}
    path = Path(cfg.data) / f"{split}.npz"
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["spec"])) == wanted:
                return {k: z[k] for k in z.files if k != "spec"}
    data = collect_outcomes(cfg.game, s.start_level, s.levels, s.steps, keep_negatives=cfg.keep_negatives,
                            seed=s.seed, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, spec=json.dumps(wanted), **data))
    return data


@locked(lambda a: a["run"])
def train_outcome(data: dict[str, np.ndarray], cfg: OutcomeConfig, t: TrainConfig, run: str | Path,
                  record: dict[str, Any] | None = None) -> OutcomeNet:
    """Fit an ``OutcomeNet`` on collected steps (``BalancedSteps``, binary cross-entropy on both heads)
    with the harness into the run folder ``run``; resumes from its last checkpoint."""
    out = Path(run)
    record = json.loads(json.dumps({"outcome": asdict(cfg), "train": asdict(t), **(record or {})}))  # YAML's types
    claim_run_folder(out, OUTCOME_KIND, record, ("outcome",))
    precision = start(t)
    net = OutcomeNet(cfg)

    def write(weights: dict[str, torch.Tensor], step: int) -> None:
        save_outcome(out, net, state=weights, step=step)

    fit_run(net, BalancedSteps(data), t, out, record, write, OutcomeNet.name, precision, collate_fn=collate_steps)
    return load_outcome(out).net  # the weights the run folder holds, as for every harness-trained model


def make_outcome_model(cfg: OutcomeRunConfig, command: str = "", progress: bool = True) -> dict:
    """Collect (or reuse), train, choose thresholds on the val levels, score on the test levels, save to ``cfg.out``."""
    cfg = replace(cfg, train=tiny.training(cfg.train))  # AVID_TINY=1: smoke-test size
    out = Path(cfg.out)
    if (out / "config.yaml").exists() and (kind := load_config(out).get("kind")) != OUTCOME_KIND:
        raise ValueError(f"{out} holds a model of kind {kind!r}, not a reward/termination model; choose another --out")
    if out.resolve() == Path(cfg.run).resolve():
        raise ValueError(f"the run folder and the model folder must differ (both {out})")
    t0 = time.process_time()
    data = {s: load_split(cfg, s, progress) for s in SPLITS}
    collect_cpu = time.process_time() - t0
    rewards = data["train"]["reward"][data["train"]["reward"] > 0]
    net_cfg = OutcomeConfig(reward_value=float(rewards.max()) if len(rewards) else 1.0, width=cfg.width)
    net = train_outcome(data["train"], net_cfg, cfg.train, cfg.run, {"game": cfg.game, "data": cfg.data})
    model = OutcomeModel(net)
    probs = {s: model.probabilities(data[s]["context"], data[s]["actions"]) for s in ("val", "test")}
    y = {s: labels(data[s]) for s in ("val", "test")}
    thresholds = tuple(best_threshold(probs["val"][:, h], y["val"][:, h], data["val"]["weight"])
                       for h in range(len(HEADS)))
    net.cfg.thresholds = thresholds
    scores = {s: {head: precision_recall(probs[s][:, h], y[s][:, h], data[s]["weight"], thresholds[h])
                  for h, head in enumerate(HEADS)} for s in ("val", "test")}
    info = {"scores": scores, "spec": cfg.to_dict(),
            "cpu_seconds": {"collect": round(collect_cpu, 1),
                            "train_and_score": round(time.process_time() - t0 - collect_cpu, 1)},
            "steps_per_split": {s: {"kept": int(len(d["actions"])), "weighted": float(d["weight"].sum())}
                                for s, d in data.items()},
            "command": command,
            "note": "precision/recall at the game's own rates: steps without an event were kept with probability "
                    f"{cfg.keep_negatives} and count 1/{cfg.keep_negatives} each; thresholds: best F1 on the "
                    "val levels; scores['test']: unseen levels"}
    with folder_lock(out):
        save_outcome(out, net, **info)
    return info


__all__ = ["OutcomeRunConfig", "OutcomeSplit", "make_outcome_model", "outcome_run_config", "train_outcome"]
