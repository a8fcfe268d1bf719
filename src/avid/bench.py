"""``avid bench``: speed and memory of a run configuration on this machine.

Measures, for the configured method and batch size: a training step (forward, loss, backward,
AdamW) and one sampling step (the method's prediction, i.e. base + adapter forwards), as medians
over ``repeats`` after ``warmup`` steps, and the peak resident memory of the process.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from contextlib import nullcontext

import torch

from avid import tiny
from avid.config import RunConfig
from avid.data import Batch
from avid.methods import build_method
from avid.nn import count_parameters
from avid.train import build_context


def _median_time(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def bench(cfg: RunConfig, warmup: int = 2, repeats: int = 5, frame_size: int = 64) -> dict:
    torch.manual_seed(0)
    cfg, warmup, repeats = tiny.run(cfg), tiny.count(warmup, tiny.BENCH_STEPS), tiny.count(repeats, tiny.BENCH_STEPS)
    meta = {"action_kind": "discrete", "num_actions": 15, "frame_size": frame_size}
    ctx = build_context(cfg, meta)
    method = build_method(cfg.method.name, ctx, cfg.method.options)
    b, k, t = cfg.train.batch_size, cfg.data.cond_frames, cfg.data.frames - cfg.data.cond_frames
    batch = Batch(torch.rand(b, 3, k, frame_size, frame_size) * 2 - 1, torch.rand(b, 3, t, frame_size, frame_size) * 2 - 1,
                  torch.randint(0, 15, (b, t)))
    bf16 = cfg.train.precision.startswith("bf16")
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    result = {"method": cfg.method.name, "config": cfg.name, "batch_size": b, "frames": t,
              "frame_size": frame_size, "precision": cfg.train.precision, "threads": torch.get_num_threads(),
              "trainable_parameters": count_parameters(method), "device": f"CPU ({platform.processor() or platform.machine()})"}
    if method.trainable:
        opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)

        def step():
            with amp():
                loss, _ = method.loss(batch)
            loss.backward()
            opt.step()
            opt.zero_grad()

        result["train_step_s"] = _median_time(step, warmup, repeats)
        result["train_videos_per_s"] = b / result["train_step_s"]
    x = torch.randn_like(batch.x0)
    i = torch.full((b,), ctx.diffusion.num_steps // 2)

    def predict():
        with torch.no_grad(), amp():
            method.predict(x, i, batch.first, batch.actions)

    result["sample_step_s"] = _median_time(predict, warmup, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def format_result(r: dict) -> str:
    lines = [f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}" for k, v in r.items()]
    return "\n".join(lines) + "\n" + json.dumps(r)
