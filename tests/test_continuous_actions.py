"""Continuous 7-D actions (the robot domain) through every method: each trains on the simulated
arm's episodes and samples with the paper's robot choices at tiny size (v prediction, linear
schedule, DDIM); its actions reach the prediction through the linear action embedding; action CFG's
"no action" is a learned vector, not the zero action; the Action Error Ratio's regressor trains on
normalised actions and scores MAE(generated) / MAE(real)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from avid.config import SampleConfig, load_run_config
from avid.data import WindowDataset, collate
from avid.data.robot import RobotSpec, generate
from avid.methods import REGISTRY
from avid.metrics.action_classifier import load_classifier
from avid.pipelines.classifier_train import (ClassifierRunConfig, classifier_training, evaluate_classifier,
                                            mean_action_mae, score_line, train_classifier)
from avid.pipelines.evaluate import action_error_ratio
from avid.rollout import Rollout, sample_videos
from avid.train import load_method, train
from tests.conftest import K, SIZE, TINY_UNET, make_base

torch.set_num_threads(1)
pytest.importorskip("pybullet")

FRAMES = 6  # K = 2 first frames + 4 predicted, as the tiny base model
UNET_OPTIONS = {"poe": {"unet": TINY_UNET}, "action-cfg": {"unet": TINY_UNET}, "scratch": {"unet": TINY_UNET},
                "avid": {"unet": TINY_UNET}, "avid-no-mask": {"unet": TINY_UNET}, "avid-no-cond": {"unet": TINY_UNET},
                "classifier-guidance": {"unet": TINY_UNET, "hidden": 16},
                "controlnet-small": {"unet": {**TINY_UNET, "base_channels": 4}}, "controlnet": {}, "finetune": {}}
ACTION_METHODS = sorted(UNET_OPTIONS)


@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    """Robot-arm episodes at 16x16 px (place task, 7-D actions) and a tiny v-prediction,
    linear-schedule base model of the same frame size."""
    root = tmp_path_factory.mktemp("robot")
    data = generate(RobotSpec(["place"], episodes=2, episode_len=12, frame_size=SIZE, seed=4), str(root / "data"),
                    progress=False).root
    return make_base(root / "base", param="v", schedule="linear"), data


def test_every_method_is_listed_here():
    assert set(ACTION_METHODS) | {"base", "pretrain"} == set(REGISTRY)


@pytest.mark.parametrize("name", ACTION_METHODS)
def test_every_method_trains_and_samples_with_7d_continuous_actions(tmp_path, robot, name):
    base, data = robot
    cfg = load_run_config(None, [
        f"out={tmp_path / name}", f"base={base}", f"data.train={data}", f"data.frames={FRAMES}",
        f"method.name={name}", f"method.options={UNET_OPTIONS[name]}", "train.max_steps=2", "train.batch_size=2",
        "train.lr=1e-3", "train.ckpt_every=2", "train.progress=false", "train.precision=32-true"])
    method, mc = load_method(train(cfg), precision="fp32")
    assert (mc["action_kind"], mc["num_actions"]) == ("continuous", 7) and method.ctx.action_kind == "continuous"
    batch = collate([WindowDataset(data, FRAMES, K, stride=FRAMES)[j] for j in range(2)])
    assert batch.actions.shape == (2, FRAMES - K, 7) and batch.actions.dtype == torch.float32
    sample = SampleConfig(sampler="ddim", steps=2, batch_size=2)
    roll = sample_videos(method, batch.first, batch.actions, sample, progress=False)
    assert roll.videos.shape == batch.x0.shape and torch.isfinite(roll.videos).all()
    other = sample_videos(method, batch.first, -batch.actions, sample, progress=False)
    assert not torch.equal(roll.videos, other.videos)  # the actions steer the video
    with pytest.raises(ValueError, match="7-D continuous actions"):
        sample_videos(method, batch.first, batch.actions[..., :3], sample, progress=False)


def test_action_cfg_no_action_is_learned_not_the_zero_action(tmp_path, robot):
    base, data = robot
    cfg = load_run_config(None, [
        f"out={tmp_path / 'cfg'}", f"base={base}", f"data.train={data}", f"data.frames={FRAMES}",
        "method.name=action-cfg", f"method.options={{unet: {TINY_UNET}, lambda_a: 1.0}}", "train.max_steps=2",
        "train.batch_size=2", "train.lr=1e-3", "train.progress=false", "train.precision=32-true"])
    method, _ = load_method(train(cfg), precision="fp32")
    net = method.net
    assert net.cond.null_action.requires_grad and "net.cond.null_action" in method.state_dict()
    i, zeros = torch.tensor([3, 7]), torch.zeros(2, FRAMES - K, 7)
    assert not torch.allclose(net.embed(i, None, FRAMES - K), net.embed(i, zeros, FRAMES - K))


def test_the_action_error_ratio_regressor_trains_on_normalised_actions_and_scores_mae(tmp_path, robot):
    _, data = robot
    run = ClassifierRunConfig(classifier={"unet": dict(base_channels=8, channel_mults=[1, 2], patch_size=2,
                                                       attn_from_level=1, attn_heads=2, attn_head_dim=8),
                                          "frames": FRAMES, "cond_frames": K, "hidden": 16, "proj_channels": 4},
                              data=str(data), out=str(tmp_path / "reg"),
                              train=replace(classifier_training(), max_steps=2, batch_size=2, progress=False,
                                            precision="fp32", ema_decay=None))
    folder = train_classifier(run)
    reg = load_classifier(folder)
    train_actions = WindowDataset(data, FRAMES, K).actions
    assert np.allclose(reg.action_mean.numpy(), train_actions.mean(0), atol=1e-5)  # normalised by the training set
    assert np.allclose(reg.action_std.numpy(), train_actions.std(0, ddof=1), rtol=1e-4)
    mae_real = evaluate_classifier(reg, data)
    assert mae_real > 0
    ds = WindowDataset(data, FRAMES, K, stride=FRAMES)
    batch = collate([ds[j] for j in range(len(ds))])
    noise = Rollout(torch.rand_like(batch.x0) * 2 - 1)
    scores = action_error_ratio(folder)(batch, {"real": Rollout(batch.x0), "noise": noise})
    assert scores["real"]["aer"] == pytest.approx(1.0)  # the real videos against themselves
    assert scores["real"]["action_score_real"] == pytest.approx(mae_real, rel=1e-4)
    ratio = scores["noise"]["aer"]
    assert math.isfinite(ratio) and ratio == pytest.approx(
        scores["noise"]["action_score_generated"] / scores["noise"]["action_score_real"])
    assert "MAE generated / real" in scores["noise"]["conventions"]["aer"]
    # the regressor's chance level: the MAE of predicting the training mean (on its own training set,
    # the mean absolute deviation of the normalised actions over the windows of one stride)
    chance = mean_action_mae(reg, data)
    a = (batch.actions - reg.action_mean) / reg.action_std
    assert chance == pytest.approx(float(a.abs().mean()), rel=1e-5) and chance > 0
    assert f"predicting the training mean action: {chance:.4f}" in score_line(folder, data, precision="fp32")
