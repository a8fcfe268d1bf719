"""Report files: tables, side-by-side GIF/MP4 grids and plots. Pure output, no metrics maths."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import matplotlib
import matplotlib.ticker
import numpy as np
import torch

from avid.data.storage import atomic_write, atomic_write_text
from avid.data.windows import to_uint8
from avid.metrics.tables import Row, markdown, to_csv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    if path.suffix == ".gif":
        data = iio.imwrite("<bytes>", frames, extension=".gif", duration=int(1000 / fps), loop=0)
    elif path.suffix == ".mp4":
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # even sizes for yuv420p
        data = iio.imwrite("<bytes>", frames, extension=".mp4", plugin="pyav", codec="libx264", fps=fps)
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


def plot_mask_per_step(path: str | Path, curves: dict[str, torch.Tensor], num_steps: int) -> Path:
    """Mean mask value against the diffusion step (paper Fig. 4d). ``curves``: label -> ``(S, 2)``."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, c in curves.items():
        ax.plot(c[:, 0].numpy(), c[:, 1].numpy(), marker="." if len(c) < 60 else None, label=label)
    ax.set_xlim(num_steps, 0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("diffusion step i (sampling runs right to left →)")
    ax.set_ylabel("mean mask m")
    ax.set_title("AVID mask per diffusion step (1: base, 0: adapter)", fontsize=10)
    ax.legend()
    return _save(fig, path)


def plot_score_vs_params(path: str | Path, points: dict[str, tuple[int, float]], metrics: list[str]) -> Path:
    """Normalised score against trainable parameters (paper Fig. 4a-b). ``points``: label -> (params, score)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, (n, score) in points.items():
        ax.scatter([max(n, 1)], [score])
        ax.annotate(label, (max(n, 1), score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("normalised score")
    ax.set_title(f"Normalised score ({', '.join(m.upper() for m in metrics)})", fontsize=9)
    return _save(fig, path)


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
