"""The simulated robot arm: its 7-D actions move the arm and the gripper, the scripted policies move
objects, episodes are a function of the seed, and `avid data robot` stores, resumes and repairs as
`avid data procgen` does."""

import json

import numpy as np
import pytest

from avid.cli import main
from avid.data import EpisodeStore, WindowDataset, collate
from avid.data.robot import PRESETS, RobotSpec, generate, run_episode
from avid.data.robot_sim import ACTION_SCALE, MAX_DPOS, SCENES, ArmSim
from avid.data.verify import repair, verify
from tests.test_data_verify import fresh

pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def sim():
    s = ArmSim(size=32)
    yield s
    s.close()


def test_position_actions_move_the_hand_and_the_gripper_action_closes_the_fingers(sim):
    sim.reset(np.random.default_rng(0), SCENES["lab"], num_objects=1, tray=False)
    for axis, sign in ((1, -1.0), (2, -1.0), (0, -1.0)):
        before = sim.ee_position()
        action = np.zeros(7)
        action[axis], action[6] = sign, -1.0
        applied = [sim.step(action) for _ in range(4)]
        moved = sim.ee_position() - before
        assert moved[axis] * sign > 2.5 * MAX_DPOS, (axis, moved)  # 4 steps of 3 cm, the arm lagging behind
        assert abs(moved[axis]) > 2 * np.abs(np.delete(moved, axis)).max()
        assert np.allclose(np.stack(applied)[:, axis], sign)  # inside the workspace: applied as given
    opened = sim.finger_width()
    for _ in range(4):
        sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert opened > 0.07 and sim.finger_width() < 0.02


def test_an_action_that_would_leave_the_workspace_is_recorded_as_the_move_made(sim):
    sim.reset(np.random.default_rng(1), SCENES["lab"], num_objects=1, tray=False)
    for _ in range(30):
        applied = sim.step(np.array([0, 0, -1.0, 0, 0, 0, -1]))  # down into the table
    assert applied[2] == 0.0 and sim.cmd_pos[2] == pytest.approx(0.015)


def test_scripted_policies_make_things_happen(sim):
    """push moves an object along the table, pick and place lift one; reach moves the hand only."""
    moved = {}
    for task in ("reach", "push", "pick", "place"):
        ep = run_episode(sim, RobotSpec([task], frame_size=32, seed=3), 0, 48)
        travel = np.linalg.norm(ep.objects[:, :, :2] - ep.objects[:1, :, :2], axis=-1).max()
        lift = (ep.objects[:, :, 2] - ep.objects[:1, :, 2]).max()
        moved[task] = (travel, lift, np.abs(np.diff(ep.ee, axis=0)).sum())
        assert np.abs(ep.actions).max() <= 1 and ep.actions.shape == (48, 7)
        assert np.abs(ep.frames[1:].astype(int) - ep.frames[:-1]).mean() > 0.5  # the video is not still
    assert all(m[2] > 0.5 for m in moved.values())  # the hand travels half a metre or more
    assert moved["reach"][0] < 0.01 and moved["push"][0] > 0.05
    assert moved["pick"][1] > 0.08 and moved["place"][1] > 0.08
    ep = run_episode(sim, RobotSpec(["place"], frame_size=32, seed=100), 0, 64)  # the default episode length
    tray = sim.position(sim.tray)[:2]
    before, after = (np.linalg.norm(ep.objects[j, :, :2] - tray, axis=-1) for j in (0, -1))
    assert ((before > 0.1) & (after < 0.08)).any()  # an object was carried into the tray


def test_an_episode_is_a_function_of_the_seed_and_its_index(sim):
    spec = RobotSpec(["push", "pick"], frame_size=32, seed=5)
    a, b = run_episode(sim, spec, 2, 6), run_episode(ArmSim(size=32), spec, 2, 6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    c = run_episode(sim, RobotSpec(["push", "pick"], frame_size=32, seed=6), 2, 6)
    assert not np.array_equal(a.frames, c.frames)


TINY = RobotSpec(["push"], episodes=3, episode_len=16, frame_size=32, episodes_per_shard=1, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("robot") / "data"
    store = generate(TINY, str(root), progress=False)
    return root, {s["file"]: (root / s["file"]).read_bytes() for s in store.shards}


def test_a_stored_dataset_gives_windows_of_normalised_7d_actions(dataset):
    root, files = dataset
    store = EpisodeStore(root)
    meta = store.meta
    assert meta["action_kind"] == "continuous" and meta["num_actions"] == 7 and meta["frame_size"] == 32
    assert meta["action_scale"] == pytest.approx(ACTION_SCALE.tolist()) and len(files) == 3
    ds = WindowDataset(root, frames=16, cond_frames=1, stride=16)
    assert len(ds) == 3  # one window per 16-frame episode, none across episodes
    batch = collate([ds[j] for j in range(len(ds))])
    assert batch.actions.shape == (3, 15, 7) and batch.actions.dtype.is_floating_point
    assert float(batch.actions.abs().max()) <= 1 and float(batch.actions[..., :3].abs().mean()) > 0.05
    ep = run_episode(ArmSim(size=32), TINY, 1, 16)  # the stored episode is the episode of its index
    assert np.array_equal(store.load_shard(store.shards[1])["frames"], ep.frames)


def test_a_lost_shard_is_regenerated_identically_by_resume_and_by_repair(dataset, tmp_path):
    copy, files = fresh(tmp_path, dataset)
    first, second = sorted(files)[:2]
    (copy / first).unlink()
    generate(TINY, str(copy), progress=False)  # rerun: resumes
    assert (copy / first).read_bytes() == files[first]
    (copy / second).write_bytes(b"garbled")
    assert [p.file for p in verify(copy)[1]] == [second]
    problems, done = repair(copy, progress=False)
    assert "regenerated 1" in done and (copy / second).read_bytes() == files[second]


def test_pretraining_videos_store_no_actions_and_trajectories_are_cut_from_episodes(tmp_path):
    spec = RobotSpec(["reach"], episodes=1, episode_len=20, trajectories=2, trajectory_len=8, actions=False,
                     frame_size=32, seed=9)
    store = generate(spec, str(tmp_path / "t"), progress=False)
    data = store.load_all()
    assert store.meta["action_kind"] == "none" and data["actions"].shape == (16, 0)
    assert data["frames"].shape == (16, 32, 32, 3) and data["firsts"].nonzero()[0].tolist() == [0, 8]
    with pytest.raises(ValueError, match="other settings"):
        generate(RobotSpec(["reach"], trajectories=2, trajectory_len=8, frame_size=32, seed=9), str(tmp_path / "t"))


def test_presets_keep_splits_apart_and_bad_specs_fail_with_one_line():
    seeds = {name: spec.seed for name, spec in PRESETS.items()}
    assert seeds["robot-target-cpu"] == seeds["robot-target"]  # the CPU set is the full set's start
    assert len({seeds[n] for n in ("robot-pretrain", "robot-pretrain-val", "robot-target", "robot-target-val",
                                   "robot-target-test")}) == 5
    assert not PRESETS["robot-pretrain"].actions and "place" not in PRESETS["robot-pretrain"].tasks
    with pytest.raises(ValueError, match="unknown or no robot task"):
        RobotSpec(["juggle"])
    with pytest.raises(ValueError, match="trajectory_len <= episode_len"):
        RobotSpec(episode_len=8, trajectories=4, trajectory_len=16)


def test_the_command_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["data", "robot", "--tasks", "pick", "--episodes", "1", "--episode-len", "4", "--frame-size", "16",
          "--out", str(out)])
    assert "4 frames in 1 shards" in capsys.readouterr().out
    meta = json.loads((out / "index.json").read_text())["meta"]
    assert meta["source"] == "robot" and meta["tasks"] == ["pick"] and meta["frame_size"] == 16
