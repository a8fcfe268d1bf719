"""``avid quickstart``: the whole path on a laptop CPU, from the shipped base model to a report.

1. generate a small action-labelled Coinrun set and held-out evaluation trajectories;
2. train an AVID adapter against the shipped base model through the black-box door;
3. sample the held-out trajectories with the base model alone and with AVID (same first frames,
   actions and noise);
4. write a report: PSNR/SSIM table (Markdown + CSV), GIF/MP4 of ground truth | base | AVID | mask,
   the mean mask per diffusion step (paper Fig. 4d) and the mask averaged over the diffusion.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avid.config import RunConfig, load_run_config
from avid.data import WindowDataset, collate
from avid.data.procgen import PRESETS, generate
from avid.data.storage import atomic_write_text
from avid.methods import build_method
from avid.metrics import frame_metrics
from avid.metrics.tables import Row
from avid.nn import count_parameters
from avid.report import mask_to_video, plot_mask_per_step, video_grid, write_table, write_video
from avid.rollout import sample_videos
from avid.train import build_context, load_method, train

log = logging.getLogger("avid")
CONFIG = "configs/coinrun/quickstart.yaml"


@dataclass
class QuickstartOptions:
    config: str = CONFIG
    base: str | None = None  # the black-box base model folder (default: the config's, the shipped one)
    minutes: float = 8.0  # adapter training wall time
    train_levels: int = 200  # Coinrun levels 0..train_levels-1 ...
    steps_per_level: int = 500  # ... each a stream of this many random-action steps
    eval_size: int = 256  # held-out trajectories (levels 10000-11000)
    data_dir: str = "data/quickstart"
    runs_dir: str = "runs/quickstart"
    report_dir: str = "reports/quickstart"
    threads: int | None = None


def prepare_data(opt: QuickstartOptions) -> tuple[Path, Path]:
    train_dir, eval_dir = Path(opt.data_dir) / "coinrun", Path(opt.data_dir) / f"coinrun-eval-{opt.eval_size}"
    spec = dataclasses.replace(PRESETS["coinrun100k"], num_levels=opt.train_levels,
                               steps_per_level=opt.steps_per_level)
    generate(spec, str(train_dir))
    generate(dataclasses.replace(PRESETS["coinrun-eval"], trajectories=opt.eval_size), str(eval_dir))
    return train_dir, eval_dir


def to01(video: torch.Tensor) -> torch.Tensor:
    return video.clamp(-1, 1).add(1).div(2)


def evaluate(cfg: RunConfig, run_dir: Path, eval_dir: Path, report: Path) -> dict[str, dict[str, float]]:
    ds = WindowDataset(eval_dir, cfg.data.frames, cfg.data.cond_frames, stride=cfg.data.frames)
    batch = collate([ds[j] for j in range(len(ds))])
    avid, _ = load_method(run_dir)
    base = build_method("base", build_context(cfg, ds.store.meta))
    results, rows, rolls = {}, [], {}
    for name, method in (("base", base), ("avid", avid)):
        t0 = time.time()
        roll = sample_videos(method, batch.first, batch.actions, cfg.sample)
        rolls[name] = roll
        results[name] = {**frame_metrics(to01(batch.x0), to01(roll.videos)), "sample_seconds": time.time() - t0}
        rows.append(Row(name, {k: v for k, v in results[name].items() if k in ("psnr", "ssim")},
                        count_parameters(method) or None))
    s = cfg.sample
    note = (f"{len(ds)} held-out Coinrun trajectories (levels 10000-11000, random actions), "
            f"{cfg.data.cond_frames} conditioning + {cfg.data.frames - cfg.data.cond_frames} predicted frames; "
            f"metrics over predicted frames only. Sampler: {s.sampler}"
            f"{f' ({s.steps} steps, eta={s.eta})' if s.sampler == 'ddim' else ''}, seed {s.seed}. "
            "Base = the shipped pretrained model alone (black box, no actions).")
    md = write_table(report, "metrics", rows, "Quickstart: base model vs AVID on held-out Coinrun", note)
    mask = rolls["avid"].mask
    cols = [batch.x0, rolls["base"].videos, rolls["avid"].videos, mask_to_video(mask)]
    grid = video_grid(cols, rows=6)
    write_video(report / "samples.gif", grid)
    write_video(report / "samples.mp4", grid)
    plot_mask_per_step(report / "mask_per_step.png", {"AVID (quickstart)": rolls["avid"].mask_per_step},
                       avid.diffusion.num_steps)
    write_video(report / "mask_avg_over_diffusion.gif", video_grid([batch.x0, mask_to_video(mask)], rows=6))
    atomic_write_text(report / "metrics.json", json.dumps(results, indent=1))
    print(md)
    return results


def quickstart(opt: QuickstartOptions) -> Path:
    t0 = time.time()
    if opt.threads:
        torch.set_num_threads(opt.threads)
    train_dir, eval_dir = prepare_data(opt)
    cfg = load_run_config(opt.config, [f"data.train={train_dir}", f"out={Path(opt.runs_dir) / 'avid'}",
                                       f"train.max_minutes={opt.minutes}"]
                          + ([f"base={opt.base}"] if opt.base else []))
    run_dir = train(cfg)
    report = Path(opt.report_dir)
    evaluate(cfg, run_dir, eval_dir, report)
    atomic_write_text(report / "README.md", _readme(opt, cfg, time.time() - t0))
    print(f"\nquickstart finished in {(time.time() - t0) / 60:.1f} min; report in {report.resolve()}")
    return report


def _readme(opt: QuickstartOptions, cfg: RunConfig, seconds: float) -> str:
    return (f"# avid quickstart report\n\nMade by `avid quickstart --minutes {opt.minutes} --eval-size {opt.eval_size}` "
            f"in {seconds / 60:.1f} min ({torch.get_num_threads()} CPU threads).\n\n"
            "- `metrics.md`, `metrics.csv`, `metrics.json`: PSNR / SSIM of base vs AVID\n"
            "- `samples.gif`, `samples.mp4`: columns ground truth | base | AVID | AVID mask (white: base model used)\n"
            "- `mask_per_step.png`: mean mask per diffusion step (paper Fig. 4d)\n"
            "- `mask_avg_over_diffusion.gif`: ground truth | mask averaged over the diffusion process (Figs. 5-6)\n\n"
            f"Adapter config: `{opt.config}`; run folder: `{cfg.out}`.\n")
