"""``avid bench metrics``: how long the evaluation's metrics take on this machine.

Scores one generated set against held-out trajectories with every metric of the report (PSNR/SSIM,
the Action Error Ratio with its bootstrap interval, LPIPS, FID when its file is there, FVD) and
times each. The "generated" videos are the copy baseline (the last conditioning frame repeated),
so no model is needed and the values are a reference too. Sampling time is not included. Wall and
CPU (process) seconds are both given: on a shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import platform
import time

import torch

from avid.pipelines.evaluate import action_error_ratio, load_eval_batch, to01
from avid.metrics import frame_metrics
from avid.metrics.perceptual import PERCEPTUAL_METRICS, Perceptual
from avid.metrics.action_classifier import SHIPPED_CLASSIFIER
from avid.rollout import Rollout


def bench_metrics(data: str, limit: int | None = None, frames: int = 10, cond_frames: int = 2,
                  classifier: str = SHIPPED_CLASSIFIER, threads: int | None = None) -> dict:
    """Seconds per metric and the values, for ``limit`` trajectories of ``data``."""
    if threads:
        torch.set_num_threads(threads)
    batch = load_eval_batch(data, frames, cond_frames, limit=limit)
    rolls = {"copy": Rollout(batch.first[:, :, -1:].expand_as(batch.x0).contiguous(), None, None)}
    seconds, cpu_seconds, values = {}, {}, {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        seconds[name], cpu_seconds[name] = time.perf_counter() - t, time.process_time() - c
        return out

    values.update(timed("psnr+ssim", lambda: frame_metrics(to01(batch.x0), to01(rolls["copy"].videos))))
    values.update(timed("aer", lambda: action_error_ratio(classifier)(batch, rolls)["copy"]))
    nets = Perceptual.load()
    conventions = {}
    for metric in PERCEPTUAL_METRICS:  # one network at a time, the others marked absent
        only = Perceptual(*(net if m == metric else "n/a (not timed)" for m, net in zip(PERCEPTUAL_METRICS, (
            nets.lpips, nets.inception, nets.i3d))))
        res = timed(metric, lambda: only.score(to01(batch.x0), {"copy": to01(rolls["copy"].videos)},
                                               to01(batch.first))["copy"])
        values[metric] = res[metric]
        conventions[metric] = res["conventions"][metric]
    values["conventions"] = {**values.get("conventions", {}), **conventions}
    return {"trajectories": len(batch), "frames": frames, "threads": torch.get_num_threads(),
            "cpu": f"{platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}",
            "seconds": seconds, "total_seconds": sum(seconds.values()), "cpu_seconds": cpu_seconds,
            "total_cpu_seconds": sum(cpu_seconds.values()), "values": values}
