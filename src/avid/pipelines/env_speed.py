"""``avid env-speed``: world-model env steps per second, batched, against the number of denoising
steps (each step of the env is one sampling of the model, so its cost grows with them)."""

from __future__ import annotations

import time

import numpy as np

from avid.envs import WorldModelVecEnv


def env_speed(model, starts: str, num_envs: list[int], steps: list[int], repeats: int = 5, chunk: bool = False,
              precision: str = "auto") -> list[dict]:
    """Rows of {num_envs, steps, env_steps_per_s, seconds_per_step}: the median of ``repeats`` timed steps
    after one warm-up step, random actions; frames per second = env steps/s x frames per step."""
    rows = []
    for s in steps:
        for n in num_envs:
            envs = WorldModelVecEnv(model, starts, num_envs=n, chunk=chunk, steps=s, precision=precision)
            envs.reset(seed=0)
            envs.action_space.seed(0)
            envs.step(envs.action_space.sample())
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                envs.step(envs.action_space.sample())
                times.append(time.perf_counter() - t0)
            sec = float(np.median(times))
            frames = envs.imagination.frames
            rows.append({"num_envs": n, "steps": s, "frames_per_step": frames, "seconds_per_step": round(sec, 4),
                         "env_steps_per_s": round(n / sec, 2), "frames_per_s": round(n * frames / sec, 2)})
    return rows
