"""Episode storage, Procgen generation and the window dataset's alignment of frames and actions."""

import json

import numpy as np
import pytest
import torch

from avid.data import EpisodeStore, WindowDataset, collate, to_uint8, to_video
from avid.data.procgen import PRESETS, ProcgenSpec, describe_levels, generate, shared_levels


def counting_store(folder, n=30, episode_starts=(0, 12)):
    """Frame j has every pixel equal to j; action j equals j (mod 15)."""
    store = EpisodeStore(folder, meta={"action_kind": "discrete", "num_actions": 15, "frame_size": 4})
    frames = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
    firsts = np.zeros(n, bool)
    firsts[list(episode_starts)] = True
    store.write_shard("s0", frames, np.arange(n) % 15, firsts)
    return store


def frame_ids(video):
    return to_uint8(video)[..., 0, 0, 0].tolist()  # (C, T, H, W) -> per-frame value


def test_windows_pair_each_predicted_frame_with_the_action_that_produced_it(tmp_path):
    ds = WindowDataset(counting_store(tmp_path), frames=5, cond_frames=2)
    for item in (ds[j] for j in range(len(ds))):
        first, x0, acts = frame_ids(item["first"]), frame_ids(item["x0"]), item["actions"].tolist()
        assert x0 == [first[-1] + 1 + j for j in range(3)]
        assert acts == [(f - 1) % 15 for f in x0]  # the action taken at frame tau-1 produced frame tau


def test_windows_never_cross_an_episode_start(tmp_path):
    ds = WindowDataset(counting_store(tmp_path), frames=5, cond_frames=2)
    starts = [frame_ids(ds[j]["first"])[0] for j in range(len(ds))]
    assert all(not (s < 12 < s + 5) for s in starts)
    assert len(starts) == (12 - 5 + 1) + (30 - 12 - 5 + 1)
    strided = WindowDataset(counting_store(tmp_path / "b"), frames=5, cond_frames=2, stride=5)
    assert [frame_ids(strided[j]["first"])[0] for j in range(len(strided))] == [0, 5, 12, 17, 22]


def test_shards_load_as_one_stream_with_each_shard_starting_an_episode(tmp_path):
    store = counting_store(tmp_path, n=10, episode_starts=(0,))
    frames = np.full((6, 4, 4, 3), 200, np.uint8)
    store.write_shard("s1", frames, np.arange(6) % 15, np.zeros(6, bool))  # continues no episode of s0
    data = EpisodeStore(tmp_path).load_all()
    assert data["frames"][:, 0, 0, 0].tolist() == list(range(10)) + [200] * 6
    assert data["actions"].tolist() == list(range(10)) + list(range(6))
    assert np.flatnonzero(data["firsts"]).tolist() == [0, 10]  # the second shard starts an episode
    assert data["frames"].dtype == np.uint8 and data["frames"].shape == (16, 4, 4, 3)


def test_a_window_limit_reads_only_the_shards_it_needs_and_keeps_the_same_windows(tmp_path):
    store = counting_store(tmp_path, n=20, episode_starts=(0,))
    for j in range(1, 4):
        frames = np.full((20, 4, 4, 3), 50 * j, np.uint8)
        store.write_shard(f"s{j}", frames, np.zeros(20, int), np.zeros(20, bool))
    full = WindowDataset(EpisodeStore(tmp_path), frames=5, cond_frames=2)
    (tmp_path / "s3.npz").write_bytes(b"garbled")  # a limit that stops before s3 never reads it
    part = WindowDataset(EpisodeStore(tmp_path), frames=5, cond_frames=2, limit=20)
    assert len(part) == 20 and len(part.frames) == 40  # 16 windows per shard: two shards read
    assert [frame_ids(part[j]["first"]) for j in range(20)] == [frame_ids(full[j]["first"]) for j in range(20)]
    with pytest.raises(ValueError, match="s3.npz"):  # asking for more reaches the damaged shard
        WindowDataset(EpisodeStore(tmp_path), frames=5, cond_frames=2, limit=60)


def test_video_conversion_round_trips():
    frames = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)
    v = to_video(frames)
    assert v.shape == (2, 3, 3, 8, 8) and v.min() >= -1 and v.max() <= 1
    assert torch.equal(to_uint8(v), frames)


def test_collate_builds_a_batch(tmp_path):
    ds = WindowDataset(counting_store(tmp_path), frames=5, cond_frames=2)
    b = collate([ds[0], ds[1]])
    assert b.first.shape == (2, 3, 2, 4, 4) and b.x0.shape == (2, 3, 3, 4, 4) and b.actions.shape == (2, 3)


def test_corrupt_or_missing_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset"):
        EpisodeStore(tmp_path / "nothing")
    store = counting_store(tmp_path / "c")
    (store.root / "s0.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot use shard .*unreadable"):
        WindowDataset(store.root)
    (store.root / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt dataset index"):
        EpisodeStore(store.root)


def test_procgen_generation_is_resumable_and_labelled(tmp_path):
    spec = ProcgenSpec(["coinrun"], start_level=3, num_levels=2, steps_per_level=60)
    store = generate(spec, str(tmp_path / "cr"), progress=False)
    assert [s["level"] for s in store.shards] == [3, 4] and store.num_frames() == 120
    shard = store.load_shard(store.shards[0])
    assert shard["frames"].shape == (60, 64, 64, 3) and shard["frames"].dtype == np.uint8
    assert shard["actions"].min() >= 0 and shard["actions"].max() < 15
    # a killed run that wrote only the first shard resumes with the second, same data
    index = json.loads((store.root / "index.json").read_text())
    index["shards"] = index["shards"][:1]
    (store.root / "index.json").write_text(json.dumps(index))
    again = generate(spec, str(tmp_path / "cr"), progress=False)
    assert len(again.shards) == 2
    assert np.array_equal(again.load_shard(again.shards[1])["frames"],
                          generate(spec, str(tmp_path / "fresh"), progress=False).load_shard(
                              EpisodeStore(tmp_path / "fresh").shards[1])["frames"])
    with pytest.raises(ValueError, match="other settings"):
        generate(ProcgenSpec(["coinrun"], 3, 2, 61), str(tmp_path / "cr"), progress=False)


def test_evaluation_trajectories_stay_inside_episodes(tmp_path):
    spec = ProcgenSpec(["coinrun"], 10000, 1000, trajectories=12, seed=1)
    store = generate(spec, str(tmp_path / "ev"), progress=False)
    ds = WindowDataset(store, frames=10, cond_frames=2, stride=10)
    assert len(ds) == 12
    # consecutive frames of a trajectory are close (no level switch inside)
    for j in range(12):
        v = torch.cat([ds[j]["first"], ds[j]["x0"]], dim=1)
        assert float((v[:, 1:] - v[:, :-1]).abs().mean()) < 0.5


def test_presets_match_the_paper():
    assert len(PRESETS["procgen15"].games) == 15 and "coinrun" not in PRESETS["procgen15"].games
    assert (PRESETS["coinrun500k"].num_levels, PRESETS["coinrun500k"].steps_per_level) == (500, 1000)
    ev = PRESETS["coinrun-eval"]
    assert (ev.start_level, ev.num_levels, ev.trajectories, ev.trajectory_len) == (10000, 1000, 1024, 10)
    with pytest.raises(ValueError, match="unknown Procgen game"):
        ProcgenSpec(["pong"])


def test_validation_splits_share_no_level_with_test_or_training_sets():
    meta = {name: spec.meta() for name, spec in PRESETS.items()}
    assert describe_levels(meta["coinrun-val"]) == "coinrun levels 5000-5999"
    assert describe_levels(meta["procgen15-test"]).endswith("levels 3000-3999")
    assert (PRESETS["coinrun-val"].trajectories, PRESETS["procgen15-val"].trajectories) == (256, 16)
    assert len({PRESETS[n].seed for n in ("coinrun-eval", "coinrun-val", "procgen15-val", "procgen15-test")}) == 4
    coinrun = [n for n in PRESETS if PRESETS[n].games == ["coinrun"] and n != "coinrun-val"]
    assert len(coinrun) == 8 and all(shared_levels(meta["coinrun-val"], meta[n]) is None for n in coinrun)
    for n in ("coinrun-classifier", "coinrun-classifier-cpu", "coinrun-classifier-test"):  # the classifier's choices
        assert shared_levels(meta["coinrun-classifier-val"], meta[n]) is None
    for split in ("procgen15-val", "procgen15-test"):
        assert shared_levels(meta[split], meta["procgen15-cpu"]) is None
        assert shared_levels(meta[split], meta["coinrun-eval"]) is None  # other games
    assert shared_levels(meta["procgen15-val"], meta["procgen15-test"]) is None
    # the check itself: overlapping ranges of a common game are found and named
    assert shared_levels(meta["procgen15-val"], meta["procgen15"]).endswith("levels 1000-1999")
    assert shared_levels(meta["coinrun-eval"], {**meta["coinrun-val"], "start_level": 10990}) == "coinrun levels 10990-10999"
    assert shared_levels(meta["coinrun-val"], {"source": "synthetic"}) is None
