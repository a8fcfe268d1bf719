"""Method runs: build data, the black box and the method from a ``RunConfig``, fit them with the
training harness (``avid.train.harness``: EMA, checkpoints, exact resume, logging), and export
``model.safetensors`` (EMA weights of the method's trainable parts) + ``config.yaml``; load a
trained method back (``load_method``).

A run folder holds ``run.yaml`` (resolved), ``config.yaml`` + ``model.safetensors`` (the model),
``checkpoints/last.ckpt`` (full state for resume) and ``logs/version_N/``. Running the same
command again resumes from ``last.ckpt``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from avid import tiny
from avid.blackbox import open_denoiser
from avid.checkpoint import CONFIG, WEIGHTS, load_config, load_weights, require_keys, resolve, save_model
from avid.config import RunConfig, run_config_from_dict
from avid.data import EpisodeStore, LatentWindows, WindowDataset, to_video
from avid.data.storage import atomic_write
from avid.diffusion import Diffusion, DiffusionConfig
from avid.locks import locked
from avid.memory import give_back
from avid.methods import Context, Method, build_method, check_method_options, method_class
from avid.methods.base import encodes_frames_apart, to_latent
from avid.nn import count_parameters, tune_networks
from avid.nn.autoencoder import AutoencoderConfig
from avid.options import build
from avid.precision import Precision
from avid.train.harness import fit_run, start, train_device
from avid.train.queries import QueryLog
from avid.train.run_folder import claim_run_folder
from avid.whitebox import BASE_KIND, CODEC_FOLDER, load_codec

METHOD_KIND = "avid-method"
log = logging.getLogger("avid")


def build_context(cfg: RunConfig, meta: dict[str, Any], precision: str = "auto") -> Context:
    """The method's world: the base model's diffusion when there is a base, else ``cfg.diffusion``.
    ``cfg.base`` is a folder or a server's URL; only a method that needs the base model's parameters
    (``cfg.method.name``) is told the folder. ``precision``: of the black-box base model's forward
    passes (``avid.precision``)."""
    base = None
    pixel_size = int(meta.get("frame_size", 64))
    channels, frame_size = 3, pixel_size
    if cfg.base:
        base = open_denoiser(cfg.base, precision=precision)
        spec = base.spec
        diffusion = Diffusion(spec.diffusion)
        if spec.cond_frames != cfg.data.cond_frames:
            raise ValueError(f"the base model takes {spec.cond_frames} first frames, the config "
                             f"data.cond_frames={cfg.data.cond_frames}")
        pixels = spec.pixel_size if spec.latent else spec.frame_size
        pixel_size = int(meta.get("frame_size", pixels or pixel_size))
        if pixels is not None and pixel_size != pixels:
            raise ValueError(f"data frames are {pixel_size}px, the base model expects {pixels}px")
        channels, frame_size = (spec.channels, spec.frame_size) if spec.latent else (3, spec.frame_size)
    else:
        diffusion = Diffusion(build(DiffusionConfig, cfg.diffusion, "config section 'diffusion'"))
        if cfg.codec:  # pretraining in a codec's latent space
            codec = build(AutoencoderConfig, load_config(cfg.codec).get("codec", {}), f"{cfg.codec} `codec`")
            if pixel_size % codec.factor:
                raise ValueError(f"{pixel_size}px frames do not divide into the codec's {codec.factor}x latents")
            channels, frame_size = codec.latent_channels, pixel_size // codec.factor
    if cfg.train.loss_weighting:  # a training choice, not a property of the black box
        diffusion = diffusion.with_weighting(cfg.train.loss_weighting)
    return Context(diffusion=diffusion, channels=channels, cond_frames=cfg.data.cond_frames,
                   action_kind=meta.get("action_kind", "discrete"), num_actions=int(meta.get("num_actions", 15)),
                   base=base, frame_size=frame_size,
                   base_path=str(cfg.base) if cfg.base and method_class(cfg.method.name).needs_parameters else None)


def export_config(cfg: RunConfig, method: Method, meta: dict[str, Any], step: int,
                  precision: Precision | None = None) -> dict[str, Any]:
    """What ``config.yaml`` beside exported weights records."""
    ctx = method.ctx
    common = {"diffusion": vars(ctx.diffusion.cfg).copy(), "channels": ctx.channels,
              "cond_frames": ctx.cond_frames, "frame_size": int(meta.get("frame_size", 64)),
              "frames": cfg.data.frames, "step": step,
              "precision_used": precision.describe() if precision else None}
    if run_kind(cfg) == BASE_KIND:
        latent = ({"codec": CODEC_FOLDER, "frame_size": ctx.frame_size, "pixel_size": common["frame_size"]}
                  if cfg.codec else {})
        output = {"residual_output": method.output.options()} if method.output else {}
        return {"kind": BASE_KIND, "unet": method.net.cfg.to_dict(), "residual": method.residual, **output, **common,
                **latent, "run": cfg.to_dict()}
    return {"kind": METHOD_KIND, "method": cfg.method.name, "options": method.options(),
            "needs_parameters": method.needs_parameters,
            "trainable_parameters": count_parameters(method),
            "base": cfg.base, "base_fingerprint": ctx.base.spec.fingerprint if ctx.base else None,
            "action_kind": ctx.action_kind, "num_actions": ctx.num_actions, **common, "run": cfg.to_dict()}


def run_kind(cfg: RunConfig) -> str:
    """The kind of model folder the run writes."""
    return BASE_KIND if method_class(cfg.method.name).pretrains_base else METHOD_KIND


def with_method_defaults(cfg: RunConfig) -> RunConfig:
    """``cfg`` with what it leaves to the method filled in: ``train.lr`` None is the method's ``default_lr``."""
    if cfg.train.lr is not None:
        return cfg
    return replace(cfg, train=replace(cfg.train, lr=method_class(cfg.method.name).default_lr))


@locked(lambda a: a["cfg"].out)
def train(cfg: RunConfig) -> Path:
    """Fit the configured method (``avid.train.harness``); returns the run folder. Resumes if the
    folder has a checkpoint. One writer per run folder (``avid.locks``)."""
    out = _train(cfg)
    # Lightning's trainer, its callbacks and the module point at each other, and the method reaches
    # them: the cycle holds the loader and its data (1.2 GB for the quickstart) until a full
    # collection, which allocation counts rarely trigger; collect it now that nothing uses it (and
    # hand the freed heap back), so the caller's next stage (sampling, metrics) does not carry it
    give_back()
    return out


def _train(cfg: RunConfig) -> Path:
    cfg = with_method_defaults(tiny.run(cfg))  # AVID_TINY=1: smoke-test size
    check_method_options(cfg.method.name, cfg.method.options)  # before anything is loaded
    out = Path(cfg.out)
    _check_same_run(out, cfg)
    precision = start(cfg.train)
    store = EpisodeStore(resolve(cfg.data.train))
    data = WindowDataset(store, cfg.data.frames, cfg.data.cond_frames, limit=cfg.data.train_limit)
    ctx = build_context(cfg, store.meta, precision.name)
    _check_same_base(out, ctx)
    method = build_method(cfg.method.name, ctx, cfg.method.options)
    t = cfg.train
    if t.compile or t.channels_last:  # channels-last only where it helps: CUDA
        cl = t.channels_last and train_device(t.accelerator) == "cuda"
        log.info("%d networks: compile %s, channels-last %s", tune_networks(method, t.compile, cl), t.compile, cl)

    def write(weights: dict[str, torch.Tensor], step: int) -> None:
        save_model(out, weights, export_config(cfg, method, store.meta, step, precision))
        if cfg.codec:  # a latent base model ships its codec
            for name in (WEIGHTS, CONFIG):
                data = (resolve(cfg.codec) / name).read_bytes()
                atomic_write(out / CODEC_FOLDER / name, lambda f, data=data: f.write(data))

    queries = (QueryLog(ctx.base, out / "blackbox.json", str(cfg.base)),) if ctx.base is not None else ()
    data, transform = latent_data(cfg, ctx, data)
    fit_run(method, data, cfg.train, out, cfg.to_dict(), write, cfg.method.name, precision, queries,
            transform=transform)
    return out


def latent_data(cfg: RunConfig, ctx: Context, data: WindowDataset) -> tuple[Dataset, Any]:
    """The training windows and the transform every batch goes through before the loss. A run in a
    codec's latent space (a method's, through its black-box base model's codec; a base model's
    pretraining, through the codec of ``cfg.codec``: the provider's side, white box) encodes every
    stored frame once when the codec encodes frames apart (measured: ``encodes_frames_apart``),
    else every batch as it comes. Pixel-space runs: the windows as they are, no transform."""
    if cfg.codec and run_kind(cfg) != BASE_KIND:
        raise ValueError("`codec` is for pretraining a latent base model; a method uses its base model's codec")
    codec = ctx.codec if ctx.codec is not None else load_codec(cfg.codec)[0] if cfg.codec else None
    if codec is None:
        return data, None
    if encodes_frames_apart(codec, to_video(data.frames[:4])[None]):
        t = time.perf_counter()
        latents = LatentWindows(data, codec.encode)
        log.info("encoded the %d training frames once through the codec (%.1f s)", len(data.frames),
                 time.perf_counter() - t)
        return latents, None
    log.info("the codec mixes frames: every training batch is encoded as it comes")
    return data, partial(to_latent, codec)


def _check_same_run(out: Path, cfg: RunConfig) -> None:
    """Only a run of the same kind, method, base and data layout may be resumed in ``out``;
    anything else there (a base model, a classifier, an export) is never overwritten."""
    same = ("base", "codec", "method", "data.frames", "data.cond_frames") + (() if cfg.base else ("diffusion",))
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
        ctx = build_context(cfg, {"frame_size": mc.get("pixel_size", mc["frame_size"])}, precision)
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

