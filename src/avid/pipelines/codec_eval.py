"""``avid codec eval``: how much of a video a codec keeps, and what that costs a latent world model.

A latent base model (and every method adapting it) predicts in its codec's space, and its samples
are scored on decoded frames, so the codec bounds them: even a perfect latent prediction is
``decode(encode(x))``. For each codec this writes two rows on held-out trajectories,
``reconstruction`` (every predicted frame through encode and decode) and ``COPY_LAST_CODEC``
(the trivial baseline as a latent model would produce it), beside ``COPY_LAST`` itself, as every
evaluation table names them, with
PSNR, SSIM and LPIPS on the predicted frames and 95% bootstrap intervals over trajectories.

The codec is the project's own autoencoder (``avid codec train``), read through ``avid.whitebox``
as its trainer does; nothing here touches a base model's denoiser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avid.checkpoint import load_config, resolve
from avid.data import Batch
from avid.metrics import per_trajectory, psnr_per_frame, ssim_per_frame
from avid.metrics.bootstrap import bootstrap_ci
from avid.metrics.lpips import lpips_per_frame_many
from avid.metrics.perceptual import Perceptual
from avid.metrics.tables import Row
from avid.pipelines.evaluate import (COPY_LAST, COPY_LAST_CODEC, copy_last_frame, copy_last_through_codec,
                                     load_eval_batch, reconstruct, to01)
from avid.pipelines.report import write_table
from avid.whitebox import BASE_KIND, load_codec


def codec_folder(path: str | Path) -> Path:
    """A codec's folder: ``path`` itself, or the one a latent base model's config names (``codec``),
    as the black box's provider reads it."""
    folder = resolve(path)
    cfg = load_config(folder)
    return folder / cfg["codec"] if cfg.get("kind") == BASE_KIND and "codec" in cfg else folder


RECONSTRUCT_CHUNK = 8  # videos through the codec at once: every predicted frame of 64 at once is large


def codec_rows(batch: Batch, codecs: dict[str, object], lpips_net) -> list[Row]:
    """The table's rows: copy-last, then per codec its reconstruction and copy-last through it.
    ``lpips_net``: the LPIPS network, or the "n/a (...)" string to report in its place."""
    real = to01(batch.x0)
    fakes = {COPY_LAST: to01(copy_last_frame(batch))}
    for name, codec in codecs.items():
        fakes[f"{name}: reconstruction"] = to01(reconstruct(codec, batch.x0, chunk=RECONSTRUCT_CHUNK))
        fakes[f"{name}: {COPY_LAST_CODEC}"] = to01(copy_last_through_codec(batch, codec))
    n = real.shape[0]
    per = {name: {"psnr": per_trajectory(psnr_per_frame(real, f), n).double().numpy(),
                  "ssim": per_trajectory(ssim_per_frame(real, f), n).double().numpy()} for name, f in fakes.items()}
    if isinstance(lpips_net, str):
        for name in fakes:
            per[name]["lpips"] = lpips_net
    else:
        for name, d in zip(fakes, lpips_per_frame_many(real, list(fakes.values()), lpips_net)):
            per[name]["lpips"] = per_trajectory(d, n).double().numpy()
    rows = []
    for name, metrics in per.items():
        values: dict = {}
        for m, v in metrics.items():
            if isinstance(v, str):
                values[m] = v
            else:
                values[m] = float(v.mean())
                values[f"{m}_ci"] = bootstrap_ci(np.mean, v)
        rows.append(Row(name, values))
    return rows


def evaluate_codecs(paths: list[str | Path], data: str | Path, out: str | Path, frames: int = 16,
                    cond_frames: int = 1, limit: int | None = 64, weights: str | None = None) -> str:
    """Score each codec in ``paths`` (a codec folder or a latent base model's) on ``limit``
    trajectories of ``data``, windows of ``frames`` frames (the first ``cond_frames`` conditioning); writes
    ``codecs.md`` / ``codecs.csv`` to ``out`` and returns the Markdown."""
    if not paths:
        raise ValueError("no codec given: pass one or more codec folders (or latent base model folders)")
    if not 1 <= cond_frames < frames:
        raise ValueError(f"need 1 <= cond_frames < frames (copy-last copies the last conditioning frame), got "
                         f"cond_frames {cond_frames}, frames {frames}")
    codecs, sources = {}, []
    for p in paths:
        name = str(p)
        if name in codecs:
            raise ValueError(f"codec {name} given twice")
        folder = codec_folder(p)
        codecs[name], cfg = load_codec(folder)
        mse = cfg.get("held_out_mse")
        sources.append(f"- `{name}`: {folder} ({cfg.get('step', '?')} steps"
                       + (f", held-out MSE {mse:.5f} on {cfg.get('eval_data')}" if isinstance(mse, (int, float)) else "")
                       + ")")
    batch = load_eval_batch(data, frames, cond_frames, limit=limit)
    lp = Perceptual.load(weights).lpips
    rows = codec_rows(batch, codecs, lp)
    note = (f"{batch.x0.shape[0]} trajectories of `{data}`, windows of {frames} frames: {cond_frames} conditioning, "
            f"{batch.x0.shape[2]} predicted; PSNR, SSIM, LPIPS on the predicted frames, 95% bootstrap intervals over "
            f"trajectories. `reconstruction`: every predicted frame through encode and decode, the ceiling of a "
            f"latent model's samples; `{COPY_LAST_CODEC}`: the trivial baseline as a latent model makes it.\n\n"
            + "\n".join(sources))
    if isinstance(lp, str):
        note += f"\n\nLPIPS: {lp}"
    Path(out).mkdir(parents=True, exist_ok=True)
    return write_table(out, "codecs", rows, title="Codecs on held-out frames", note=note)
