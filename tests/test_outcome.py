"""Reward and termination models: they learn what an action leads to from the frames before it,
precision/recall count the game's own rates, and the env takes its reward and ends from them."""

import numpy as np
import pytest
import torch

from avid.envs import WorldModelEnv
from avid.envs.outcome import (OutcomeConfig, OutcomeModel, OutcomeNet, best_threshold, labels, load_outcome,
                               precision_recall, save_outcome, train_outcome)
from avid.methods import build_method
from tests.conftest import SIZE, TINY_UNET
from tests.test_avid import ctx_for


def synthetic_steps(n: int, seed: int) -> dict[str, np.ndarray]:
    """A yellow square in the last frame + action 2 gives the reward and the end (a coin); a red square
    ends the episode whatever the action (death); everything else is nothing."""
    rng = np.random.default_rng(seed)
    context = rng.integers(0, 60, (n, 2, SIZE, SIZE, 3)).astype(np.uint8)
    kind = rng.integers(0, 3, n)  # 0 nothing, 1 yellow, 2 red
    context[kind == 1, -1, 6:10, 6:10] = (250, 220, 30)
    context[kind == 2, -1, 6:10, 6:10] = (230, 20, 20)
    actions = rng.integers(0, 5, n)
    coin = (kind == 1) & (actions == 2)
    return {"context": context, "actions": actions, "reward": np.where(coin, 10.0, 0.0).astype(np.float32),
            "end": coin | (kind == 2), "weight": np.ones(n, np.float32)}


def test_the_model_learns_coin_and_death_from_the_frames_before_the_action():
    cfg = OutcomeConfig(num_actions=5, frame_size=SIZE, width=16)
    net = train_outcome(synthetic_steps(600, 0), cfg, steps=300, batch_size=32, lr=3e-3)
    test = synthetic_steps(300, 1)
    p = OutcomeModel(net).probabilities(test["context"], test["actions"])
    y = labels(test)
    for h in range(2):
        s = precision_recall(p[:, h], y[:, h], test["weight"], 0.5)
        assert s["precision"] > 0.9 and s["recall"] > 0.9, (h, s)


def test_precision_counts_each_kept_step_by_its_weight():
    prob = np.array([0.9, 0.8, 0.7, 0.1])
    label = np.array([True, False, True, True])
    weight = np.array([1.0, 50.0, 1.0, 1.0])  # the false alarm stands for 50 steps of the game
    s = precision_recall(prob, label, weight, 0.5)
    assert s["precision"] == pytest.approx(2 / 52) and s["recall"] == pytest.approx(2 / 3)
    assert best_threshold(prob, label, weight) > 0.8 - 1e-9  # at 0.9 only the true event fires: F1 0.5 beats 2/52


def test_the_env_takes_reward_and_end_from_a_saved_model(tmp_path, tiny_base, tiny_denoiser, tiny_store):
    torch.manual_seed(0)
    always_reward_never_end = OutcomeNet(OutcomeConfig(num_actions=5, frame_size=SIZE, width=8, reward_value=3.0,
                                                       thresholds=(0.0, 1.1)))
    save_outcome(tmp_path / "outcome", always_reward_never_end)
    loaded = load_outcome(tmp_path / "outcome")
    assert loaded.cfg.thresholds == (0.0, 1.1) and loaded.cfg.reward_value == 3.0
    method = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    env = WorldModelEnv(method, str(tiny_store.root), reward_model=str(tmp_path / "outcome"))
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(1)
    assert (reward, terminated, truncated) == (3.0, False, False)
    with pytest.raises(ValueError, match="not a reward/termination model"):
        load_outcome(tiny_base)
