"""Learned reward and termination for imagined episodes: a small CNN reads the last ``k`` frames
and the action about to be taken and predicts whether that action gives the reward and whether it
ends the episode (in Coinrun: the coin, reward 10 and the end; or death, the end alone).

Procgen restarts a finished episode at once and never shows its last frame, so both are read
from the frames *before* the action. Trained on real frames (``avid.data.procgen.collect_outcomes``),
every event and a weighted sample of the other steps; thresholds are chosen on validation levels
for the best F1 at the game's own event rates, and precision/recall are stated on unseen levels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from avid.checkpoint import load_config, load_weights, resolve, save_model
from avid.nn import count_parameters

OUTCOME_KIND = "avid-outcome-model"
HEADS = ("reward", "end")


@dataclass
class OutcomeConfig:
    cond_frames: int = 2
    num_actions: int = 15
    frame_size: int = 64
    width: int = 32
    reward_value: float = 10.0  # the reward an action gives when the reward head fires
    thresholds: tuple[float, float] = (0.5, 0.5)  # of the reward and end probabilities


class OutcomeNet(nn.Module):
    """(context ``(B, k, H, W, 3)`` uint8, actions ``(B,)``) -> logits ``(B, 2)``: reward, end.
    Trained by the project's harness on ``BalancedSteps`` with ``loss`` (binary cross-entropy, both heads)."""

    name = "outcome model"

    def __init__(self, cfg: OutcomeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [3 * cfg.cond_frames, w, 2 * w, 2 * w, 4 * w]
        self.convs = nn.Sequential(*(m for a, b in zip(chans, chans[1:])
                                     for m in (nn.Conv2d(a, b, 4, stride=2, padding=1), nn.GroupNorm(8, b), nn.SiLU())))
        side = cfg.frame_size // 16
        self.action = nn.Embedding(cfg.num_actions, 32)
        self.head = nn.Sequential(nn.Linear(4 * w * side * side + 32, 128), nn.SiLU(), nn.Linear(128, len(HEADS)))

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if context.ndim != 5 or tuple(context.shape[1:]) != (c.cond_frames, c.frame_size, c.frame_size, 3):
            raise ValueError(f"expected context (B, {c.cond_frames}, {c.frame_size}, {c.frame_size}, 3), "
                             f"got {tuple(context.shape)}")
        x = context.float().div(127.5).sub(1).permute(0, 1, 4, 2, 3).flatten(1, 2)  # (B, 3k, H, W)
        return self.head(torch.cat([self.convs(x).flatten(1), self.action(actions.long())], dim=1))

    def loss(self, batch: "OutcomeBatch") -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.binary_cross_entropy_with_logits(self(batch.context, batch.actions).float(), batch.labels)
        return loss, {"loss": float(loss.detach())}


class OutcomeModel:
    """The env's reward and termination (``avid.envs.world_model.Outcome``) from a trained net."""

    def __init__(self, net: OutcomeNet, device: str = "cpu") -> None:
        self.net, self.device = net.to(device).eval(), device

    @property
    def cfg(self) -> OutcomeConfig:
        return self.net.cfg

    @torch.no_grad()
    def probabilities(self, context: np.ndarray, actions: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``(M, 2)`` probabilities of reward and end."""
        out = [torch.sigmoid(self.net(torch.as_tensor(context[s:s + batch_size]).to(self.device),
                                      torch.as_tensor(actions[s:s + batch_size]).to(self.device))).cpu()
               for s in range(0, len(context), batch_size)]
        return torch.cat(out).numpy()

    def __call__(self, context: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.probabilities(context, actions)
        fired = p >= np.asarray(self.cfg.thresholds)
        return np.where(fired[:, 0], self.cfg.reward_value, 0.0).astype(np.float32), fired[:, 1]


def labels(data: dict[str, np.ndarray]) -> np.ndarray:
    """``(M, 2)`` bool: the action gave a reward; it ended the episode."""
    return np.stack([data["reward"] > 0, data["end"]], axis=1)


@dataclass
class OutcomeBatch:
    """Steps of the game: context ``(B, k, H, W, 3)`` uint8, actions ``(B,)``, labels ``(B, 2)`` float."""

    context: torch.Tensor
    actions: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.actions)


class BalancedSteps(Dataset):
    """Collected steps as training items, events and other steps alternating: even indices walk
    the events, odd ones the other steps (each list cycled to the longer one's length), so a
    shuffled batch is half events in expectation however rare the game makes them."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        y = labels(data)
        self.events, self.others = np.flatnonzero(y.any(1)), np.flatnonzero(~y.any(1))
        if len(self.events) == 0 or len(self.others) == 0:
            raise ValueError(f"need both events and other steps to train on, got {len(self.events)} and "
                             f"{len(self.others)}")
        self.context, self.actions = torch.as_tensor(data["context"]), torch.as_tensor(data["actions"]).long()
        self.y = torch.as_tensor(y, dtype=torch.float32)
        self.half = max(len(self.events), len(self.others))

    def __len__(self) -> int:
        return 2 * self.half

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool = self.others if j % 2 else self.events
        k = int(pool[(j // 2) % len(pool)])
        return self.context[k], self.actions[k], self.y[k]


def collate_steps(items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> OutcomeBatch:
    return OutcomeBatch(*(torch.stack(parts) for parts in zip(*items)))


def precision_recall(prob: np.ndarray, label: np.ndarray, weight: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision and recall of ``prob >= threshold`` at the game's own rates (each step weighted)."""
    fired = prob >= threshold
    tp, fp = float(weight[fired & label].sum()), float(weight[fired & ~label].sum())
    pos = float(weight[label].sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / pos if pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "events": int(label.sum())}


def best_threshold(prob: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """The threshold of the best weighted F1 (chosen on validation levels)."""
    grid = np.unique(np.round(prob, 3))
    return float(max(grid, key=lambda t: np.nan_to_num(precision_recall(prob, label, weight, t)["f1"])))


def save_outcome(folder: str | Path, net: OutcomeNet, state: dict[str, torch.Tensor] | None = None,
                 **info: Any) -> Path:
    """``model.safetensors`` + ``config.yaml`` (kind ``avid-outcome-model``). ``state``: other weights for
    this architecture (e.g. a checkpoint's) instead of the module's own; ``info`` is recorded in the config."""
    config = {"kind": OUTCOME_KIND, "outcome": {**asdict(net.cfg), "thresholds": list(net.cfg.thresholds)},
              "parameters": count_parameters(net), **info}
    return save_model(folder, net.state_dict() if state is None else state, config)


def load_outcome(folder: str | Path, device: str = "cpu") -> OutcomeModel:
    folder = resolve(folder)
    mc = load_config(folder)
    if mc.get("kind") != OUTCOME_KIND:
        raise ValueError(f"{folder} is not a reward/termination model (config kind {mc.get('kind')!r}, "
                         f"expected {OUTCOME_KIND!r}); make one with `avid outcome train`")
    net = OutcomeNet(OutcomeConfig(**{**mc["outcome"], "thresholds": tuple(mc["outcome"]["thresholds"])}))
    load_weights(folder, net)
    return OutcomeModel(net, device)
