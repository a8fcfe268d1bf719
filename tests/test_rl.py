"""RL in imagination, judged in the real game: stable-baselines3 sees the world model and the real
game through one VecEnv contract, and the real-game evaluation counts whole episodes fairly."""

from dataclasses import replace

import numpy as np

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
