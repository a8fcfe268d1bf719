"""``avid rl``: an agent trained with stable-baselines3's PPO inside a world model (or, for
comparison, in the real game), judged in the real Procgen game on levels it never saw.

The world model is ``WorldModelVecEnv`` (reward and ends from the learned outcome model); the real
game is ``ProcgenVecEnv``, the same contract over Procgen's own vector env. ``SB3VecEnv`` hands
either to stable-baselines3 (its ``VecEnv``: SAME_STEP autoreset, the last frame as
``terminal_observation``). Evaluation runs a fixed number of episodes per parallel game, so
short episodes are not over-counted, and states the mean return with its 95% interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from avid.data.procgen import NUM_ACTIONS, _make_env


class ProcgenVecEnv(VectorEnv):
    """``num_envs`` real Procgen games on levels ``[start_level, start_level + num_levels)``, as a
    gymnasium vector env (Procgen restarts finished games itself: SAME_STEP autoreset; it never shows
    an episode's last frame, so ``final_obs`` is the frame before the ending action)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, game: str = "coinrun", num_envs: int = 8, start_level: int = 0, num_levels: int = 200,
                 distribution_mode: str = "hard", seed: int = 0) -> None:
        self.args = (game, num_envs, start_level, num_levels, distribution_mode)
        self.num_envs = num_envs
        self.single_observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.game = _make_env(*self.args, seed)
        self.length = np.zeros(num_envs, np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:  # a new set of games: Procgen seeds only at construction
            self.game = _make_env(*self.args, seed)
        self.length[:] = 0
        return self.game.observe()[1]["rgb"].copy(), {}

    def step(self, actions):
        last = self.game.observe()[1]["rgb"].copy()
        self.game.act(np.asarray(actions, np.int32))
        reward, obs, first = self.game.observe()
        self.length += 1
        truncated = first & (self.length >= 1000) & (reward <= 0)  # Procgen's time limit
        terminated = first & ~truncated
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(first):
            infos = self._add_info(infos, {"final_obs": last[i], "final_info": {"length": int(self.length[i])}}, i)
        self.length[first] = 0
        return obs["rgb"].copy(), reward.astype(np.float32), terminated, truncated, infos


class SB3VecEnv(VecEnv):
    """A gymnasium vector env with SAME_STEP autoreset as a stable-baselines3 ``VecEnv``."""

    def __init__(self, envs: VectorEnv) -> None:
        if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs a vector env that restarts finished slots in the same step")
        self.envs = envs
        self.render_mode = None
        super().__init__(envs.num_envs, envs.single_observation_space, envs.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = next((s for s in self._seeds if s is not None), None)
        obs, _ = self.envs.reset(seed=seed)
        self._reset_seeds()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.envs.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            infos[i] = {"terminal_observation": info["final_obs"][i], "TimeLimit.truncated": bool(truncated[i])}
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.envs.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(list(self._get_indices(indices)))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        raise NotImplementedError(f"{type(self.envs).__name__} has no per-slot method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))


Policy = Callable[[np.ndarray], np.ndarray]  # observations (N, 64, 64, 3) uint8 -> actions (N,)


def random_policy(seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.integers(0, NUM_ACTIONS, len(obs))


def sb3_policy(model) -> Policy:
    return lambda obs: model.predict(obs, deterministic=False)[0]


def evaluate_real(policy: Policy, episodes: int, start_level: int, num_levels: int, num_envs: int = 50,
                  game: str = "coinrun", seed: int = 0) -> dict[str, Any]:
    """Returns of ``episodes`` real episodes (each of the ``num_envs`` games plays the same number),
    their mean and its 95% interval (normal approximation, 1.96 standard errors)."""
    num_envs = min(num_envs, episodes)
    per_env = math.ceil(episodes / num_envs)
    envs = ProcgenVecEnv(game, num_envs, start_level, num_levels, seed=seed)
    obs, _ = envs.reset()
    ret, returns = np.zeros(num_envs), [[] for _ in range(num_envs)]
    t0 = time.process_time()
    while min(len(r) for r in returns) < per_env:
        obs, reward, terminated, truncated, _ = envs.step(policy(obs))
        ret += reward
        for i in np.flatnonzero(terminated | truncated):
            if len(returns[i]) < per_env:
                returns[i].append(float(ret[i]))
            ret[i] = 0.0
    values = np.asarray([r for per in returns for r in per])
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"episodes": len(values), "mean_return": float(values.mean()), "ci95": [float(values.mean() - half),
            float(values.mean() + half)], "success_rate": float((values > 0).mean()),
            "levels": [start_level, start_level + num_levels - 1], "cpu_seconds": round(time.process_time() - t0, 1)}


@dataclass
class PPOConfig:
    timesteps: int = 20000
    n_steps: int = 128  # per env, per update
    batch_size: int = 256
    n_epochs: int = 3
    lr: float = 5e-4
    gamma: float = 0.99
    ent_coef: float = 0.01
    seed: int = 0


def train_ppo(envs: VectorEnv, cfg: PPOConfig, log: Callable[[str], None] = print):
    """PPO (stable-baselines3, its CNN policy on the 64x64 frames) on ``envs``; returns the model."""
    from stable_baselines3 import PPO

    model = PPO("CnnPolicy", SB3VecEnv(envs), n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                learning_rate=cfg.lr, gamma=cfg.gamma, ent_coef=cfg.ent_coef, seed=cfg.seed, device="cpu", verbose=0)
    t0 = time.time()
    model.learn(total_timesteps=cfg.timesteps)
    log(f"PPO: {cfg.timesteps} timesteps in {time.time() - t0:.0f} s ({asdict(cfg)})")
    return model


def run_rl(out: str, world: str | None, starts: str, reward_model: str | None, ppo: PPOConfig, num_envs: int = 8,
           horizon: int = 200, denoising_steps: int = 4, train_levels: tuple[int, int] = (0, 200),
           eval_episodes: int = 500, eval_levels: tuple[int, int] = (100000, 100000),
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train in the world model ``world`` (a run or base model folder; None: the real game on
    ``train_levels``), then judge the agent and the random policy in the real game on ``eval_levels``
    ``(start, count)``. Writes ``policy.zip`` and ``results.json`` to ``out``."""
    import json
    from pathlib import Path

    import torch

    from avid.data.storage import atomic_write_text
    from avid.envs import WorldModelVecEnv

    torch.set_num_threads(1)
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    if world is None:
        envs = ProcgenVecEnv("coinrun", num_envs, *train_levels, seed=ppo.seed)
    else:
        envs = WorldModelVecEnv(world, starts, num_envs=num_envs, reward_model=reward_model, max_episode_steps=horizon,
                                steps=denoising_steps)
    model = train_ppo(envs, ppo, log)
    train_cpu = time.process_time() - t0
    model.save(str(Path(out) / "policy.zip"))
    agent = evaluate_real(sb3_policy(model), eval_episodes, *eval_levels, seed=ppo.seed)
    rand = evaluate_real(random_policy(ppo.seed), eval_episodes, *eval_levels, seed=ppo.seed)
    results = {"trained_in": world or f"the real game, levels {train_levels[0]}-{sum(train_levels) - 1}",
               "starts": starts if world else None, "reward_model": reward_model if world else None,
               "ppo": asdict(ppo), "num_envs": num_envs, "horizon": horizon if world else 1000,
               "denoising_steps": denoising_steps if world else None,
               "train_cpu_hours": round(train_cpu / 3600, 4), "agent_in_real_game": agent,
               "random_policy_in_real_game": rand,
               "agent_beats_random_95": agent["ci95"][0] > rand["ci95"][1]}
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=1))
    return results
