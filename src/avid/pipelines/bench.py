"""``avid bench``: speed and memory of a run configuration on this machine, per precision.

Prints the CPU (model, PyTorch's vector capability, bf16 instructions, threads), then for each
precision this machine runs natively (fp32 always; bf16 where ``avid.precision`` finds it native,
or when asked for with ``--precision bf16``): a training step (forward, loss, backward, AdamW) and
one sampling step (the method's prediction, i.e. base + adapter forwards), as medians over
``repeats`` after ``warmup`` steps, videos per second, and the peak resident memory of the process.
The row "auto" would pick is marked.
"""

from __future__ import annotations

import json
import resource
import time

import torch

from avid import tiny
from avid.config import RunConfig
from avid.data import Batch
from avid.methods import build_method
from avid.nn import count_parameters
from avid.precision import cpu_bf16_speedup, cpu_info, describe_cpu, resolve_precision
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


def train_step(method, batch: Batch, prec, lr: float):
    """One optimiser step of ``method`` on ``batch`` (forward and loss under ``prec``, backward, AdamW
    at ``lr``), as a function to time: what `avid bench` reports and the quickstart plans from."""
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)

    def step() -> None:
        with prec.autocast():
            loss, _ = method.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def bench_precisions(requested: str | None) -> list[str]:
    """What to measure: the requested precision alone, or fp32 and (where native) bf16."""
    if requested and requested != "auto":
        return [resolve_precision(requested).name]
    return ["fp32"] + (["bf16"] if cpu_bf16_speedup() is not None else [])


def bench(cfg: RunConfig, precision: str = "fp32", warmup: int = 2, repeats: int = 5, frame_size: int = 64) -> dict:
    """One row: the configured method's train and prediction step at ``precision`` on the CPU."""
    torch.manual_seed(0)
    prec = resolve_precision(precision)
    cfg, warmup, repeats = tiny.run(cfg), tiny.count(warmup, tiny.BENCH_STEPS), tiny.count(repeats, tiny.BENCH_STEPS)
    meta = {"action_kind": "discrete", "num_actions": 15, "frame_size": frame_size}
    ctx = build_context(cfg, meta, prec.name)
    method = build_method(cfg.method.name, ctx, cfg.method.options)
    b, k, t = cfg.train.batch_size, cfg.data.cond_frames, cfg.data.frames - cfg.data.cond_frames
    batch = Batch(torch.rand(b, 3, k, frame_size, frame_size) * 2 - 1, torch.rand(b, 3, t, frame_size, frame_size) * 2 - 1,
                  torch.randint(0, 15, (b, t)))
    result = {"method": cfg.method.name, "config": cfg.name, "precision": prec.name, "batch_size": b, "frames": t,
              "frame_size": frame_size, "threads": torch.get_num_threads(),
              "trainable_parameters": count_parameters(method)}
    if method.trainable:
        result["train_step_s"] = _median_time(train_step(method, batch, prec, lr=1e-4), warmup, repeats)
        result["train_videos_per_s"] = b / result["train_step_s"]
    x = torch.randn_like(batch.x0)
    i = torch.full((b,), ctx.diffusion.num_steps // 2)

    def predict():
        with torch.no_grad(), prec.autocast():
            method.predict(x, i, batch.first, batch.actions)

    result["sample_step_s"] = _median_time(predict, warmup, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_bench(cfg: RunConfig, precision: str | None = None, repeats: int = 5) -> list[dict]:
    """Every row of ``avid bench``, each marked with whether "auto" picks it."""
    auto = resolve_precision("auto").name
    rows = [bench(cfg, p, repeats=repeats) for p in bench_precisions(precision)]
    for r in rows:
        r["auto_picks"] = r["precision"] == auto
    return rows


def format_report(rows: list[dict]) -> str:
    info = cpu_info()
    auto = resolve_precision("auto")
    lines = [f"CPU: {describe_cpu()}", f"auto precision: {auto.describe()}"]
    if cpu_bf16_speedup() is None:
        lines.append("bf16: not measured (emulated on this CPU; `--precision bf16` forces it, expect it to be "
                     "tens of times slower)")
    head = f"{'precision':<11}{'train step':>12}{'videos/s':>10}{'predict step':>14}{'peak memory':>13}"
    lines += ["", head]
    for r in rows:
        mark = "  <- auto" if r["auto_picks"] else ""
        train = f"{r['train_step_s']:.3f} s" if "train_step_s" in r else "-"
        vps = f"{r['train_videos_per_s']:.1f}" if "train_videos_per_s" in r else "-"
        lines.append(f"{r['precision']:<11}{train:>12}{vps:>10}{r['sample_step_s']:>12.3f} s"
                     f"{r['peak_rss_mb'] / 1024:>11.2f} GB{mark}")
    r0 = rows[0]
    lines.append(f"\n{r0['method']} ({r0['config']}): batch {r0['batch_size']} of {r0['frames']} predicted "
                 f"{r0['frame_size']}x{r0['frame_size']} frames, {r0['trainable_parameters'] / 1e6:.2f}M trainable "
                 f"parameters, {r0['threads']} threads; medians; peak memory is the process's, cumulative over rows")
    lines.append(json.dumps({"cpu": info, "rows": rows}))
    return "\n".join(lines)
