"""RL in imagination, judged in the real game: stable-baselines3 sees the world model and the real
game through one VecEnv contract, and the real-game evaluation counts whole episodes fairly."""

from dataclasses import replace

import numpy as np
import pytest

from avid.blackbox import open_denoiser
from avid.envs import WorldModelVecEnv
from avid.methods import build_method
from avid.pipelines.rl import PPOConfig, ProcgenVecEnv, SB3VecEnv, evaluate_real, random_policy, run_rl, sb3_policy
from tests.conftest import SIZE, TINY_UNET, make_base
from tests.test_avid import ctx_for


def test_stable_baselines_gets_the_last_frame_of_a_finished_imagined_episode(tiny_denoiser, tiny_store):
    method = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    envs = SB3VecEnv(WorldModelVecEnv(method, str(tiny_store.root), num_envs=2, max_episode_steps=2))
    obs = envs.reset()
    assert obs.shape == (2, SIZE, SIZE, 3)
    envs.step(np.array([1, 2]))
    obs, reward, done, infos = envs.step(np.array([1, 2]))
    assert done.tolist() == [True, True] and all(i["TimeLimit.truncated"] for i in infos)
    assert infos[0]["terminal_observation"].shape == (SIZE, SIZE, 3)
    assert not (infos[0]["terminal_observation"] == obs[0]).all()  # the slot restarted from real frames


def test_the_real_game_evaluation_plays_the_same_number_of_whole_episodes_in_every_game():
    result = evaluate_real(random_policy(0), episodes=4, start_level=7, num_levels=3, num_envs=2)
    assert result["episodes"] == 4 and result["ci95"][0] <= result["mean_return"] <= result["ci95"][1]
    assert result["mean_return"] * 4 % 10 == 0  # every return is 0 or 10: Coinrun pays only for the coin


def test_the_real_game_restarts_itself_and_reports_the_frame_before_the_end():
    envs = ProcgenVecEnv(num_envs=2, start_level=5, num_levels=1)
    obs, _ = envs.reset()
    start = obs[0].copy()
    for _ in range(1000):
        obs, reward, terminated, truncated, info = envs.step(np.array([7, 7]))  # run right
        if (terminated | truncated).any():
            break
    i = int(np.flatnonzero(terminated | truncated)[0])
    assert info["_final_obs"][i] and info["final_obs"][i].shape == (64, 64, 3)
    assert (obs[i] == start).all()  # one level: the game restarts at its first frame


def test_ppo_trains_inside_a_world_model_and_is_judged_in_the_real_game(tmp_path):
    denoiser = open_denoiser(make_base(tmp_path / "base64", size=64), precision="fp32")  # NatureCNN needs >= 36 px
    method = build_method("avid", replace(ctx_for(denoiser), num_actions=15), {"unet": TINY_UNET})

    def coin_every_third_step(context, actions):
        done = actions % 3 == 0
        return np.where(done, 10.0, 0.0).astype(np.float32), done

    from avid.pipelines.rl import train_ppo

    envs = WorldModelVecEnv(method, "procgen:coinrun:3-4", num_envs=2, reward_model=coin_every_third_step, steps=1)
    model = train_ppo(envs, PPOConfig(timesteps=16, n_steps=8, batch_size=16, n_epochs=1), log=lambda s: None)
    actions = sb3_policy(model)(np.zeros((3, 64, 64, 3), np.uint8))
    assert actions.shape == (3,) and ((0 <= actions) & (actions < 15)).all()

    results = run_rl(str(tmp_path / "rl"), str(tmp_path / "base64"), "procgen:coinrun:3-4", None,
                     PPOConfig(timesteps=16, n_steps=8, batch_size=16, n_epochs=1), num_envs=2, horizon=3,
                     denoising_steps=1, eval_episodes=2, eval_levels=(9, 1), log=lambda s: None)
    assert (tmp_path / "rl" / "policy.zip").exists() and (tmp_path / "rl" / "results.json").exists()
    assert results["agent_in_real_game"]["episodes"] == results["random_policy_in_real_game"]["episodes"] == 2
    assert results["trained_in"] == str(tmp_path / "base64")


def test_the_difference_from_random_combines_both_standard_errors():
    from avid.pipelines.rl import difference

    a = {"mean_return": 5.0, "ci95": [4.0, 6.0]}  # standard error 1/1.96
    b = {"mean_return": 2.0, "ci95": [1.0, 3.0]}
    d = difference(a, b)
    assert d["mean"] == 3.0 and np.allclose(d["ci95"], [3 - 2 ** 0.5, 3 + 2 ** 0.5]) and d["significant"]
    assert not difference({"mean_return": 2.5, "ci95": [1.5, 3.5]}, b)["significant"]


def test_the_equal_data_arm_counts_the_frames_the_world_model_learnt_from(tmp_path, tiny_store):
    import yaml

    from avid.pipelines.rl import world_model_frames

    run = tmp_path / "run"
    run.mkdir()
    data = {"train": str(tiny_store.root), "frames": 6, "cond_frames": 2, "train_limit": None}
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"data": data}}))
    assert world_model_frames(str(run)) == 120  # make_store's frames
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"data": {**data, "train_limit": 3}}}))
    assert world_model_frames(str(run)) == 8  # three overlapping windows of 6 frames at 0, 1, 2
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "base"}))
    assert world_model_frames(str(run)) is None


def test_the_comparison_trains_three_arms_once_and_tables_them_against_random(tmp_path):
    from avid.pipelines.rl import run_rl_comparison

    base = make_base(tmp_path / "base64", size=64)
    ppo = PPOConfig(timesteps=16, n_steps=8, batch_size=16, n_epochs=1)
    logs: list[str] = []
    args = dict(out=str(tmp_path / "cmp"), world=str(base), starts="procgen:coinrun:3-4", reward_model=None, ppo=ppo,
                num_envs=2, horizon=3, denoising_steps=1, train_levels=(0, 2), eval_episodes=2, eval_levels=(9, 1),
                base=str(base), real_frames=32, log=logs.append)
    out = run_rl_comparison(**args)
    assert set(out["arms"]) == {"world", "base-alone", "real"}
    assert out["arms"]["real"]["timesteps_done"] == 32 and out["arms"]["world"]["timesteps_done"] == 16
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| random policy |" in table and "32 real frames" in table and table.count("\n| in the ") == 3
    assert any("PPO: 16/16 timesteps" in line for line in logs)  # progress lines while training
    stamp = (tmp_path / "cmp" / "real" / "policy.zip").stat().st_mtime_ns
    logs.clear()
    run_rl_comparison(**{**args, "real_frames": 48})  # the real arm's settings changed: only it trains again
    assert sum("reusing" in line for line in logs) == 2
    assert (tmp_path / "cmp" / "real" / "policy.zip").stat().st_mtime_ns != stamp
    with pytest.raises(ValueError, match="names no base"):
        run_rl_comparison(**{**args, "base": None})


def test_near_end_starts_are_recorded_so_an_arm_trained_without_them_is_not_reused():
    from avid.pipelines.rl import rl_settings

    ppo = PPOConfig()
    plain = rl_settings("runs/w", "data/d", "assets/o", ppo, 8, 50, 4, (0, 200))
    near = rl_settings("runs/w", "data/d", "assets/o", ppo, 8, 50, 4, (0, 200), near_end=16)
    assert "near_end" not in plain and near == {**plain, "near_end": 16}  # records made before it still match
    assert "near_end" not in rl_settings(None, "data/d", None, ppo, 8, 50, 4, (0, 200), near_end=16)  # the real game
