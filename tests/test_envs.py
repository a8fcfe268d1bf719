"""The world model as a gymnasium env: the ecosystem's contract (check_env, SAME_STEP autoreset),
the sliding conditioning window, chunks of the model's window, and real first frames."""

from dataclasses import replace

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from avid.data import EpisodeStore
from avid.envs import ENV_ID, WorldModelEnv, WorldModelVecEnv, open_starts
from avid.methods import build_method
from tests.conftest import SIZE, TINY_UNET
from tests.test_avid import ctx_for


@pytest.fixture
def avid_method(tiny_denoiser):
    return build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})


def real_starts(store_dir) -> set[bytes]:
    frames = EpisodeStore(store_dir).load_all()["frames"]
    return {f.tobytes() for f in frames}


def test_the_registered_env_passes_gymnasiums_checker_per_step_and_in_chunks(avid_method, tiny_store):
    env = gymnasium.make(ENV_ID, model=avid_method, starts=str(tiny_store.root), render_mode="rgb_array")
    assert env.observation_space.shape == (SIZE, SIZE, 3) and env.action_space.n == 5
    check_env(env.unwrapped)
    chunked = WorldModelEnv(avid_method, str(tiny_store.root), chunk=True, window=3)
    assert chunked.action_space.shape == (3,)
    check_env(chunked)
    _, info = chunked.reset(seed=0)
    obs, _, _, _, info = chunked.step(np.array([1, 2, 3]))
    assert info["frames"].shape == (3, SIZE, SIZE, 3) and (obs == info["frames"][-1]).all()
    assert info["step"] == 3


def test_reset_starts_from_real_frames_and_each_step_slides_the_window_by_one(avid_method, tiny_store):
    env = WorldModelEnv(avid_method, str(tiny_store.root))
    obs0, _ = env.reset(seed=3)
    assert obs0.tobytes() in real_starts(tiny_store.root)
    obs1, reward, terminated, truncated, info = env.step(2)
    ctx = env.imagination.context[0]
    assert (ctx[0] == obs0).all() and (ctx[1] == obs1).all()  # last k = 2 frames: the start's last, the new one
    assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, 1)
    assert obs1.tobytes() not in real_starts(tiny_store.root)  # generated, not copied from the data


def test_the_same_seed_dreams_the_same_episode_and_another_seed_another(avid_method, tiny_store):
    env = WorldModelEnv(avid_method, str(tiny_store.root))

    def episode(seed):
        env.reset(seed=seed)
        return np.stack([env.step(a)[0] for a in (1, 2, 3)])

    assert (episode(5) == episode(5)).all()
    assert not (episode(5) == episode(6)).all()


def test_the_vector_env_restarts_finished_slots_in_the_same_step_with_the_last_frame_in_info(avid_method,
                                                                                              tiny_store):
    ends_slot_0_at_step_2 = []

    def outcome(context, actions):  # a reward model: slot 0 ends at its 2nd step with reward 10
        ends_slot_0_at_step_2.append(None)
        done = np.array([len(ends_slot_0_at_step_2) == 2, False, False])
        return np.where(done, 10.0, 0.5).astype(np.float32), done

    envs = WorldModelVecEnv(avid_method, str(tiny_store.root), num_envs=3, reward_model=outcome, max_episode_steps=3)
    assert envs.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, SIZE, SIZE, 3) and envs.action_space.shape == (3,)
    starts = real_starts(tiny_store.root)
    _, r, term, trunc, info = envs.step(np.array([1, 2, 3]))
    assert r.tolist() == [0.5] * 3 and not term.any() and not trunc.any() and "final_obs" not in info
    obs, r, term, trunc, info = envs.step(np.array([1, 2, 3]))
    assert term.tolist() == [True, False, False] and r.tolist() == [10.0, 0.5, 0.5]
    assert info["_final_obs"].tolist() == [True, False, False]
    assert info["final_obs"][0].tobytes() not in starts and obs[0].tobytes() in starts  # restarted from real frames
    assert info["step"].tolist() == [0, 2, 2]
    _, _, term, trunc, info = envs.step(np.array([0, 0, 0]))
    assert trunc.tolist() == [False, True, True] and info["_final_obs"].tolist() == [False, True, True]


def test_gymnasium_builds_the_vector_env_from_the_registered_id(avid_method, tiny_store):
    envs = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", model=avid_method,
                              starts=str(tiny_store.root))
    obs, _ = envs.reset(seed=1)
    assert isinstance(envs.unwrapped, WorldModelVecEnv) and obs.shape == (2, SIZE, SIZE, 3)
    obs2, *_ = envs.step(envs.action_space.sample())
    assert obs2.shape == obs.shape and obs2.dtype == np.uint8


def test_the_base_model_alone_is_an_env_too(tiny_base, tiny_store):
    env = WorldModelEnv(str(tiny_base), str(tiny_store.root))  # a base model folder: actions are ignored
    assert env.method.name == "base"
    env.reset(seed=0)
    assert env.step(7)[0].shape == (SIZE, SIZE, 3)


def test_bad_inputs_fail_with_one_clear_line(avid_method, tiny_store, tmp_path):
    env = WorldModelEnv(avid_method, str(tiny_store.root))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must lie in 0..4"):
        env.step(9)
    with pytest.raises(ValueError, match="neither a dataset folder"):
        WorldModelEnv(avid_method, str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="start frames are 64x64 px but the model makes 16x16"):
        WorldModelEnv(build_method("avid", replace(avid_method.ctx, frame_size=SIZE), {"unet": TINY_UNET}),
                      "procgen:coinrun:3-3")
    with pytest.raises(ValueError, match="procgen:GAME:START-STOP"):
        open_starts("procgen:coinrun:abc", 2)


def test_real_procgen_starts_are_the_levels_first_frames():
    starts = open_starts("procgen:coinrun:7-7", 2)
    a, b = starts(np.random.default_rng(0)), starts(np.random.default_rng(1))
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    assert (a == b).all()  # one level: the same start whatever the generator
    other = open_starts("procgen:coinrun:8-8", 2)(np.random.default_rng(0))
    assert not (a == other).all()


def test_an_unknown_option_of_the_vector_env_names_the_valid_ones(avid_method, tiny_store):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stepz'\].*'steps'"):
        WorldModelVecEnv(avid_method, str(tiny_store.root), num_envs=2, stepz=3)


def test_env_speed_measures_every_batch_size_and_denoising_step_count(avid_method, tiny_store):
    from avid.pipelines.env_speed import env_speed

    rows = env_speed(avid_method, str(tiny_store.root), num_envs=[1, 2], steps=[1, 3], repeats=1)
    assert [(r["steps"], r["num_envs"]) for r in rows] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert all(r["env_steps_per_s"] > 0 and r["frames_per_step"] == 1 for r in rows)


def test_near_end_starts_come_from_the_last_frames_before_an_episode_ended(tmp_path):
    """Frames carry their index; episodes start at 0, 40, 80 of shard a and 0 of shard b: episodes
    end at frames 39 and 79 (frame 119 is where shard a's stream was cut, not an ending)."""
    from avid.data.storage import EpisodeStore
    from avid.envs.starts import DatasetStarts

    store = EpisodeStore(tmp_path / "d", meta={"source": "synthetic", "action_kind": "discrete", "num_actions": 5,
                                               "frame_size": 16})
    for name, offset in (("a", 0), ("b", 120)):
        frames = np.zeros((120, 16, 16, 3), np.uint8)
        frames[:, 0, 0, 0] = (np.arange(120) + offset) % 256
        frames[:, 0, 0, 1] = (np.arange(120) + offset) // 256
        firsts = np.zeros(120, bool)
        firsts[[0, 40, 80] if name == "a" else [0]] = True
        store.write_shard(name, frames, np.zeros(120, np.int64), firsts)
    starts = DatasetStarts(tmp_path / "d", 2, near_end=3, near_end_share=1.0)
    rng = np.random.default_rng(0)
    lasts = {int(f[-1, 0, 0, 0]) + 256 * int(f[-1, 0, 0, 1]) for f in (starts(rng) for _ in range(200))}
    assert lasts == {37, 38, 77, 78}  # within 3 frames of an ending, with one frame of the episode after it
    uniform = DatasetStarts(tmp_path / "d", 2)
    assert len({int(uniform(rng)[-1, 0, 0, 0]) for _ in range(200)}) > 50
    with pytest.raises(ValueError, match="near_end"):
        DatasetStarts(tmp_path / "d", 2, near_end=-1)
