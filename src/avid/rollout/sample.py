"""Sampling videos from first frames and actions with any method, recording AVID's mask.

All methods sampled with the same ``seed`` see the same initial noise for the same inputs, so
comparisons between methods differ only by the method.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from avid import tiny
from avid.config import SampleConfig
from avid.data import to_uint8, to_video
from avid.diffusion import sample, sampler_timesteps
from avid.methods import Method
from avid.precision import resolve_precision


@dataclass
class Rollout:
    """videos: ``(N, C, T', H, W)`` in [-1, 1]; mask: ``(N, 1, T', H, W)`` averaged over the
    diffusion steps, or None; mask_per_step: ``(S, 2)`` rows of (diffusion step i, mean mask),
    in sampling order, or None (methods without a mask)."""

    videos: torch.Tensor
    mask: torch.Tensor | None = None
    mask_per_step: torch.Tensor | None = None


@torch.no_grad()
def sample_videos(method: Method, first: torch.Tensor, actions: torch.Tensor, cfg: SampleConfig | None = None,
                  frames: int | None = None, progress: bool = True) -> Rollout:
    """Generate ``frames`` frames (default: as many as there are actions) after ``first``.

    first: ``(N, C, k, H, W)`` in [-1, 1]; actions: ``(N, T')`` or ``(N, T', A)``. With a latent base
    model the first frames go through its codec's ``encode``, the samples through ``decode`` (the
    mask, at the latents' resolution, is repeated up to the frames').
    """
    cfg = tiny.sampling(cfg or SampleConfig())  # AVID_TINY=1: smoke-test size
    if first.ndim != 5:
        raise ValueError(f"expected first frames (N, C, k, H, W), got {tuple(first.shape)}")
    if actions.shape[0] != first.shape[0]:
        raise ValueError(f"{first.shape[0]} first-frame sets but {actions.shape[0]} action sequences")
    codec = method.ctx.codec
    if codec is not None:  # a latent base model: sample in its codec's latent space, decode the result
        first = codec.encode(first)
    n, c, k, h, w = first.shape
    ctx, size = method.ctx, method.ctx.frame_size
    if (c, k) != (ctx.channels, ctx.cond_frames) or (size is not None and (h, w) != (size, size)):
        raise ValueError(f"method {method.name!r} takes {ctx.cond_frames} first frames of {ctx.channels} channels"
                         f"{f', {size}x{size} px' if size else ''}; got {k} frames of {c} channels, {h}x{w} px")
    t = frames or actions.shape[1]
    method.eval().to(cfg.device)
    precision = resolve_precision(cfg.precision, cfg.device)
    videos, masks, step_sum, steps = [], [], None, None
    bs = cfg.batch_size
    ddim_steps = cfg.steps if cfg.sampler == "ddim" else None
    per_batch = len(sampler_timesteps(method.diffusion.num_steps, cfg.sampler, ddim_steps, cfg.start_step))
    batches = range(0, n, bs)
    # one bar in denoising steps over every batch: its rate and ETA move with every network call
    bar = tqdm(total=len(batches) * per_batch, unit="step", disable=not progress,
               desc=f"sampling {method.name} ({n} videos: {len(batches)} batch{'es' * (len(batches) > 1)} x "
                    f"{per_batch} {cfg.sampler} steps)")
    for b0 in batches:
        fb, ab = first[b0:b0 + bs].to(cfg.device), actions[b0:b0 + bs].to(cfg.device)
        rec: list[tuple[int, torch.Tensor]] = []

        def on_step(k: int, i: int, extras: dict) -> None:
            bar.update(1)
            if "mask" in extras:
                rec.append((i, extras["mask"].float().cpu()))

        def predict(x_i: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, dict]:
            with precision.autocast():  # the sampler's own arithmetic stays in fp32
                pred, extras = method.predict(x_i, i, fb, ab)
            return pred.float(), extras

        gen = torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + b0)
        # an SDEdit-style start noises "nothing moves" (the last conditioning frame, repeated)
        init = None if cfg.start_step is None else fb[:, :, -1:].expand(-1, -1, t, -1, -1)
        # x0 is clipped to the frames' [-1, 1] in pixel space only: a codec's latents are scaled to unit
        # variance (about +-4 on the robot arm's frames), and clipping them there collapsed every latent
        # model's sample to a washed-out still of its first frame, whatever the model predicted
        x = sample(method.diffusion, predict, (len(fb), c, t, h, w),
                   sampler=cfg.sampler, steps=ddim_steps, eta=cfg.eta, clip_x0=codec is None,
                   generator=gen, device=cfg.device, on_step=on_step, start=cfg.start_step, init=init)
        if codec is not None:
            x = codec.decode(x)
        videos.append(x.clamp(-1, 1).cpu())
        if rec:
            mask = torch.stack([m for _, m in rec]).mean(0)
            masks.append(F.interpolate(mask, size=x.shape[-3:], mode="nearest") if codec is not None else mask)
            means = torch.stack([m.mean() * len(fb) for _, m in rec])
            step_sum = means if step_sum is None else step_sum + means
            steps = torch.tensor([i for i, _ in rec], dtype=torch.float32)
    bar.close()
    mask = torch.cat(masks) if masks else None
    per_step = torch.stack([steps, step_sum / n], dim=1) if step_sum is not None else None
    return Rollout(torch.cat(videos), mask, per_step)


def quantise(video: torch.Tensor) -> torch.Tensor:
    """A video ``(..., C, T, H, W)`` in [-1, 1] as 8-bit frames give it back (what real frames are)."""
    return to_video(to_uint8(video))


@torch.no_grad()
def rollout_long(method: Method, first: torch.Tensor, actions: torch.Tensor, cfg: SampleConfig | None = None,
                 chunk: int = 8, real: torch.Tensor | None = None, reground_every: int | None = None,
                 progress: bool = False) -> torch.Tensor:
    """Autoregressive rollout beyond the training window: generate ``chunk`` frames per call (1:
    the conditioning window slides frame by frame) from the last ``k`` frames, quantised to 8 bits
    as real frames are; every call draws its own noise. With the real frames ``real`` ``(N, C, L, H, W)``
    (frame ``j`` follows action ``j``) and ``reground_every`` K, the conditioning frames are reset to
    the real ones after every K generated frames, so generation only ever bridges K steps.

    first: ``(N, C, k, H, W)`` in [-1, 1]; actions: ``(N, L)``. Returns ``(N, C, L, H, W)``."""
    cfg = cfg or SampleConfig()
    if chunk < 1 or (reground_every is not None and reground_every < 1):
        raise ValueError(f"chunk and reground_every must be at least 1 (reground_every None: never), got {chunk}, "
                         f"{reground_every}")
    if reground_every and (real is None or real.shape[2] < actions.shape[1]):
        raise ValueError(f"re-grounding every {reground_every} frames needs the real frames after each of the "
                         f"{actions.shape[1]} actions")
    k, length = first.shape[2], actions.shape[1]
    history, out, s = quantise(first), [], 0
    truth = torch.cat([history, quantise(real)], dim=2) if reground_every else None  # real frame j at k + j
    while s < length:
        n = min(chunk, length - s, reground_every - s % reground_every if reground_every else chunk)
        part = sample_videos(method, history[:, :, -k:], actions[:, s:s + n],
                             replace(cfg, seed=cfg.seed * 1_000_003 + s), progress=progress).videos
        out.append(quantise(part))
        s += n
        if reground_every and s % reground_every == 0:
            history = truth[:, :, s:s + k]  # the k real frames before the next action
        else:
            history = torch.cat([history, out[-1]], dim=2)[:, :, -k:]
    return torch.cat(out, dim=2)
