"""``avid outcome check``: the outcome model reads, at each real event, the frames a world model
imagined before it from the real frames h - 1 steps earlier under the real actions. A perfect world
model keeps every event, copying the last frame loses them, and the real play holds what it says."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from avid.blackbox import open_denoiser
from avid.config import SampleConfig
from avid.data import to_uint8, to_video
from avid.data.procgen import event_windows
from avid.methods import build_method
from avid.pipelines import imagined_events
from avid.pipelines.imagined_events import COPY_LAST, REAL, EventCheckSpec, check_events, contexts_before, wilson
from tests.conftest import TINY_UNET, make_base
from tests.test_avid import ctx_for

MOD = 250  # the toy game: every pixel of frame j + 1 is (frame j's value + action j + 1) mod MOD


def toy_windows(n: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Windows of the toy game; a step is an event (the coin, which ends the episode) when the value
    it is taken on plus its action is a multiple of 7; half the windows are events, half are not."""
    rng = np.random.default_rng(seed)
    out = {"frames": [], "actions": [], "reward": [], "end": []}
    while len(out["frames"]) < n:
        v = [int(rng.integers(MOD))]
        acts = rng.integers(0, 5, frames)
        for a in acts[:-1]:
            v.append((v[-1] + a + 1) % MOD)
        event = (v[-1] + acts[-1]) % 7 == 0
        if sum(out["end"]) >= n // 2 and event or len(out["end"]) - sum(out["end"]) >= n - n // 2 and not event:
            continue
        out["frames"].append(np.broadcast_to(np.asarray(v, np.uint8)[:, None, None, None], (frames, 64, 64, 3)))
        out["actions"].append(acts)
        out["reward"].append(10.0 if event else 0.0)
        out["end"].append(bool(event))
    return {"frames": np.stack(out["frames"]), "actions": np.stack(out["actions"]),
            "reward": np.asarray(out["reward"], np.float32), "end": np.asarray(out["end"]),
            "event_rate": np.float64(0.01)}


@dataclass
class OutcomeCfg:
    cond_frames: int = 2
    frame_size: int = 64
    thresholds: tuple = (0.5, 0.5)


class ToyOutcome:
    """The toy game's true reward and end, read from the last frame of the context and the action."""

    cfg = OutcomeCfg()

    def probabilities(self, context, actions):
        hit = ((context[:, -1, 0, 0, 0].astype(int) + actions) % 7 == 0).astype(float)
        return np.stack([hit, hit], axis=1)


def perfect_rollout(method, first, actions, cfg, chunk):
    """The toy game's own next frames (a world model that makes no mistakes)."""
    v = to_uint8(first).numpy()[:, -1, 0, 0, 0].astype(int)
    frames = []
    for j in range(actions.shape[1]):
        v = (v + actions[:, j].numpy() + 1) % MOD
        frames.append(np.broadcast_to(v.astype(np.uint8)[:, None, None, None], (len(v), 64, 64, 3)))
    return to_video(torch.as_tensor(np.stack(frames, axis=1)))


class PerfectModel:
    class ctx:
        cond_frames, frame_size, action_kind = 2, 64, "discrete"


def test_a_perfect_world_model_keeps_every_event_and_copying_the_last_frame_loses_them(tmp_path, monkeypatch):
    monkeypatch.setattr(imagined_events, "event_windows", lambda *a, **k: toy_windows(64, a[4], 0))
    monkeypatch.setattr(imagined_events, "rollout_long", perfect_rollout)
    spec = EventCheckSpec(events=32, negatives=32, horizons=(1, 2, 4, 8))
    report = check_events({"perfect": PerfectModel()}, ToyOutcome(), spec, tmp_path, SampleConfig())
    r = report["results"]
    assert set(r) == {REAL, COPY_LAST, "perfect"} and set(r[REAL]) == {"1"} and set(r["perfect"]) == {"2", "4", "8"}
    for h in ("2", "4", "8"):
        for head in ("reward", "end"):
            assert r["perfect"][h][head]["recall"] == 1.0 and r["perfect"][h][head]["false_rate"] == 0.0
            assert r[COPY_LAST][h][head]["recall"] < 0.5  # stale frames: the event is not there yet
    assert r[REAL]["1"]["reward"]["recall"] == 1.0 and r[REAL]["1"]["end"]["events"] == 32
    assert r[REAL]["1"]["reward"]["precision_at_game_rate"] == 1.0
    table = (tmp_path / "events.md").read_text()
    assert table.count("| perfect |") == 3 and "| real frames | 0 | 100.0%" in table
    assert (tmp_path / "events.json").exists()


def test_the_context_at_horizon_h_starts_from_the_real_frames_h_minus_1_steps_before():
    w = toy_windows(4, 9, 1)
    real = contexts_before(w, 1, 2, None, SampleConfig(), 1)
    assert np.array_equal(real, w["frames"][:, -2:])  # h = 1: the real frames the action was taken on
    stale = contexts_before(w, 4, 2, None, SampleConfig(), 1)  # copy-last: the frame 3 steps before, held
    assert np.array_equal(stale[:, -1], w["frames"][:, -4]) and np.array_equal(stale[:, 0], w["frames"][:, -4])
    with pytest.raises(ValueError, match="needs 10 frames"):
        contexts_before(w, 9, 2, None, SampleConfig(), 1)


def test_real_event_windows_hold_what_they_say():
    w = event_windows("coinrun", 52000, 50, events=3, frames=4, negatives=5, keep_negatives=0.05, progress=False)
    assert w["frames"].shape == (8, 4, 64, 64, 3) and w["actions"].shape == (8, 4)
    event = (w["reward"] > 0) | w["end"]
    assert event.sum() == 3 and (~event).sum() == 5 and 0 < w["event_rate"] < 0.1
    assert np.all(w["end"][w["reward"] > 0])  # Coinrun's coin ends the episode


def test_a_real_model_is_checked_end_to_end_through_its_sampler(tmp_path):
    denoiser = open_denoiser(make_base(tmp_path / "base64", size=64), precision="fp32")
    method = build_method("avid", replace(ctx_for(denoiser), num_actions=15), {"unet": TINY_UNET})
    spec = EventCheckSpec(events=2, negatives=2, horizons=(1, 3), start_level=52000, num_levels=50)
    cfg = SampleConfig(sampler="ddim", steps=2, batch_size=4, precision="fp32")
    report = check_events({"tiny": method}, ToyOutcome(), spec, tmp_path, cfg, progress=False)
    assert set(report["results"]["tiny"]) == {"3"} and report["steps"]["no_event"] == 2
    assert 0 <= report["results"]["tiny"]["3"]["end"]["recall"] <= 1


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.490, abs=1e-3) and hi == pytest.approx(0.943, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and np.isnan(wilson(0, 0)[0])
