"""``avid outcome train``: collect real steps of the game on three disjoint level ranges, train the
reward/termination model on the first, choose its thresholds on the second and state its precision
and recall on the third (unseen levels), at the game's own event rates. The collected steps are
kept in ``--data`` and reused when the same command runs again."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from avid.data.procgen import collect_outcomes
from avid.data.storage import atomic_write
from avid.envs.outcome import HEADS, OutcomeConfig, OutcomeModel, best_threshold, labels, precision_recall, \
    save_outcome, train_outcome


@dataclass
class OutcomeSpec:
    game: str = "coinrun"
    # (start level, number of levels, steps of 64 parallel games, seed) per split; disjoint level ranges
    splits: dict[str, tuple[int, int, int, int]] = field(default_factory=lambda: {
        "train": (50000, 1000, 12000, 0), "val": (51000, 500, 3000, 1), "test": (52000, 500, 6000, 2)})
    keep_negatives: float = 0.02
    train_steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def load_split(spec: OutcomeSpec, split: str, data_dir: Path, progress: bool = True) -> dict[str, np.ndarray]:
    start, num, steps, seed = spec.splits[split]
    wanted = {"game": spec.game, "start_level": start, "num_levels": num, "steps": steps, "seed": seed,
              "cond_frames": 2, "keep_negatives": spec.keep_negatives, "num_envs": 64}
    path = data_dir / f"{split}.npz"
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["spec"])) == wanted:
                return {k: z[k] for k in z.files if k != "spec"}
    data = collect_outcomes(spec.game, start, num, steps, keep_negatives=spec.keep_negatives, seed=seed,
                            progress=progress)
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, spec=json.dumps(wanted), **data))
    return data


def make_outcome_model(spec: OutcomeSpec, data_dir: str | Path, out: str | Path, command: str = "",
                       progress: bool = True) -> dict:
    """Collect (or reuse), train, choose thresholds, score on unseen levels, save to ``out``."""
    torch.set_num_threads(1)
    t0 = time.process_time()
    data = {s: load_split(spec, s, Path(data_dir), progress) for s in ("train", "val", "test")}
    collect_cpu = time.process_time() - t0
    rewards = data["train"]["reward"][data["train"]["reward"] > 0]
    cfg = OutcomeConfig(reward_value=float(rewards.max()) if len(rewards) else 1.0)
    net = train_outcome(data["train"], cfg, spec.train_steps, spec.batch_size, spec.lr, spec.seed)
    model = OutcomeModel(net)
    probs = {s: model.probabilities(data[s]["context"], data[s]["actions"]) for s in ("val", "test")}
    y = {s: labels(data[s]) for s in ("val", "test")}
    thresholds = tuple(best_threshold(probs["val"][:, h], y["val"][:, h], data["val"]["weight"])
                       for h in range(len(HEADS)))
    net.cfg.thresholds = thresholds
    scores = {s: {head: precision_recall(probs[s][:, h], y[s][:, h], data[s]["weight"], thresholds[h])
                  for h, head in enumerate(HEADS)} for s in ("val", "test")}
    info = {"scores": scores, "spec": {**asdict(spec), "splits": {k: list(v) for k, v in spec.splits.items()}},
            "cpu_seconds": {"collect": round(collect_cpu, 1), "train_and_score": round(time.process_time() - t0
                                                                                       - collect_cpu, 1)},
            "steps_per_split": {s: {"kept": int(len(d["actions"])), "weighted": float(d["weight"].sum())}
                                for s, d in data.items()},
            "command": command,
            "note": "precision/recall at the game's own rates: steps without an event were kept with probability "
                    f"{spec.keep_negatives} and count 1/{spec.keep_negatives} each; thresholds: best F1 on the "
                    "val levels; scores['test']: unseen levels"}
    save_outcome(out, net, **info)
    return info
