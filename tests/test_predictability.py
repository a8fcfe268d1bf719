"""What the actions decide, measured from the environment: copy-last-frame against the mean of
random-action rollouts from the exact same saved state."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest

from avid.cli import main
from avid.data.predictability import PredictabilitySpec, best_shift_mse, measure, shifted


def test_a_restored_state_replays_exactly():
    # the measurement's premise: from a saved state the same buttons give the same frames
    from procgen import ProcgenGym3Env

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        env = ProcgenGym3Env(num=1, env_name="coinrun", start_level=5000, num_levels=10, distribution_mode="hard")
    for a in (7, 7, 5, 1):
        env.act(np.array([a], np.int32))
    state, buttons = env.callmethod("get_state"), np.random.default_rng(0).integers(0, 15, 6)
    runs = []
    for _ in range(2):
        env.callmethod("set_state", state)
        frames = []
        for a in buttons:
            env.act(np.array([a], np.int32))
            frames.append(env.observe()[1]["rgb"][0].copy())
        runs.append(np.stack(frames))
    assert np.array_equal(runs[0], runs[1])


def test_the_shift_oracle_finds_a_moved_frame():
    rng = np.random.default_rng(0)
    last = rng.random((16, 16, 3))
    moved = shifted(last, -3, 2)  # 3 up, 2 right
    assert np.array_equal(moved[:13, 2:], last[3:, :14]) and np.array_equal(moved[13:, 2:], last[15:, :14].repeat(3, 0))
    truth = np.stack([last, moved, shifted(last, 5, 0)])
    got = best_shift_mse(last, truth, radius=3)
    assert got[0] == 0 and got[1] == 0  # within the radius: found exactly
    assert got[2] > 0  # 5 px is outside a radius of 3


def test_the_action_free_mean_is_closer_than_copy_last_and_the_report_is_consistent(tmp_path, capsys):
    r = measure(PredictabilitySpec(states=6, futures=3, horizon=4, shift_radius=2))
    c, m, o = r["copy_last"], r["action_free_mean"], r["best_shift_oracle"]
    assert o["mse"] <= c["mse"]  # the zero shift is one of the oracle's choices
    assert len(c["psnr_per_frame"]) == len(m["psnr_per_frame"]) == 4
    assert 0 < m["mse"] < c["mse"]  # the game moves on its own (gravity, the camera): not all up to the actions
    assert r["share_left_without_actions"] == pytest.approx(m["mse"] / c["mse"])
    assert c["psnr_per_frame"][0] > c["psnr_per_frame"][-1]  # the last frame ages
    assert r == measure(PredictabilitySpec(states=6, futures=3, horizon=4, shift_radius=2))  # seeded
    with pytest.raises(ValueError, match="futures >= 2"):
        measure(PredictabilitySpec(futures=1))
    main(["data", "predictability", "--states", "3", "--futures", "2", "--shift-radius", "1",
          "--out", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["spec"]["states"] == 3 and f"| copy the last frame | {saved['copy_last']['mse']:.5f}" in out
