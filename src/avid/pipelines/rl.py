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

from avid.cputime import cpu_seconds
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


def _progress_callback(total: int, log: Callable[[str], None]):
    """A stable-baselines3 callback that logs, about every tenth of the run, the timesteps done, the
    wall time and the mean return of the episodes that finished since the last line."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0, self.next_at, self.returns = time.time(), total / 10, []
            self.running = np.zeros(self.training_env.num_envs)

        def _on_step(self) -> bool:
            self.running += self.locals["rewards"]
            for i in np.flatnonzero(self.locals["dones"]):
                self.returns.append(float(self.running[i]))
                self.running[i] = 0.0
            if self.num_timesteps >= self.next_at:
                mean = f"{np.mean(self.returns):.2f} over {len(self.returns)} episodes" if self.returns else "none yet"
                log(f"PPO: {self.num_timesteps}/{total} timesteps, {time.time() - self.t0:.0f} s; "
                    f"mean training-episode return {mean}")
                self.next_at += total / 10
                self.returns = []
            return True

    return Progress()


def train_ppo(envs: VectorEnv, cfg: PPOConfig, log: Callable[[str], None] = print):
    """PPO (stable-baselines3, its CNN policy on the 64x64 frames) on ``envs``; returns the model."""
    from stable_baselines3 import PPO

    model = PPO("CnnPolicy", SB3VecEnv(envs), n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                learning_rate=cfg.lr, gamma=cfg.gamma, ent_coef=cfg.ent_coef, seed=cfg.seed, device="cpu", verbose=0)
    t0 = time.time()
    model.learn(total_timesteps=cfg.timesteps, callback=_progress_callback(cfg.timesteps, log))
    log(f"PPO: {model.num_timesteps} timesteps in {time.time() - t0:.0f} s ({asdict(cfg)})")
    return model


def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Mean return of ``a`` minus that of ``b`` (two ``evaluate_real`` results, independent games)
    with its 95% interval (normal approximation, the two standard errors combined)."""
    se = [(r["ci95"][1] - r["mean_return"]) / 1.96 for r in (a, b)]
    d, half = a["mean_return"] - b["mean_return"], 1.96 * math.hypot(*se)
    return {"mean": d, "ci95": [d - half, d + half], "significant": bool(d - half > 0 or d + half < 0)}


def rl_settings(world: str | None, starts: str, reward_model: str | None, ppo: PPOConfig, num_envs: int,
                horizon: int, denoising_steps: int, train_levels: tuple[int, int],
                near_end: int = 0) -> dict[str, Any]:
    """What an agent was trained on and how, as ``run_rl`` records it in ``results.json`` (the
    comparison reuses an arm whose record matches; ``near_end`` is recorded when used)."""
    settings = {"trained_in": world or f"the real game, levels {train_levels[0]}-{sum(train_levels) - 1}",
                "starts": starts if world else None, "reward_model": reward_model if world else None,
                "ppo": asdict(ppo), "num_envs": num_envs, "horizon": horizon if world else 1000,
                "denoising_steps": denoising_steps if world else None}
    if world and near_end:
        settings["near_end"] = near_end
    return settings


def run_rl(out: str, world: str | None, starts: str, reward_model: str | None, ppo: PPOConfig, num_envs: int = 8,
           horizon: int = 200, denoising_steps: int = 4, train_levels: tuple[int, int] = (0, 200),
           eval_episodes: int = 500, eval_levels: tuple[int, int] = (100000, 100000),
           log: Callable[[str], None] = print, near_end: int = 0) -> dict[str, Any]:
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
    t0, w0 = cpu_seconds(), time.time()
    if world is None:
        envs = ProcgenVecEnv("coinrun", num_envs, *train_levels, seed=ppo.seed)
    else:
        envs = WorldModelVecEnv(world, starts, num_envs=num_envs, reward_model=reward_model, max_episode_steps=horizon,
                                steps=denoising_steps, near_end=near_end)
    model = train_ppo(envs, ppo, log)
    train_cpu, train_wall = cpu_seconds() - t0, time.time() - w0  # the world model's black-box worker included
    timesteps = int(model.num_timesteps)
    model.save(str(Path(out) / "policy.zip"))
    agent = evaluate_real(sb3_policy(model), eval_episodes, *eval_levels, seed=ppo.seed)
    rand = evaluate_real(random_policy(ppo.seed), eval_episodes, *eval_levels, seed=ppo.seed)
    results = {**rl_settings(world, starts, reward_model, ppo, num_envs, horizon, denoising_steps, train_levels,
                             near_end),
               "timesteps_done": timesteps, "train_cpu_hours": round(train_cpu / 3600, 4),
               "train_wall_hours": round(train_wall / 3600, 4),
               "agent_in_real_game": agent, "random_policy_in_real_game": rand,
               "agent_minus_random": difference(agent, rand)}
    results["agent_beats_random_95"] = results["agent_minus_random"]["ci95"][0] > 0
    atomic_write_text(Path(out) / "results.json", json.dumps(results, indent=1))
    return results


def world_model_frames(world: str) -> int | None:
    """The real, action-labelled frames a trained run's world model learnt from (its training data
    set, or the part its ``train_limit`` used); None for a base model folder, which names none."""
    import json
    from pathlib import Path

    from avid.checkpoint import load_config

    data = ((load_config(world).get("run") or {}).get("data") or {})
    if not data.get("train"):
        return None
    if data.get("train_limit"):
        from avid.data import WindowDataset

        windows = WindowDataset(data["train"], data["frames"], data["cond_frames"], limit=data["train_limit"])
        return int(np.unique(windows.starts[:, None] + np.arange(windows.T)).size)  # frames in any window
    index = Path(data["train"]) / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"{world} was trained on {data['train']}, which is not here (no index.json): give "
                                "the number of real frames to train the real-game agent on (--real-frames)")
    return int(sum(s["frames"] for s in json.loads(index.read_text())["shards"]))


ARMS = {"world": "in the world model", "base-alone": "in the base model alone", "real": "in the real game"}


def run_rl_comparison(out: str, world: str, starts: str, reward_model: str | None, ppo: PPOConfig,
                      num_envs: int = 8, horizon: int = 200, denoising_steps: int = 4,
                      train_levels: tuple[int, int] = (0, 200), eval_episodes: int = 500,
                      eval_levels: tuple[int, int] = (100000, 100000), base: str | None = None,
                      real_frames: int | None = None, log: Callable[[str], None] = print,
                      near_end: int = 0) -> dict[str, Any]:
    """The issue's comparison in one folder: the same PPO agent trained inside ``world``
    (``out/world``), inside its base model alone (``out/base-alone``; ``base`` or the run's own) and in the
    real game on as many real frames as ``world`` learnt from (``out/real``), each judged with the
    random policy in the real game. An arm whose ``results.json`` has the same settings is reused,
    so a stopped comparison resumes arm by arm. Writes ``comparison.json`` and ``comparison.md``."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from avid.checkpoint import load_config
    from avid.data.storage import atomic_write_text

    base = base or load_config(world).get("base")
    if not base:
        raise ValueError(f"{world} names no base model (a base model folder itself?): give --base")
    real_frames = real_frames or world_model_frames(world)
    if not real_frames:
        raise ValueError(f"{world} names no training data: give --real-frames N (the real frames of the "
                         "equal-data real-game agent)")
    arms = {"world": (world, ppo), "base-alone": (base, ppo), "real": (None, replace(ppo, timesteps=real_frames))}
    results: dict[str, dict[str, Any]] = {}
    for arm, (model, cfg) in arms.items():
        folder = Path(out) / arm
        want = rl_settings(model, starts, reward_model, cfg, num_envs, horizon, denoising_steps, train_levels, near_end)
        done = folder / "results.json"
        if done.exists():
            old = json.loads(done.read_text())
            judged = old["agent_in_real_game"]
            same = all(old.get(k) == v for k, v in want.items()) and judged["episodes"] >= eval_episodes and \
                judged["levels"] == [eval_levels[0], sum(eval_levels) - 1]
            if same:
                log(f"{arm}: reusing {done}")
                results[arm] = old
                continue
            log(f"{arm}: {done} has other settings; training again")
        log(f"{arm}: PPO in {model or 'the real game'} for {cfg.timesteps} timesteps -> {folder}")
        results[arm] = run_rl(str(folder), model, starts, reward_model, cfg, num_envs, horizon, denoising_steps,
                              train_levels, eval_episodes, eval_levels, log, near_end)
    summary = comparison_table(results, real_frames)
    atomic_write_text(Path(out) / "comparison.json", json.dumps({"real_frames": real_frames, "arms": results},
                                                                 indent=1))
    atomic_write_text(Path(out) / "comparison.md", summary)
    return {"real_frames": real_frames, "arms": results, "table": summary}


def comparison_table(results: dict[str, dict[str, Any]], real_frames: int) -> str:
    """The comparison's markdown: mean real-game return with 95% intervals, the difference from the
    random policy (interval; ``*`` = the interval excludes zero) and each agent's training cost."""
    def ci(r):
        return f"{r['mean_return']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"

    rand = results["world"]["random_policy_in_real_game"]
    lines = ["| agent (PPO, CnnPolicy) | trained on | real-game return [95%] | minus random [95%] | success "
             "| train CPU-hours |", "|---|---|---|---|---|---|"]
    for arm, r in results.items():
        a = r["agent_in_real_game"]
        d = difference(a, rand)
        rollout = r["ppo"]["n_steps"] * r["num_envs"]  # PPO learns in whole rollouts (results before timesteps_done)
        steps = r.get("timesteps_done", math.ceil(r["ppo"]["timesteps"] / rollout) * rollout)
        what = f"{steps:,} imagined steps ({r['trained_in']})" if arm != "real" else f"{steps:,} real frames"
        lines.append(f"| {ARMS[arm]} | {what} | {ci(a)} | {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, "
                     f"{d['ci95'][1]:+.2f}]{'*' if d['significant'] else ''} | {a['success_rate']:.3f} | "
                     f"{r['train_cpu_hours']:.3f} |")
    lines.append(f"| random policy | – | {ci(rand)} | – | {rand['success_rate']:.3f} | 0 |")
    levels = rand["levels"]
    lines += ["", f"{rand['episodes']} real Coinrun episodes per row on unseen levels {levels[0]}–{levels[1]}; the "
              f"world model learnt from {real_frames:,} real frames, the real-game agent got as many. Intervals: "
              "normal approximation; the difference's combines both rows' standard errors; * = excludes zero."]
    return "\n".join(lines) + "\n"
