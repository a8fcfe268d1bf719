"""``avid outcome train``: collect real steps of the game on three disjoint level ranges, train the
reward/termination model on the first, choose its thresholds on the second and state its precision
and recall on the third (unseen levels), at the game's own event rates.

With ``imagined_by`` (a world model: a trained run or a base model folder), the model also learns
from what that world model imagines: each collected step's last frames are generated from the real
frames ``h - 1`` steps before it under the real actions (``h - 1`` drawn from ``imagined_frames``,
the way ``avid outcome check`` measures), labelled with the real outcome, so that the reward and
the ends an agent meets inside that world model are found in imagined frames; the thresholds are
then chosen on imagined validation contexts and both real and imagined test scores are stated.

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
from avid.cputime import cpu_seconds
from avid.data.procgen import NOOP, collect_outcomes
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
    imagined_by: str | None = None  # a world model (run or base folder): also learn from its imagined contexts
    imagined_frames: list[int] = field(default_factory=lambda: [1, 2, 3])  # imagined frames before the step
    imagined_chunk: int = 1  # frames per model call while imagining (1: as WorldModelEnv steps)
    imagined_ddim_steps: int = 4  # the env's default sampler
    # disjoint level ranges
    train_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(50000, 1000, 12000, 0))
    val_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(51000, 500, 3000, 1))
    test_split: OutcomeSplit = field(default_factory=lambda: OutcomeSplit(52000, 500, 6000, 2))
    train: TrainConfig = field(default_factory=outcome_training)

    def __post_init__(self) -> None:
        if not 0 < self.keep_negatives <= 1:
            raise ValueError(f"keep_negatives must lie in (0, 1], got {self.keep_negatives}")
        if not self.imagined_frames or min(self.imagined_frames) < 1 or self.imagined_chunk < 1:
            raise ValueError(f"imagined_frames must be a non-empty list of counts >= 1 and imagined_chunk >= 1, got "
                             f"{self.imagined_frames} and {self.imagined_chunk}")
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
    history = max(cfg.imagined_frames) if cfg.imagined_by else 0
    wanted = {"game": cfg.game, "start_level": s.start_level, "num_levels": s.levels, "steps": s.steps,
              "seed": s.seed, "cond_frames": 2, "keep_negatives": cfg.keep_negatives, "num_envs": 64}
    if history:
        wanted["history"] = history
    path = Path(cfg.data) / f"{split}.npz"
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["spec"])) == wanted:
                return {k: z[k] for k in z.files if k != "spec"}
    data = collect_outcomes(cfg.game, s.start_level, s.levels, s.steps, keep_negatives=cfg.keep_negatives,
                            seed=s.seed, progress=progress, history=history)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, spec=json.dumps(wanted), **data))
    return data


def imagine_split(cfg: OutcomeRunConfig, split: str, data: dict[str, np.ndarray], progress: bool = True
                  ) -> dict[str, np.ndarray]:
    """``data`` with its contexts imagined by ``cfg.imagined_by`` (module doc): item ``i``'s last
    ``h_i - 1`` frames generated, ``h_i - 1`` drawn from ``cfg.imagined_frames`` (seeded by the split).
    Cached in ``cfg.data``/imagined-``split``.npz, keyed by the world model and the settings."""
    from avid.checkpoint import resolve
    from avid.config import SampleConfig
    from avid.pipelines.imagined_events import contexts_before
    from avid.train import load_method

    world = resolve(cfg.imagined_by)
    step = load_config(world).get("step")
    s = cfg.splits()[split]
    wanted = {"world": str(world), "world_step": step, "frames": list(cfg.imagined_frames),
              "chunk": cfg.imagined_chunk, "ddim_steps": cfg.imagined_ddim_steps, "seed": s.seed,
              "items": int(len(data["actions"]))}
    path = Path(cfg.data) / f"imagined-{split}.npz"
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["spec"])) == wanted:
                return {**data, "context": z["context"], "imagined": z["imagined"]}
    method, _ = load_method(world)
    k = data["context"].shape[1]
    if method.ctx.cond_frames > k:
        raise ValueError(f"{world} conditions on {method.ctx.cond_frames} frames; the outcome model reads {k}")
    rng = np.random.default_rng(s.seed)
    counts = rng.choice(np.asarray(cfg.imagined_frames), len(data["actions"]))  # imagined frames per item
    pad = np.full((len(counts), k - 1), NOOP, np.int64)  # never read: actions before the first frame kept
    windows = {"frames": np.concatenate([data["before"], data["context"]], axis=1),
               "actions": np.concatenate([pad, data["actions_before"], data["actions"][:, None]], axis=1)}
    sample = SampleConfig(sampler="ddim", steps=cfg.imagined_ddim_steps, batch_size=64, seed=s.seed)
    context = data["context"].copy()
    t0 = time.time()
    for c in np.unique(counts):
        idx = np.flatnonzero(counts == c)
        for part in np.array_split(idx, max(1, len(idx) // 512)):  # bounded memory, visible progress
            sub = {key: v[part] for key, v in windows.items()}
            context[part] = contexts_before(sub, int(c) + 1, k, method, sample, cfg.imagined_chunk)
            if progress:
                log.info("imagining %s contexts: %d frames before the step, %d items, %.0f s", split, c, len(part),
                         time.time() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, spec=json.dumps(wanted), context=context, imagined=counts))
    return {**data, "context": context, "imagined": counts}


def _steps(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fields an outcome model learns from and is scored on."""
    return {k: data[k] for k in ("context", "actions", "reward", "end", "weight")}


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
    t0 = cpu_seconds()  # the world model's black-box worker included
    data = {s: load_split(cfg, s, progress) for s in SPLITS}
    collect_cpu = cpu_seconds() - t0
    if cfg.imagined_by:  # the real contexts and the imagined ones, each labelled with the real outcome
        imagined = {s: _steps(imagine_split(cfg, s, data[s], progress)) for s in SPLITS}
        data = {s: _steps(data[s]) for s in SPLITS}
        train_data = {k: np.concatenate([data["train"][k], imagined["train"][k]]) for k in data["train"]}
        scored = {"val": data["val"], "test": data["test"], "val_imagined": imagined["val"],
                  "test_imagined": imagined["test"]}
        choose_on = "val_imagined"  # thresholds for where the model is used: inside the world model
    else:
        train_data, scored, choose_on = data["train"], {"val": data["val"], "test": data["test"]}, "val"
    imagine_cpu = cpu_seconds() - t0 - collect_cpu
    rewards = train_data["reward"][train_data["reward"] > 0]
    net_cfg = OutcomeConfig(reward_value=float(rewards.max()) if len(rewards) else 1.0, width=cfg.width)
    net = train_outcome(train_data, net_cfg, cfg.train, cfg.run, {"game": cfg.game, "data": cfg.data,
                                                                  "imagined_by": cfg.imagined_by})
    model = OutcomeModel(net)
    probs = {s: model.probabilities(d["context"], d["actions"]) for s, d in scored.items()}
    y = {s: labels(d) for s, d in scored.items()}
    thresholds = tuple(best_threshold(probs[choose_on][:, h], y[choose_on][:, h], scored[choose_on]["weight"])
                       for h in range(len(HEADS)))
    net.cfg.thresholds = thresholds
    scores = {s: {head: precision_recall(probs[s][:, h], y[s][:, h], scored[s]["weight"], thresholds[h])
                  for h, head in enumerate(HEADS)} for s in scored}
    info = {"scores": scores, "spec": cfg.to_dict(),
            "cpu_seconds": {"collect": round(collect_cpu, 1), "imagine": round(imagine_cpu, 1),
                            "train_and_score": round(cpu_seconds() - t0 - collect_cpu - imagine_cpu, 1)},
            "steps_per_split": {s: {"kept": int(len(d["actions"])), "weighted": float(d["weight"].sum())}
                                for s, d in data.items()},
            "command": command,
            "note": "precision/recall at the game's own rates: steps without an event were kept with probability "
                    f"{cfg.keep_negatives} and count 1/{cfg.keep_negatives} each; thresholds: best F1 on the "
                    f"{choose_on.replace('_', ' ')} steps; scores['test']: unseen levels"
                    + ("; *_imagined: the same steps with their last frames imagined by " + cfg.imagined_by
                       if cfg.imagined_by else "")}
    with folder_lock(out):
        save_outcome(out, net, **info)
    return info


__all__ = ["OutcomeRunConfig", "OutcomeSplit", "make_outcome_model", "outcome_run_config", "train_outcome"]
