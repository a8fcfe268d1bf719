"""``avid bench --blackbox``: what the black-box door costs per query.

The same denoising query (``batch`` videos of ``frames`` frames at the base model's size, the
first ``cond_frames`` given) answered three ways: by the provider in this process (the network
called directly: the floor), by the default worker process (``open_denoiser(folder)``), and by
``avid serve`` on 127.0.0.1 through the remote client (``open_denoiser("http://...")``). Every way
uses the same precision and threads. The ways take turns, one call each per round, so a machine
shared with other jobs slows them alike; each figure is the median over ``repeats`` rounds after
``warmup``, and the minimum (the least disturbed call) beside it.
"""

from __future__ import annotations

import platform
import time

import torch

from avid import tiny
from avid.blackbox.provider import open_provider
from avid.blackbox.remote import open_remote
from avid.blackbox.worker import open_worker
from avid.pipelines.serve import ServerProcess


def bench_blackbox(base: str = "assets/base-procgen", batch: int = 8, frames: int = 10, precision: str = "auto",
                   warmup: int = 2, repeats: int = 10) -> dict:
    threads = torch.get_num_threads()
    warmup, repeats = tiny.count(warmup, tiny.BENCH_STEPS), tiny.count(repeats, tiny.BENCH_STEPS)  # AVID_TINY=1
    provider = open_provider(base, precision=precision)
    s = provider.spec
    g = torch.Generator().manual_seed(0)
    x_i = torch.randn(batch, s.channels, frames - s.cond_frames, s.frame_size, s.frame_size, generator=g)
    first = torch.rand(batch, s.channels, s.cond_frames, s.frame_size, s.frame_size, generator=g) * 2 - 1
    i = torch.randint(0, s.diffusion.num_steps, (batch,), generator=g)
    result = {"base": str(base), "batch": batch, "frames": frames, "frame_size": s.frame_size, "precision": precision,
              "threads": threads, "cpu": f"{platform.processor() or platform.machine()} "
                                        f"({torch.backends.cpu.get_cpu_capability()})"}
    server = ServerProcess(base, 0, "--precision", precision, "--threads", str(threads))
    try:
        with open_worker(base, precision=precision, threads=threads) as worker, open_remote(server.url) as remote:
            ways = {"in_process": provider.denoise, "worker": worker, "remote": remote}
            times = {way: [] for way in ways}
            for r in range(warmup + repeats):
                for way, fn in ways.items():
                    t = time.perf_counter()
                    fn(x_i, i, first)
                    if r >= warmup:
                        times[way].append(time.perf_counter() - t)
            result["remote_bytes_per_call"] = (remote.stats.bytes_sent + remote.stats.bytes_received) // remote.stats.calls
    finally:
        server.kill()
    for way, ts in times.items():
        result[f"{way}_s"], result[f"{way}_min_s"] = sorted(ts)[len(ts) // 2], min(ts)
    for way in ("worker", "remote"):
        for stat in ("", "_min"):
            base, this = result[f"in_process{stat}_s"], result[f"{way}{stat}_s"]
            result[f"{way}_overhead{stat}_ms"] = 1000 * (this - base)
            result[f"{way}_overhead{stat}_pct"] = 100 * (this / base - 1)
    return result
