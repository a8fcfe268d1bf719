"""Training runs: build data, the black box and the method from a ``RunConfig``, fit with
Lightning (EMA, checkpoints, resume, logging), and export ``model.safetensors`` + ``config.yaml``.

A run folder holds ``config.yaml`` (resolved), ``checkpoints/last.ckpt`` (full state for resume),
``model.safetensors`` (EMA weights of the method's trainable parts), ``logs/version_N/`` (CSV +
TensorBoard, one folder per resumed segment).
Running the same command again resumes from ``last.ckpt`` at the saved step and optimiser state.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from avid import tiny
from avid.blackbox import open_denoiser
from avid.checkpoint import load_config, load_weights, require_keys, resolve, save_model
from avid.config import RunConfig, run_config_from_dict
from avid.data import EpisodeStore, WindowDataset, collate
from avid.data.storage import atomic_write_text
from avid.diffusion import Diffusion, DiffusionConfig
from avid.locks import locked
from avid.methods import Context, Method, build_method, needs_parameters
from avid.nn import count_parameters, tune_networks
from avid.options import build
from avid.precision import Precision, resolve_precision
from avid.train.callbacks import SaveEvery, SaveLast, WarmupEMA, fit, run_callbacks
from avid.train.data_order import ResumeState, training_loader
from avid.train.module import MethodModule
from avid.train.queries import QueryLog
from avid.train.run_folder import AtomicCheckpointIO, claim_run_folder
from avid.whitebox import BASE_KIND

METHOD_KIND = "avid-method"
log = logging.getLogger("avid")


def build_context(cfg: RunConfig, meta: dict[str, Any], precision: str = "auto") -> Context:
    """The method's world: the base model's diffusion when there is a base, else ``cfg.diffusion``.
    ``cfg.base`` is a folder or a server's URL; only a method that needs the base model's parameters
    (``cfg.method.name``) is told the folder. ``precision``: of the black-box base model's forward
    passes (``avid.precision``)."""
    base = None
    if cfg.base:
        base = open_denoiser(cfg.base, precision=precision)
        diffusion = Diffusion(base.spec.diffusion)
        if base.spec.cond_frames != cfg.data.cond_frames:
            raise ValueError(f"the base model takes {base.spec.cond_frames} first frames, the config "
                             f"data.cond_frames={cfg.data.cond_frames}")
        frame_size = meta.get("frame_size", base.spec.frame_size)
        if frame_size != base.spec.frame_size:
            raise ValueError(f"data frames are {frame_size}px, the base model expects {base.spec.frame_size}px")
    else:
        diffusion = Diffusion(build(DiffusionConfig, cfg.diffusion, "config section 'diffusion'"))
    if cfg.train.loss_weighting:  # a training choice, not a property of the black box
        diffusion = diffusion.with_weighting(cfg.train.loss_weighting)
    return Context(diffusion=diffusion, channels=3, cond_frames=cfg.data.cond_frames,
                   action_kind=meta.get("action_kind", "discrete"), num_actions=int(meta.get("num_actions", 15)),
                   base=base, base_path=str(cfg.base) if cfg.base and needs_parameters(cfg.method.name) else None,
                   frame_size=int(meta.get("frame_size", base.spec.frame_size if base else 64)))


def train_device(accelerator: str) -> str:
    """The device type Lightning trains on for ``train.accelerator``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def export_config(cfg: RunConfig, method: Method, meta: dict[str, Any], step: int,
                  precision: Precision | None = None) -> dict[str, Any]:
    """What ``config.yaml`` beside exported weights records."""
    ctx = method.ctx
    common = {"diffusion": vars(ctx.diffusion.cfg).copy(), "channels": ctx.channels,
              "cond_frames": ctx.cond_frames, "frame_size": int(meta.get("frame_size", 64)),
              "frames": cfg.data.frames, "step": step,
              "precision_used": precision.describe() if precision else None}
    if run_kind(cfg) == BASE_KIND:
        return {"kind": BASE_KIND, "unet": method.net.cfg.to_dict(), "residual": method.residual, **common,
                "run": cfg.to_dict()}
    return {"kind": METHOD_KIND, "method": cfg.method.name, "options": method.options(),
            "needs_parameters": method.needs_parameters,
            "trainable_parameters": count_parameters(method),
            "base": cfg.base, "base_fingerprint": ctx.base.spec.fingerprint if ctx.base else None,
            "action_kind": ctx.action_kind, "num_actions": ctx.num_actions, **common, "run": cfg.to_dict()}


class Export(Callback):
    """Writes ``model.safetensors`` + ``config.yaml`` from the (EMA) weights at every checkpoint."""

    def __init__(self, cfg: RunConfig, meta: dict[str, Any], precision: Precision) -> None:
        self.cfg, self.meta, self.precision = cfg, meta, precision

    def export(self, trainer: L.Trainer, pl_module: MethodModule, state: dict[str, torch.Tensor]) -> None:
        if trainer.global_rank != 0:
            return
        method = pl_module.method
        own = set(method.state_dict())
        weights = {k[len("method."):]: v for k, v in state.items() if k.startswith("method.") and k[7:] in own}
        save_model(self.cfg.out, weights, export_config(self.cfg, method, self.meta, trainer.global_step,
                                                        self.precision))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.export(trainer, pl_module, checkpoint["state_dict"])

    def on_train_end(self, trainer, pl_module) -> None:  # EMA weights are copied in by now
        self.export(trainer, pl_module, pl_module.state_dict())


def run_kind(cfg: RunConfig) -> str:
    """The kind of model folder the run writes."""
    return BASE_KIND if cfg.method.name == "pretrain" else METHOD_KIND


@locked(lambda a: a["cfg"].out)
def train(cfg: RunConfig) -> Path:
    """Fit the configured method; returns the run folder. Resumes if the folder has a checkpoint.
    One writer per run folder (``avid.locks``)."""
    cfg = tiny.run(cfg)  # AVID_TINY=1: smoke-test size
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(cfg.out)
    _check_same_run(out, cfg)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    store = EpisodeStore(resolve(cfg.data.train))
    data = WindowDataset(store, cfg.data.frames, cfg.data.cond_frames, limit=cfg.data.train_limit)
    precision = resolve_precision(cfg.train.precision, train_device(cfg.train.accelerator))
    log.info("precision: %s", precision.describe())
    ctx = build_context(cfg, store.meta, precision.name)
    _check_same_base(out, ctx)
    method = build_method(cfg.method.name, ctx, cfg.method.options)
    t = cfg.train
    if t.compile or t.channels_last:  # channels-last only where it helps: CUDA
        cl = t.channels_last and train_device(t.accelerator) == "cuda"
        log.info("%d networks: compile %s, channels-last %s", tune_networks(method, t.compile, cl), t.compile, cl)
    module = MethodModule(method, lr=t.lr, weight_decay=t.weight_decay, lr_schedule=t.lr_schedule,
                          warmup_steps=t.warmup_steps, max_steps=t.max_steps, min_lr_ratio=t.min_lr_ratio)
    if rank_zero_only.rank == 0:  # further ranks of a multi-device run write nothing
        atomic_write_text(out / "run.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log.info("method %s: %.2fM trainable parameters, %d training windows", cfg.method.name,
             count_parameters(method) / 1e6, len(data))
    loader = training_loader(data, cfg.train.batch_size, cfg.train.num_workers, cfg.train.seed, collate)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    segment = f"version_{len(list((out / 'logs').glob('version_*')))}"
    save_last = SaveLast(last)
    callbacks = [
        save_last,  # before EMA: its on_train_end must see the raw weights
        WarmupEMA(cfg.train.ema_decay),
        Export(cfg, store.meta, precision),
        SaveEvery(save_last, cfg.train.ckpt_every),
        *run_callbacks(last, cfg.train.progress, f"train {cfg.method.name}", cfg.train.max_minutes),
        ResumeState(loader),  # the data order and random state: a resumed run continues exactly
    ] + ([QueryLog(ctx.base, out / "blackbox.json", str(cfg.base))] if ctx.base is not None else [])
    trainer = L.Trainer(
        max_steps=cfg.train.max_steps, max_epochs=-1,
        max_time=timedelta(minutes=cfg.train.max_minutes) if cfg.train.max_minutes else None,
        accelerator=cfg.train.accelerator, devices=cfg.train.devices,
        # methods hold parameters a step may leave unused (the null action outside classifier-free dropout)
        strategy={"ddp": "ddp_find_unused_parameters_true"}.get(cfg.train.strategy, cfg.train.strategy),
        precision=precision.lightning, gradient_clip_val=cfg.train.grad_clip or None,
        callbacks=callbacks,  # logs/version_N per (resumed) segment: a resume never overwrites history
        logger=[CSVLogger(out, name="logs", version=segment), TensorBoardLogger(out, name="logs", version=segment)],
        log_every_n_steps=cfg.train.log_every, enable_progress_bar=cfg.train.progress,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=out,
        plugins=[AtomicCheckpointIO()],
    )
    t0 = time.time()
    fit(trainer, module, loader, last)  # Ctrl-C / SIGTERM: saved, then raised again
    log.info("trained to step %d in %.0f s; model in %s", trainer.global_step, time.time() - t0, out)
    return out


def _check_same_run(out: Path, cfg: RunConfig) -> None:
    """Only a run of the same kind, method, base and data layout may be resumed in ``out``;
    anything else there (a base model, a classifier, an export) is never overwritten."""
    same = ("base", "method", "data.frames", "data.cond_frames") + (() if cfg.base else ("diffusion",))
    claim_run_folder(out, run_kind(cfg), cfg.to_dict(), same, normalise=lambda d: run_config_from_dict(
        {k: v for k, v in d.items() if k != "precision_used"}).to_dict())


def _check_same_base(out: Path, ctx: Context) -> None:
    """Resuming against another model than the run's (e.g. a server now serving other weights) is an error."""
    prev = out / "config.yaml"
    if ctx.base is None or not prev.exists():
        return
    recorded = load_config(out).get("base_fingerprint")
    if recorded and recorded != ctx.base.spec.fingerprint:
        raise ValueError(f"{out} was trained against base model {recorded[:12]}, but the base now is "
                         f"{ctx.base.spec.fingerprint[:12]}; choose another `out` folder")


def load_method(folder: str | Path, precision: str = "auto") -> tuple[Method, dict[str, Any]]:
    """A trained method from its exported folder, with its black-box base model re-opened (a base
    model folder gives the "base" method: the pretrained model alone)."""
    folder = resolve(folder)
    mc = load_config(folder)
    if mc.get("kind") == BASE_KIND:
        require_keys(mc, ("cond_frames", "frame_size"), folder)  # a base model folder: the "base" method (the model alone)
        cfg = RunConfig(base=str(folder))
        cfg.data.cond_frames = mc["cond_frames"]
        ctx = build_context(cfg, {"frame_size": mc["frame_size"]}, precision)
        return build_method("base", ctx), {**mc, "frames": mc.get("frames", 10), "action_kind": "discrete"}
    if mc.get("kind") != METHOD_KIND:
        raise ValueError(f"{folder} is not a trained method (config kind {mc.get('kind')!r})")
    require_keys(mc, ("run", "method", "options", "action_kind", "num_actions", "frame_size", "base_fingerprint"),
                 folder)
    cfg = run_config_from_dict(mc["run"])
    meta = {"action_kind": mc["action_kind"], "num_actions": mc["num_actions"], "frame_size": mc["frame_size"]}
    ctx = build_context(cfg, meta, precision)
    if ctx.base is not None and ctx.base.spec.fingerprint != mc["base_fingerprint"]:
        raise ValueError(f"{folder} was trained against another base model than {cfg.base} "
                         "(weights fingerprint differs)")
    method = build_method(mc["method"], ctx, mc["options"])
    if (folder / "model.safetensors").exists() or method.trainable:
        load_weights(folder, method)
    method.eval()
    return method, mc

