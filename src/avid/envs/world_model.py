"""The world model as an environment: ``WorldModelEnv`` (a ``gymnasium.Env``) and
``WorldModelVecEnv`` (a batched ``gymnasium.vector.VectorEnv``), over any trained method or the
base model alone.

An imagined episode starts from ``k`` real frames (``avid.envs.starts``). Each step generates the
next frame from the last ``k`` frames and the action (the conditioning window slides by one), or,
with ``chunk=True``, a whole window of ``T'`` frames from ``T'`` actions. Reward and termination
come from a learned model of them (``avid.envs.outcome``), or are 0 / never without one; episodes
are truncated after ``max_episode_steps`` frames. The vector env restarts finished slots in the
same step and keeps their last frame in ``info["final_obs"]`` (gymnasium's ``SAME_STEP``
autoreset, as DIAMOND's batched ``WorldModelEnv``).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from avid.config import SampleConfig
from avid.data import to_uint8, to_video
from avid.envs.starts import Starts, open_starts
from avid.methods import Method
from avid.options import check_options
from avid.rollout import sample_videos

# (context (N, k, H, W, 3) uint8, actions (N,)) -> (reward (N,) float32, terminated (N,) bool)
Outcome = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def open_model(model: str | Path | Method, precision: str = "auto", window: int | None = None) -> tuple[Method, int]:
    """A method and its window ``T'`` (predicted frames per call it was trained on) from a trained run
    folder, a base model folder (the base model alone), or a ``Method`` (then ``window`` defaults to 8)."""
    if isinstance(model, Method):
        return model, window or 8
    from avid.train import load_method

    method, mc = load_method(model, precision)
    return method, window or int(mc["frames"]) - int(mc["cond_frames"])


class Imagination:
    """``num`` imagined episodes stepping together: their last ``k`` frames and their step counts."""

    def __init__(self, method: Method, starts: Starts, num: int, window: int, chunk: bool,
                 sample: SampleConfig, outcome: Outcome | None, max_episode_steps: int) -> None:
        ctx = method.ctx
        if ctx.action_kind != "discrete":
            raise ValueError(f"the world-model env takes discrete-action models; {method.name!r} has "
                             f"{ctx.action_kind} actions")
        size = ctx.frame_size or starts.frame_size
        if starts.frame_size != size:
            raise ValueError(f"the start frames are {starts.frame_size}x{starts.frame_size} px but the model "
                             f"makes {size}x{size} px frames")
        if num < 1 or window < 1 or max_episode_steps < 1:
            raise ValueError(f"num_envs, window and max_episode_steps must be at least 1, got {num}, {window}, "
                             f"{max_episode_steps}")
        self.method, self.starts, self.sample, self.outcome = method, starts, sample, outcome
        self.num, self.k, self.size, self.num_actions = num, ctx.cond_frames, size, ctx.num_actions
        self.frames = window if chunk else 1  # generated per step
        self.max_steps = max_episode_steps
        self.context = np.zeros((num, self.k, size, size, 3), np.uint8)
        self.t = np.zeros(num, np.int64)

    def reset(self, slots: np.ndarray, rng: np.random.Generator) -> None:
        for i in np.flatnonzero(slots):
            self.context[i] = self.starts(rng)
            self.t[i] = 0

    def step(self, actions: np.ndarray, rng: np.random.Generator):
        """actions ``(N, frames)`` -> generated frames ``(N, frames, H, W, 3)`` uint8, the frame
        index where each episode ended (or the last), reward ``(N,)``, terminated, truncated."""
        actions = np.asarray(actions, np.int64).reshape(self.num, self.frames)
        if actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(f"actions must lie in 0..{self.num_actions - 1}, got {actions.min()}..{actions.max()}")
        cfg = replace(self.sample, seed=int(rng.integers(2 ** 31 - 1)))  # reset(seed=s) replays the same dream
        first = to_video(torch.as_tensor(self.context))
        made = to_uint8(sample_videos(self.method, first, torch.as_tensor(actions), cfg, progress=False).videos)
        made = made.numpy()
        seen = np.concatenate([self.context, made], axis=1)
        reward = np.zeros(self.num, np.float32)
        terminated = np.zeros(self.num, bool)
        last = np.full(self.num, self.frames - 1)
        for j in range(self.frames):
            if self.outcome is not None:
                r, d = self.outcome(seen[:, j:j + self.k], actions[:, j])
                live = ~terminated
                reward += np.where(live, r, 0).astype(np.float32)
                last = np.where(live & d, j, last)
                terminated |= d.astype(bool)
        self.context = seen[:, -self.k:]
        self.t += self.frames
        truncated = ~terminated & (self.t >= self.max_steps)
        return made, last, reward, terminated, truncated

    def observation_space(self) -> spaces.Box:
        return spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)

    def action_space(self) -> spaces.Space:
        if self.frames == 1:
            return spaces.Discrete(self.num_actions)
        return spaces.MultiDiscrete(np.full(self.frames, self.num_actions))


def _open(env, num_envs: int, model, starts, chunk, window, reward_model, max_episode_steps, sampler, steps,
          precision, device, render_mode, near_end) -> None:
    """Give ``env`` its imagination of ``num_envs`` episodes (``WorldModelEnv``'s arguments)."""
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    if isinstance(reward_model, (str, Path)):
        from avid.envs.outcome import load_outcome

        reward_model = load_outcome(reward_model, device)
    elif not (reward_model is None or callable(reward_model)):
        raise ValueError(f"reward_model must be a folder, a callable or None, got {reward_model!r}")
    method, window = open_model(model, precision, window)
    sample = SampleConfig(sampler=sampler, steps=steps, batch_size=num_envs, device=device, precision=precision)
    env.render_mode = render_mode
    env.imagination = Imagination(method, open_starts(starts, method.ctx.cond_frames, near_end), num_envs, window,
                                  chunk, sample, reward_model, max_episode_steps)


class WorldModelEnv(gym.Env):
    """One imagined episode at a time (``gymnasium.make("avid/WorldModel-v0", ...)``).

    model: a trained run folder (``runs/quickstart/avid``), a base model folder (the base model
        alone: actions are ignored), or a ``Method``.
    starts: real first frames: a dataset folder, ``procgen:GAME`` or ``procgen:GAME:START-STOP``.
    chunk: False (default): one action -> the next frame. True: ``T'`` actions (the model's window,
        a ``MultiDiscrete``) -> ``T'`` frames; the observation is the last (or the episode's end),
        ``info["frames"]`` all of them, the reward their sum.
    window: predicted frames per call with ``chunk`` (default: the model's training window).
    reward_model: folder of a reward/termination model (``assets/outcome-coinrun``, made by
        ``avid outcome train``), a callable (``Outcome``), or None (reward 0; episodes end only by
        truncation).
    max_episode_steps: frames after which an episode is truncated (Coinrun's own limit: 1000).
    sampler, steps: ``"ddim"`` with ``steps`` denoising steps (default 4), or ``"ddpm"`` (all).
    precision, device: of the model's forward passes (see ``avid sample``).
    render_mode: None or ``"rgb_array"`` (the current frame).
    near_end: with a dataset folder as ``starts``, half the episodes start within this many frames of
        where a real episode of it ended (where Coinrun's coin is); 0 (default): uniformly.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, model: str | Path | Method, starts: str | Starts, chunk: bool = False,
                 window: int | None = None, reward_model: str | Path | Outcome | None = None,
                 max_episode_steps: int = 1000, sampler: str = "ddim", steps: int | None = 4,
                 precision: str = "auto", device: str = "cpu", render_mode: str | None = None,
                 near_end: int = 0) -> None:
        _open(self, 1, model, starts, chunk, window, reward_model, max_episode_steps, sampler, steps, precision,
              device, render_mode, near_end)
        self.observation_space = self.imagination.observation_space()
        self.action_space = self.imagination.action_space()

    @property
    def method(self) -> Method:
        return self.imagination.method

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.imagination.reset(np.ones(1, bool), self.np_random)
        return self.imagination.context[0, -1].copy(), {"step": 0}

    def step(self, action):
        im = self.imagination
        made, last, reward, terminated, truncated = im.step(np.asarray(action)[None], self.np_random)
        info: dict[str, Any] = {"step": int(im.t[0])}
        if im.frames > 1:
            info["frames"] = made[0].copy()
        return made[0, last[0]].copy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self):
        return self.imagination.context[0, -1].copy() if self.render_mode == "rgb_array" else None


class WorldModelVecEnv(VectorEnv):
    """``num_envs`` imagined episodes generated in one batch per step (the same keyword arguments as
    ``WorldModelEnv``). Finished slots restart in the same step from new real first frames; the
    returned observation is then the new start and ``info["final_obs"][i]`` (with
    ``info["_final_obs"][i]`` True) the episode's last frame."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, model: str | Path | Method, starts: str | Starts, num_envs: int = 8, **options) -> None:
        check_options(WorldModelEnv, options, "the world-model env's options", skip=("self", "model", "starts"))
        args = inspect.signature(WorldModelEnv).bind(model, starts, **options)
        args.apply_defaults()
        _open(self, num_envs, **args.arguments)
        self.num_envs = num_envs
        self.single_observation_space = self.imagination.observation_space()
        self.single_action_space = self.imagination.action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, bool)), bool)
        self.imagination.reset(mask, self.np_random)
        return self.imagination.context[:, -1].copy(), {"step": self.imagination.t.copy()}

    def step(self, actions):
        im = self.imagination
        made, last, reward, terminated, truncated = im.step(actions, self.np_random)
        obs = made[np.arange(self.num_envs), last].copy()
        infos: dict[str, Any] = {"step": im.t.copy()}
        if im.frames > 1:
            infos["frames"] = made.copy()
        done = terminated | truncated
        for i in np.flatnonzero(done):
            infos = self._add_info(infos, {"final_obs": obs[i].copy(), "final_info": {"step": int(im.t[i])}}, i)
        if done.any():
            im.reset(done, self.np_random)
            obs[done] = im.context[done, -1]
            infos["step"] = im.t.copy()
        return obs, reward, terminated, truncated, infos

    def render(self):
        return tuple(self.imagination.context[:, -1].copy()) if self.render_mode == "rgb_array" else None
