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
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from avid.config import RunConfig, load_run_config
from avid.data import EpisodeStore
from avid.data.procgen import PRESETS, generate
from avid.data.storage import atomic_write_text
from avid.evaluate import action_error_ratio, evaluate, load_eval_batch, perceptual
from avid.methods import build_method
from avid.metrics.action_classifier import SHIPPED_CLASSIFIER
from avid.report import report_files_markdown
from avid.train import build_context, load_method, train

log = logging.getLogger("avid")
CONFIG = "configs/coinrun/quickstart.yaml"


@dataclass
class QuickstartOptions:
    config: str = CONFIG
    base: str | None = None  # the black-box base model folder (default: the config's, the shipped one)
    steps: int | None = None  # adapter optimiser steps (None: the config's, 500)
    minutes: float = 8.0  # ... and at most this much training wall time
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


def run_evaluation(cfg: RunConfig, run_dir: Path, eval_dir: Path, report: Path) -> dict:
    batch = load_eval_batch(eval_dir, cfg.data.frames, cfg.data.cond_frames)
    avid, _ = load_method(run_dir)
    base = build_method("base", build_context(cfg, EpisodeStore(eval_dir).meta))
    s = cfg.sample
    note = (f"{len(batch)} held-out Coinrun trajectories (levels 10000-11000, random actions), "
            f"{cfg.data.cond_frames} conditioning + {cfg.data.frames - cfg.data.cond_frames} predicted frames; "
            f"metrics over predicted frames only. Sampler: {s.sampler}"
            f"{f' ({s.steps} steps, eta={s.eta})' if s.sampler == 'ddim' else ''}, seed {s.seed}. "
            "Base = the shipped pretrained model alone (black box, no actions).")
    res = evaluate({"base": base, "avid": avid}, batch, s, report, extra_metrics=[action_error_ratio(SHIPPED_CLASSIFIER, s.device), perceptual()],
                   title="Quickstart: base model vs AVID on held-out Coinrun", note=note)
    print((report / "metrics.md").read_text())
    return res.metrics


def quickstart(opt: QuickstartOptions) -> Path:
    t0 = time.time()
    if opt.threads:
        torch.set_num_threads(opt.threads)
    train_dir, eval_dir = prepare_data(opt)
    cfg = load_run_config(opt.config, [f"data.train={train_dir}", f"out={Path(opt.runs_dir) / 'avid'}",
                                       f"train.max_minutes={opt.minutes}"]
                          + ([f"train.max_steps={opt.steps}"] if opt.steps else [])
                          + ([f"base={opt.base}"] if opt.base else []))
    run_dir = train(cfg)
    report = Path(opt.report_dir)
    run_evaluation(cfg, run_dir, eval_dir, report)
    atomic_write_text(report / "README.md", _readme(opt, cfg, time.time() - t0))
    print(f"\nquickstart finished in {(time.time() - t0) / 60:.1f} min; report in {report.resolve()}")
    return report


def _readme(opt: QuickstartOptions, cfg: RunConfig, seconds: float) -> str:
    return (f"# avid quickstart report\n\nMade by `avid quickstart --steps {cfg.train.max_steps} --minutes {opt.minutes} --eval-size {opt.eval_size}` "
            f"in {seconds / 60:.1f} min ({torch.get_num_threads()} CPU threads).\n\n"
            "Methods: `base` (the base model alone, a black box) and `avid` (the adapter trained here). Files:\n\n"
            f"- `README.md`: this file\n{report_files_markdown()}\n\n"
            f"Adapter config: `{opt.config}`; run folder: `{cfg.out}`.\n")
