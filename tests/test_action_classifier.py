"""The Action Error Ratio (paper section 9.3): the classifier reads a window and names the action of
each predicted frame; the ratio is accuracy(real) / accuracy(generated) (discrete) or
MAE(generated) / MAE(real) (continuous); the shipped Coinrun classifier beats chance."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from avid.checkpoint import resolve
from avid.config import TrainConfig
from avid.cli import main
from avid.data import Batch, WindowDataset, collate, to_video
from avid.metrics.action_classifier import (ActionClassifier, ClassifierConfig, action_accuracy, action_error_ratio,
                                            action_mae, error_ratio, load_classifier, save_classifier)
from avid.pipelines.classifier_train import ClassifierRunConfig, evaluate_classifier, heldout, train_classifier
from tests.conftest import SIZE, TINY_UNET, make_base, make_store

T, K, A = 6, 2, 5
SHIPPED = "assets/action-classifier-coinrun"


def tiny(kind: str = "discrete", num_actions: int = A, seed: int = 0, **kw) -> ActionClassifier:
    torch.manual_seed(seed)
    return ActionClassifier(ClassifierConfig(unet=TINY_UNET, frames=T, cond_frames=K, frame_size=SIZE,
                                             action_kind=kind, num_actions=num_actions,
                                             **{"proj_channels": 4, "hidden": 32, **kw})).eval()


def toy_batch(n: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 3, K, SIZE, SIZE, generator=g) * 2 - 1,
                 torch.rand(n, 3, T - K, SIZE, SIZE, generator=g) * 2 - 1,
                 torch.randint(0, A, (n, T - K), generator=g))


def constant(clf: ActionClassifier, bias: list[float]) -> ActionClassifier:
    """Make the classifier answer ``bias`` for every transition of every video."""
    last = clf.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias))
    return clf


def test_output_is_one_answer_per_predicted_frame_and_inputs_are_checked():
    clf, b = tiny(), toy_batch()
    window = clf.window(b.first, b.x0)
    assert torch.equal(window[:, :, :K], b.first) and torch.equal(window[:, :, K:], b.x0)
    assert clf(window).shape == (3, T - K, A)
    assert tiny("continuous", 7)(window).shape == (3, T - K, 7)
    with pytest.raises(ValueError, match="expected a window"):
        clf(b.x0)
    with pytest.raises(ValueError, match="expected first"):
        clf.window(b.x0, b.first)
    with pytest.raises(ValueError, match="integer actions of shape"):
        action_accuracy(clf, b.first, b.x0, b.actions[:, 1:])


def test_the_ratio_follows_the_paper_on_hand_made_numbers():
    assert error_ratio(0.3, 0.2, "discrete") == pytest.approx(1.5)  # accuracy real / generated
    assert error_ratio(0.2, 0.5, "continuous") == pytest.approx(2.5)  # MAE generated / real
    with pytest.warns(UserWarning, match="accuracy on generated videos is 0"):
        assert error_ratio(0.25, 0.0, "discrete") == math.inf
    with pytest.warns(UserWarning, match="MAE on real videos is 0"):
        assert error_ratio(0.0, 0.4, "continuous") == math.inf
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(error_ratio(0.0, 0.0, "discrete"))


def test_accuracy_and_mae_on_a_classifier_with_known_answers():
    b = toy_batch(n=4)
    b.actions[:] = torch.tensor([[2, 2, 0, 1]] * 3 + [[2, 2, 2, 2]])  # 10 of 16 transitions are action 2
    clf = constant(tiny(), [0.0, 0.0, 5.0, 0.0, 0.0])  # always answers 2
    assert action_accuracy(clf, b.first, b.x0, b.actions, batch_size=3) == pytest.approx(10 / 16)
    assert action_error_ratio(clf, b.first, b.x0, b.x0.flip(2), b.actions) == pytest.approx(1.0)

    reg = constant(tiny("continuous", 2, action_mean=[1.0, 0.0], action_std=[2.0, 1.0]), [0.5, -1.0])
    acts = torch.zeros(4, T - K, 2)  # normalised: (-0.5, 0); predicted (0.5, -1): |err| = (1, 1)
    assert action_mae(reg, b.first, b.x0, acts) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="continuous"):
        action_accuracy(reg, b.first, b.x0, acts)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny classifier trained (then resumed) on videos where a square moves by the action."""
    tmp = tmp_path_factory.mktemp("toy")
    make_store(tmp / "train", n_frames=3000, episode=50, seed=0)
    make_store(tmp / "test", n_frames=1200, episode=T, seed=1)
    opts = dict(batch_size=16, lr=2e-3, ema_decay=None, precision="32-true", threads=1, progress=False,
                log_every=5, ckpt_every=50)
    run = ClassifierRunConfig(classifier=dict(unet=dict(TINY_UNET, temporal_kernel=3), frames=T, cond_frames=K,
                                              proj_channels=8, hidden=64, dropout=0.0),
                              data=str(tmp / "train"), out=str(tmp / "run"), eval_data=str(tmp / "test"),
                              train=TrainConfig(max_steps=100, **opts))
    train_classifier(run)
    folder = train_classifier(replace(run, train=TrainConfig(max_steps=160, **opts)))  # resumes at 100
    return tmp, folder


def test_a_classifier_learns_actions_it_can_see_at_every_predicted_frame(toy_run):
    tmp, folder = toy_run
    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["kind"] == "avid-action-classifier" and cfg["step"] == 160
    assert cfg["held_out_accuracy"] > 0.6  # chance is 1/5
    clf = load_classifier(folder)
    first, x0, actions = heldout(tmp / "test", clf.cfg)
    with torch.no_grad():
        per_frame = (clf(clf.window(first, x0)).argmax(-1) == actions).float().mean(0)
    assert bool((per_frame > 0.4).all()), per_frame  # aligned: actions[:, j] made x0[:, :, j]
    # the loss went down (first logged steps against the last ones)
    import csv

    rows = [r for log in sorted((tmp / "run" / "logs").glob("version_*/metrics.csv"))  # one per resumed segment
            for r in csv.DictReader(open(log)) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert np.mean(losses[-3:]) < 0.7 * math.log(A)
    # videos that contradict the actions score worse: the ratio rises above 1
    wrong = x0.flip(2)
    assert action_error_ratio(clf, first, x0, wrong, actions) > 1.5
    assert action_error_ratio(clf, first, x0, x0, actions) == pytest.approx(1.0)


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    clf, b = tiny(seed=3), toy_batch()
    save_classifier(tmp_path / "clf", clf, step=7)
    again = load_classifier(tmp_path / "clf")
    w = clf.window(b.first, b.x0)
    with torch.no_grad():
        assert torch.equal(clf(w), again(w))
    save_classifier(tmp_path / "bf16", again, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(load_classifier(tmp_path / "bf16")(w), load_classifier(tmp_path / "bf16")(w))


def test_loading_a_folder_of_another_kind_fails(tmp_path):
    with pytest.raises(ValueError, match="not an action classifier"):
        load_classifier(make_base(tmp_path / "base"))
    save_classifier(tmp_path / "clf", tiny())
    other = tiny(proj_channels=2)  # same kind, other architecture: the weights do not fit
    save_classifier(tmp_path / "other", other)
    (tmp_path / "other" / "config.yaml").write_text((tmp_path / "clf" / "config.yaml").read_text())
    with pytest.raises(ValueError, match="does not fit"):
        load_classifier(tmp_path / "other")


def test_cli_eval_prints_the_held_out_accuracy(toy_run, capsys):
    tmp, folder = toy_run
    main(["classifier", "eval", "--classifier", str(folder), "--data", str(tmp / "test"), "--limit", "50",
          "--precision", "fp32"])  # as evaluate_classifier below
    out = capsys.readouterr().out
    clf = load_classifier(folder)
    want = evaluate_classifier(clf, tmp / "test", limit=50)
    assert f"held-out action accuracy: {want:.4f} (chance 0.200)" in out


def test_the_shipped_coinrun_classifier_beats_chance_on_held_out_videos():
    """Above chance by more than three binomial standard deviations on unseen levels (a fixed
    draw, so the test is deterministic); chance is 1/15, the paper's 60M classifier 0.267."""
    pytest.importorskip("procgen")
    from avid.data.procgen import NUM_ACTIONS, random_trajectories

    clf = load_classifier(resolve(SHIPPED))
    assert clf.cfg.num_actions == NUM_ACTIONS and clf.cfg.frames == 10 and clf.cfg.cond_frames == 2
    n = 384
    frames, actions, _ = random_trajectories("coinrun", n, 10, start_level=50000, num_levels=1000, seed=7,
                                             num_envs=64, progress=False)
    video = to_video(frames.reshape(n, 10, 64, 64, 3))
    acts = torch.as_tensor(actions.reshape(n, 10))[:, K - 1:-1]  # the action into each predicted frame
    acc = action_accuracy(clf, video[:, :, :K], video[:, :, K:], acts)
    chance, transitions = 1 / NUM_ACTIONS, acts.numel()
    assert acc > chance + 3 * (chance * (1 - chance) / transitions) ** 0.5, acc


def test_windows_of_the_data_layer_align_with_the_shipped_convention(tmp_path):
    """The held-out loader and the shipped-classifier test slice actions the same way."""
    store = make_store(tmp_path / "d", n_frames=2 * T, episode=T)
    ds = WindowDataset(store, T, K, stride=T)
    b = collate([ds[j] for j in range(len(ds))])
    raw = torch.as_tensor(store.load_all()["actions"]).view(2, T)[:, K - 1:-1]
    assert torch.equal(b.actions, raw)


def test_the_continuous_regressor_is_trained_with_mse_on_actions_normalised_by_the_training_set():
    from avid.pipelines.classifier_train import build_classifier

    g = torch.Generator().manual_seed(0)
    train_actions = torch.randn(500, 2, generator=g) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    opts = dict(unet=TINY_UNET, frames=T, cond_frames=K, proj_channels=4, hidden=32)
    reg = build_classifier({"action_kind": "continuous", "num_actions": 2, "frame_size": SIZE}, opts, train_actions)
    assert reg.cfg.action_mean == pytest.approx([1.0, -2.0], abs=0.3)
    assert reg.cfg.action_std == pytest.approx([3.0, 0.5], rel=0.1)
    reg.eval()  # no dropout: the two forward passes below must agree
    b = toy_batch()
    b = Batch(b.first, b.x0, train_actions[:3 * (T - K)].view(3, T - K, 2))
    loss, logs = reg.loss(b)
    with torch.no_grad():
        out = reg(reg.window(b.first, b.x0))
    want = ((out - (b.actions - torch.tensor(reg.cfg.action_mean)) / torch.tensor(reg.cfg.action_std)) ** 2).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def tiny_motion(m: int, seed: int = 0, **kw) -> ActionClassifier:
    torch.manual_seed(seed)
    return ActionClassifier(ClassifierConfig(arch="motion", frames=T, cond_frames=K, frame_size=SIZE, num_actions=3,
                                             motion_frames=m, motion_channels=[8, 16, 16], hidden=32, dropout=0.0,
                                             **kw))


def test_the_motion_encoder_answers_each_transition_from_its_own_frames_only(tmp_path):
    """Transition ``tau`` (output ``tau - K``) reads frames ``tau - m + 1 .. tau`` and nothing else;
    a saved motion classifier loads as one."""
    g = torch.Generator().manual_seed(0)
    window = torch.rand(2, 3, T, SIZE, SIZE, generator=g) * 2 - 1
    for m in (2, 3):
        clf = tiny_motion(m).eval()
        with torch.no_grad():
            base = clf(window)
            assert base.shape == (2, T - K, 3)
            for f in range(T):
                changed = window.clone()
                changed[:, :, f] += 0.5
                moved = (clf(changed) - base).abs().amax(dim=(0, 2)) > 1e-6
                want = torch.tensor([tau - m + 1 <= f <= tau for tau in range(K, T)])
                assert torch.equal(moved, want), (m, f, moved)
        save_classifier(tmp_path / f"m{m}", clf)
        again = load_classifier(tmp_path / f"m{m}")
        with torch.no_grad():
            assert again.cfg.arch == "motion" and torch.equal(again(window), base)
    with pytest.raises(ValueError, match="motion_frames must lie"):
        ClassifierConfig(arch="motion", frames=T, cond_frames=K, motion_frames=K + 2)
    with pytest.raises(ValueError, match="arch must be"):
        ClassifierConfig(arch="vit")
    assert ClassifierConfig(frames=T, cond_frames=1, motion_frames=3).arch == "unet"  # the UNet ignores motion fields


def momentum_videos(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coinrun's regime in miniature: a camera that follows an agent with momentum. The button
    (0: slower, 1: keep, 2: faster) changes the velocity by one pixel per frame, and the background
    (a ramp with stripes) shifts by the velocity, so a button shows only in three consecutive
    frames: the velocity after it against the velocity before."""
    g = torch.Generator().manual_seed(seed)
    col = torch.arange(4.0 * SIZE)
    background = (col / (2 * SIZE) - 1 + 0.3 * torch.sin(col * 0.7)).expand(n, 3, SIZE, 4 * SIZE)
    buttons = torch.randint(0, 3, (n, T), generator=g)
    v = torch.randint(-1, 2, (n,), generator=g)
    x = torch.full((n,), 3 * SIZE // 2)  # moves at most 20 pixels in T frames: the view stays on the background
    frames = []
    for t in range(T):
        frames.append(torch.stack([background[i, :, :, x[i]:x[i] + SIZE] for i in range(n)]))
        v = v + buttons[:, t] - 1
        x = x + v
    return torch.stack(frames, 2), buttons[:, K - 1:-1]  # actions[:, j] made frame K + j


def test_three_frames_see_a_button_that_only_changes_the_velocity_and_two_do_not():
    video, actions = momentum_videos(1024, seed=0)
    test_video, test_actions = momentum_videos(128, seed=1)
    accuracy = {}
    for m in (2, 3):
        clf = tiny_motion(m, seed=1).train()
        opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
        for step in range(150):
            j = torch.arange(32) + 32 * (step % 32)
            loss = torch.nn.functional.cross_entropy(clf(video[j]).flatten(0, 1), actions[j].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        accuracy[m] = action_accuracy(clf.eval(), test_video[:, :, :K], test_video[:, :, K:], test_actions)
    assert accuracy[3] > 0.95 and accuracy[2] < 0.85, accuracy  # chance 1/3
