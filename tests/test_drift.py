"""Long rollouts and their drift against the real game: re-grounding resets the conditioning frames
to the real ones, copy-last-frame re-grounds likewise, and the real rollouts replay exactly."""

import csv
from dataclasses import replace

import pytest
import torch

from avid.blackbox import open_denoiser
from avid.config import SampleConfig
from avid.data import to_uint8
from avid.data.procgen import play_level
from avid.pipelines.drift import DriftSpec, copy_last, measure_drift, real_trajectories
from avid.methods import build_method
from avid.rollout import quantise, rollout_long, sample_videos
from tests.conftest import SIZE, TINY_UNET, make_base
from tests.test_avid import ctx_for


@pytest.fixture
def avid_method(tiny_denoiser):
    return build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})


def test_regrounding_conditions_every_call_on_the_real_frames_before_it(avid_method):
    g = torch.Generator().manual_seed(0)
    first = torch.rand(2, 3, 2, SIZE, SIZE, generator=g) * 2 - 1
    real = quantise(torch.rand(2, 3, 6, SIZE, SIZE, generator=g) * 2 - 1)
    actions = torch.randint(0, 5, (2, 6), generator=g)
    cfg = SampleConfig(steps=2, seed=3)
    grounded = rollout_long(avid_method, first, actions, cfg, chunk=2, real=real, reground_every=2)
    free = rollout_long(avid_method, first, actions, cfg, chunk=2)
    assert grounded.shape == free.shape == (2, 3, 6, SIZE, SIZE)
    assert torch.equal(grounded[:, :, :2], free[:, :, :2])  # before the first re-grounding they agree
    assert not torch.equal(grounded[:, :, 2:], free[:, :, 2:])
    # frames 4-5 are one call from real frames 2-3 with actions 4-5, noise seeded by their start
    alone = sample_videos(avid_method, real[:, :, 2:4], actions[:, 4:6], SampleConfig(steps=2, seed=3 * 1_000_003 + 4),
                          progress=False).videos
    assert torch.equal(grounded[:, :, 4:], quantise(alone))
    with pytest.raises(ValueError, match="needs the real frames"):
        rollout_long(avid_method, first, actions, cfg, reground_every=2)


def test_copy_last_frame_repeats_the_last_real_frame_it_was_grounded_on():
    first = torch.zeros(1, 3, 2, 4, 4)
    real = torch.arange(1.0, 7.0).view(1, 1, 6, 1, 1).expand(1, 3, 6, 4, 4)
    assert copy_last(first, real, None)[0, 0, :, 0, 0].tolist() == [0] * 6
    assert copy_last(first, real, 4)[0, 0, :, 0, 0].tolist() == [0, 0, 0, 0, 4, 4]
    assert copy_last(first, real, 2)[0, 0, :, 0, 0].tolist() == [0, 0, 2, 2, 4, 4]


def test_real_rollouts_replay_exactly_and_stay_inside_one_episode():
    spec = DriftSpec(start_level=3, num_levels=5, trajectories=2, horizon=6, seed=1)
    traj = real_trajectories(spec, cond_frames=2)
    assert traj.first.shape == (2, 3, 2, 64, 64) and traj.real.shape == (2, 3, 6, 64, 64)
    assert traj.actions.shape == (2, 6)
    again = real_trajectories(spec, cond_frames=2)
    assert torch.equal(traj.real, again.real) and traj.levels == again.levels
    frames, _, ends = play_level("coinrun", traj.levels[1], traj.played[1])
    assert not ends.any() and traj.played.shape == (2, 7)
    assert (frames[2:] == to_uint8(traj.real[1]).numpy()).all() and (traj.played[1, 1:] == traj.actions[1].numpy()).all()


def test_the_drift_report_has_a_curve_per_method_and_interval_and_they_agree_until_the_first_regrounding(tmp_path):
    denoiser = open_denoiser(make_base(tmp_path / "base64", size=64), precision="fp32")  # Procgen's 64x64 frames
    avid_method = build_method("avid", replace(ctx_for(denoiser), num_actions=15), {"unet": TINY_UNET})
    spec = DriftSpec(start_level=3, num_levels=5, trajectories=2, horizon=4)
    measure_drift({"avid": avid_method}, spec, tmp_path / "report", [None, 2], SampleConfig(steps=2), chunk=1, lpips=False)
    rows = list(csv.DictReader(open(tmp_path / "report" / "drift.csv")))
    assert len(rows) == 2 * 2 * 4  # intervals x (avid, copy last frame) x steps
    psnr = {(r["regrounding"], r["method"], int(r["step"])): float(r["psnr"]) for r in rows}
    for method in ("avid", "copy last frame"):
        assert psnr[("no re-grounding", method, 1)] == psnr[("reground every 2", method, 1)]
        assert psnr[("no re-grounding", method, 2)] == psnr[("reground every 2", method, 2)]
    assert psnr[("no re-grounding", "avid", 3)] != psnr[("reground every 2", "avid", 3)]
    for name in ("drift.png", "summary.md", "drift.json", "rollouts.gif"):
        assert (tmp_path / "report" / name).stat().st_size > 0
