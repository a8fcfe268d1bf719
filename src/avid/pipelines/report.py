"""Report files: tables, side-by-side GIF/MP4 grids and plots. Pure output, no metrics maths."""

from __future__ import annotations

import io
import math
from pathlib import Path

import av
import matplotlib
import matplotlib.ticker
import numpy as np
import torch
from PIL import Image

from avid.data.storage import atomic_write, atomic_write_text
from avid.data.windows import to_uint8
from avid.metrics.tables import Row, markdown, to_csv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# What an evaluation report folder holds (``avid.pipelines.evaluate.evaluate`` writes them); report READMEs list these.
REPORT_FILES: dict[str, str] = {
    "metrics.md, metrics.csv, metrics.json": "the metrics of every method (Markdown, CSV, and every number as JSON); "
                                             "`n/a` with the reason when a metric's network or classifier is missing",
    "samples.gif, samples.mp4": "columns: ground truth | each method, in the table's order",
    "videos/<method>.gif": "ground truth | the method | its mask, for methods with one (white: the base model used)",
    "masks/<method>.gif": "ground truth | the mask averaged over the diffusion process (paper Figs. 5-6), for "
                          "methods with a mask",
    "mask_per_step.png": "the mean mask at every diffusion step, sampling left to right (paper Fig. 4d)",
    "score_vs_params.png": "normalised score vs trainable parameters, one point per method, the base model "
                           "alone at 0 (paper Fig. 4a-b); written when two or more methods are compared",
    "samples/<method>.npz": "the sampled videos, reused when the evaluation is rerun",
}


def report_files_markdown() -> str:
    """``REPORT_FILES`` as a Markdown list."""
    return "\n".join(f"- {', '.join(f'`{n}`' for n in names.split(', '))}: {what}" for names, what in REPORT_FILES.items())


def report_file_names() -> list[str]:
    """Every file pattern of ``REPORT_FILES`` (``<method>`` standing for a method's name)."""
    return [n for names in REPORT_FILES for n in names.split(", ")]


def mask_to_video(mask: torch.Tensor) -> torch.Tensor:
    """``(N, 1, T, H, W)`` mask in [0, 1] -> grey video in [-1, 1] ``(N, 3, T, H, W)`` (white = 1)."""
    return (mask.float() * 2 - 1).expand(-1, 3, -1, -1, -1)


def video_grid(columns: list[torch.Tensor], rows: int = 4, pad: int = 2) -> np.ndarray:
    """Side-by-side videos: ``columns`` of ``(N, 3, T, H, W)`` in [-1, 1] -> uint8 ``(T, H', W', 3)``
    with the first ``rows`` samples stacked vertically."""
    t = min(c.shape[2] for c in columns)
    tiles = []
    for r in range(min(rows, columns[0].shape[0])):
        row = [to_uint8(c[r, :, :t]).numpy() for c in columns]
        row = [np.pad(v, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=255) for v in row]
        tiles.append(np.concatenate(row, axis=2))
    return np.concatenate(tiles, axis=1)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 4) -> Path:
    """GIF (Pillow) or MP4 (PyAV, libx264) by suffix, written atomically."""
    path = Path(path)
    if path.suffix == ".gif":  # a palette per frame by fast octree: 100x faster than Pillow's default median cut
        images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
        buf = io.BytesIO()
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        data = buf.getvalue()
    elif path.suffix == ".mp4":  # PyAV directly: imageio's plugin runs a full gc.collect() per file
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # even sizes for yuv420p
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            container.mux(stream.encode())
        data = buf.getvalue()
    else:
        raise ValueError(f"unsupported video format {path.suffix!r}; use .gif or .mp4")
    atomic_write(path, lambda f: f.write(data))
    return path


def write_table(folder: str | Path, name: str, rows: list[Row], title: str = "", note: str = "") -> str:
    md = markdown(rows, title) + (f"\n{note}\n" if note else "")
    atomic_write_text(Path(folder) / f"{name}.md", md)
    atomic_write_text(Path(folder) / f"{name}.csv", to_csv(rows))
    return md


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mask_per_step_figure(curves: dict[str, torch.Tensor], num_steps: int):
    """Mean mask value at every diffusion step (paper Fig. 4d). ``curves``: label -> ``(S, 2)`` rows
    of (diffusion step i, mean mask). The axis runs from i = num_steps - 1 (pure noise, where
    sampling starts) on the left to i = 0 (the clean video) on the right: sampling reads left to right."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, c in curves.items():
        ax.plot(c[:, 0].numpy(), c[:, 1].numpy(), marker="." if len(c) < 60 else None, label=label)
    ax.set_xlim(num_steps - 1, 0)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"diffusion step i  (sampling runs left to right: {num_steps - 1} = pure noise, 0 = clean video)",
                  fontsize=8)
    ax.set_ylabel("mean mask m")
    ax.set_title("AVID's mask per diffusion step (m = 1: the base model's prediction, 0: the adapter's)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(title="run", fontsize=8)
    fig.tight_layout()
    return fig


def plot_mask_per_step(path: str | Path, curves: dict[str, torch.Tensor], num_steps: int) -> Path:
    return _save(mask_per_step_figure(curves, num_steps), path)


MARKERS = "osD^v<>pPX*h"


def score_vs_params_figure(points: dict[str, tuple[int, float]], metrics: list[str]):
    """Normalised score against trainable parameters (paper Fig. 4a-b), one labelled point per
    method. ``points``: label -> (trainable parameters, score); the base model alone has none and
    sits at 0 on a log scale that turns linear below the smallest method."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for k, (label, (n, score)) in enumerate(points.items()):
        size = f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"
        ax.scatter([n], [score], marker=MARKERS[k % len(MARKERS)], s=40, zorder=3,
                   label=f"{label} ({size} trainable): {score:.2f}")
    smallest = min((n for n, _ in points.values() if n > 0), default=1)
    ax.set_xscale("symlog", linthresh=10 ** (math.floor(math.log10(smallest)) - 1))
    ax.margins(x=0.08)
    ax.set_xlabel("trainable parameters (log scale; 0 = the base model alone)", fontsize=8)
    ax.set_ylabel("normalised score (1 = best)", fontsize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(f"Normalised score (mean of {', '.join(m.upper() for m in metrics)}) vs trainable parameters",
                 fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_score_vs_params(path: str | Path, points: dict[str, tuple[int, float]], metrics: list[str]) -> Path:
    return _save(score_vs_params_figure(points, metrics), path)


def plot_scaling(path: str | Path, points: list[dict], lines: dict[str, dict], metrics: tuple[tuple[str, str], ...],
                 axes: tuple[tuple[str, str], ...], title: str = "") -> Path:
    """Metrics against compute: one panel per (x axis, metric), ``points`` (dicts with every key of
    ``axes`` and ``metrics``, optionally ``<metric>_ci95`` half-widths drawn as error bars) as a curve,
    each of ``lines`` (label -> dict of metrics) as a horizontal line where it has that metric."""
    fig, grid = plt.subplots(len(axes), len(metrics), figsize=(4 * len(metrics), 3 * len(axes)), squeeze=False)
    for row, (x_key, x_label) in zip(grid, axes):
        for ax, (key, label) in zip(row, metrics):
            pts = [p for p in points if p.get(key) is not None]
            if pts:
                err = [p.get(f"{key}_ci95") for p in pts]
                err = [e if e is not None and np.isfinite(e) else 0.0 for e in err]
                ax.errorbar([p[x_key] for p in pts], [p[key] for p in pts], yerr=err, marker="o", capsize=3,
                            label=pts[0].get("method", ""))
            for (name, values), style in zip(lines.items(), ("--", ":", "-.")):
                if values.get(key) is not None:
                    ax.axhline(values[key], linestyle=style, color="grey" if style == "--" else "black", label=name)
            if pts and all(p[x_key] > 0 for p in pts):
                ax.set_xscale("log")  # ticks at the measured points (a doubling ladder: evenly spaced)
                ax.set_xticks([p[x_key] for p in pts])
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(x_label)
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_curves(path: str | Path, panels: dict[str, dict[str, dict[str, np.ndarray]]], metrics: list[str],
                x_label: str = "steps after the real start frames") -> Path:
    """Metrics against the step: one column per panel (e.g. a re-grounding interval), one row per
    metric, one line per method. ``panels``: panel -> method -> metric -> values ``(L,)``."""
    fig, grid = plt.subplots(len(metrics), len(panels), figsize=(4.5 * len(panels), 2.8 * len(metrics)),
                             squeeze=False, sharex=True)
    for col, (panel, methods) in enumerate(panels.items()):
        for row, metric in enumerate(metrics):
            ax = grid[row][col]
            for name, values in methods.items():
                ax.plot(np.arange(1, len(values[metric]) + 1), values[metric], label=name, linewidth=1.2)
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(panel, fontsize=9)
            if row == len(metrics) - 1:
                ax.set_xlabel(x_label, fontsize=8)
    grid[0][0].legend(fontsize=7)
    return _save(fig, path)
