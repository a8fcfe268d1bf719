"""Reward and termination models: they learn what an action leads to from the frames before it,
precision/recall count the game's own rates, and the env takes its reward and ends from them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from avid.envs import WorldModelEnv
from avid.config import TrainConfig
from avid.envs.outcome import (BalancedSteps, OutcomeConfig, OutcomeModel, OutcomeNet, best_threshold, labels,
                               load_outcome, precision_recall, save_outcome)
from avid.pipelines.outcome_train import make_outcome_model, outcome_run_config, train_outcome
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


FAST = dict(batch_size=32, lr=3e-3, weight_decay=1e-4, ema_decay=None, precision="fp32", progress=False,
            threads=1, ckpt_every=100, log_every=50)


def test_the_model_learns_coin_and_death_from_the_frames_before_the_action(tmp_path):
    cfg = OutcomeConfig(num_actions=5, frame_size=SIZE, width=16)
    net = train_outcome(synthetic_steps(600, 0), cfg, TrainConfig(max_steps=300, **FAST), tmp_path / "run")
    # trained by the project's harness: a resumable run folder like every other trainable thing
    assert (tmp_path / "run" / "run.yaml").exists() and (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
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


def test_balanced_steps_alternate_events_and_other_steps():
    data = synthetic_steps(200, 3)
    ds = BalancedSteps(data)
    y = labels(data).any(1)
    assert len(ds) == 2 * max(y.sum(), (~y).sum())
    drawn = np.array([bool(ds[j][2].any()) for j in range(len(ds))])
    assert drawn[0::2].all() and not drawn[1::2].any()


def test_a_resumed_outcome_run_continues_where_it_stopped(tmp_path):
    """Killed at step 40 and rerun to 80, the weights equal those of one run straight to 80."""
    cfg = OutcomeConfig(num_actions=5, frame_size=SIZE, width=8)
    data = synthetic_steps(200, 0)
    straight = train_outcome(data, cfg, TrainConfig(max_steps=80, **{**FAST, "ckpt_every": 40}), tmp_path / "a")
    train_outcome(data, cfg, TrainConfig(max_steps=40, **{**FAST, "ckpt_every": 40}), tmp_path / "b")
    resumed = train_outcome(data, cfg, TrainConfig(max_steps=80, **{**FAST, "ckpt_every": 40}), tmp_path / "b")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_outcome_config_rejects_unknown_keys_and_overlapping_splits():
    with pytest.raises(ValueError, match="trian"):
        outcome_run_config(overrides=["trian.lr=1e-3"])
    with pytest.raises(ValueError, match="share levels"):
        outcome_run_config(overrides=["val_split.start_level=50500"])
    assert outcome_run_config(overrides=["train.lr=3e-4"]).train.lr == 3e-4


def test_outcome_training_refuses_to_overwrite_another_kind_of_model(tmp_path, tiny_base):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(tiny_base).iterdir())
    cfg = outcome_run_config(values={"out": str(tiny_base), "run": str(tmp_path / "run"), "data": str(tmp_path / "d")})
    with pytest.raises(ValueError, match="not a reward/termination model"):
        make_outcome_model(cfg, progress=False)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(tiny_base).iterdir()) == before


def test_avid_outcome_train_collects_trains_with_the_harness_and_writes_scores(tmp_path, capsys):
    """The command end to end on a few real Coinrun steps: run folder, model with thresholds and scores;
    a rerun reuses the collected steps and the finished run."""
    from avid.cli import main

    args = ["outcome", "train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "run"), "--out",
            str(tmp_path / "model"), "--train-steps", "20", "--threads", "1", "--precision", "fp32", "--set",
            "keep_negatives=0.2", "train_split.steps=150", "val_split.steps=100", "test_split.steps=100",
            "train.batch_size=16", "train.progress=false", "width=8"]
    main(args)
    model = load_outcome(tmp_path / "model")
    assert len(model.cfg.thresholds) == 2 and all(0 <= t <= 1 for t in model.cfg.thresholds)
    from avid.checkpoint import load_config
    cfg = load_config(tmp_path / "model")
    assert set(cfg["scores"]) == {"val", "test"} and cfg["spec"]["train"]["max_steps"] == 20
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    collected = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "d").iterdir())
    main(args)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "d").iterdir()) == collected
    assert "reward/termination model" in capsys.readouterr().out


def test_collected_steps_can_carry_the_frames_and_actions_before_them():
    from avid.data.procgen import collect_outcomes

    plain = collect_outcomes("coinrun", 52000, 20, 40, keep_negatives=0.1, num_envs=8, progress=False)
    more = collect_outcomes("coinrun", 52000, 20, 40, keep_negatives=0.1, num_envs=8, progress=False, history=3)
    for k in plain:  # the same steps, kept and labelled the same
        assert np.array_equal(plain[k], more[k]), k
    assert more["before"].shape == (len(plain["actions"]), 3, 64, 64, 3) and more["actions_before"].shape[1] == 3
    assert more["actions_before"].min() >= 0 and more["actions_before"].max() < 15


def test_an_outcome_model_also_learns_from_a_world_models_imagined_contexts(tmp_path):
    """--imagined-by: every split's steps imagined by the world model (cached, reused on a rerun), the
    thresholds chosen on imagined validation steps, real and imagined scores stated."""
    from avid.checkpoint import load_config
    from avid.cli import main
    from tests.conftest import make_base

    world = make_base(tmp_path / "world", size=64)
    args = ["outcome", "train", "--imagined-by", str(world), "--data", str(tmp_path / "d"), "--run",
            str(tmp_path / "run"), "--out", str(tmp_path / "model"), "--train-steps", "10", "--threads", "1",
            "--precision", "fp32", "--set", "keep_negatives=0.05", "train_split.steps=150", "val_split.steps=60",
            "test_split.steps=60", "train.batch_size=16", "train.progress=false", "width=8", "imagined_frames=[1,2]",
            "imagined_ddim_steps=2"]
    main(args)
    cfg = load_config(tmp_path / "model")
    assert set(cfg["scores"]) == {"val", "test", "val_imagined", "test_imagined"}
    assert "val imagined" in cfg["note"]
    with np.load(tmp_path / "d" / "train.npz") as real, np.load(tmp_path / "d" / "imagined-train.npz") as im:
        assert set(np.unique(im["imagined"])) <= {1, 2} and len(im["imagined"]) == len(real["actions"])
        two = im["imagined"] == 2
        one = im["imagined"] == 1
        assert one.any() and two.any()
        # one imagined frame: the first context frame is the real one, the last is generated
        assert np.array_equal(im["context"][one, 0], real["context"][one, 0])
        assert not np.array_equal(im["context"][one, 1], real["context"][one, 1])
    cached = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "d").iterdir())
    main(args)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "d").iterdir()) == cached
