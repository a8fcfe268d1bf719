"""``avid bench --preset NAME``: the networks of a size preset timed on their own, at a chosen batch,
number of frames and resolution, so that layouts (and other implementations of the same network)
can be compared step for step.

The networks are the preset's base model (input: ``x_i`` and the ``k`` first frames, ``c (1 + k)``
channels; output ``c``) and its AVID adapter (input: ``x_i``, ``out_pre`` and the first frames,
``c (2 + k)`` channels; output ``c + 1``, discrete actions), randomly initialised. Two steps:

- train step: the base's forward pass without gradients, the adapter's forward and backward pass
  through eq. 5's mask combination and an MSE loss, and an AdamW step of the adapter;
- prediction step: both forward passes without gradients (one step of the sampler).

``time_steps`` takes any ``base(x, i)`` / ``adapter(x, i, actions)`` modules, so an outside
implementation can be driven by the same code (``benchmarks/official_unet3d.py``). Entries are
timed alternately, one step of each in turn, so that a shared machine's load falls on all of them
alike; the figures are medians of wall-clock seconds, with the process's CPU seconds beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from avid.methods.sizes import load_size_preset
from avid.nn.unet import UNet3D, UNetConfig, count_parameters, to_channels_last, tune_networks, with_first_frames
from avid.precision import Precision, cpu_info, describe_cpu, resolve_precision

CHANNELS, COND_FRAMES, NUM_ACTIONS, NUM_STEPS = 3, 2, 15, 200


@dataclass
class Shape:
    """Batch of ``frames`` predicted frames (the networks' time axis) of ``size`` x ``size`` pixels."""

    batch: int = 1
    frames: int = 8
    size: int = 64


@dataclass
class Entry:
    """One implementation under test: its two networks, in channels-last 3D memory or not."""

    name: str
    base: nn.Module
    adapter: nn.Module
    notes: dict = field(default_factory=dict)
    channels_last: bool = False


def preset_networks(preset: str, width: int | None = None) -> tuple[nn.Module, nn.Module]:
    """The base network and the AVID adapter of a size preset (``configs/sizes/<preset>.yaml``);
    ``width`` replaces both networks' ``base_channels`` (their ``cond_dim`` scaled alike)."""
    sizes = load_size_preset(preset)

    def build(options: dict, **layout) -> UNet3D:
        options = dict(options)
        if width is not None:
            options["cond_dim"] = max(8, round(options.get("cond_dim", 128) * width / options["base_channels"]))
            options["base_channels"] = width
        return UNet3D(UNetConfig(**{**options, "num_steps": NUM_STEPS, **layout}))

    base = build(sizes.base_unet, in_channels=CHANNELS * (1 + COND_FRAMES), out_channels=CHANNELS, action_kind="none")
    adapter = build(sizes.methods["avid"], in_channels=CHANNELS * (2 + COND_FRAMES), out_channels=CHANNELS + 1,
                    action_kind="discrete", num_actions=NUM_ACTIONS)
    return base, adapter


def _inputs(shape: Shape, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, t, s = shape.batch, shape.frames, shape.size
    tensors = {"x_i": torch.randn(b, CHANNELS, t, s, s, generator=g),
               "first": torch.rand(b, CHANNELS, COND_FRAMES, s, s, generator=g) * 2 - 1,
               "target": torch.rand(b, CHANNELS, t, s, s, generator=g) * 2 - 1}
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    tensors = {k: v.to(device).contiguous(memory_format=fmt) for k, v in tensors.items()}
    tensors["actions"] = torch.randint(0, NUM_ACTIONS, (b, t), generator=g).to(device)
    tensors["i"] = torch.randint(0, NUM_STEPS, (b,), generator=g).to(device)
    return tensors


def steps(entry: Entry, shape: Shape, prec: Precision, device: torch.device):
    """The entry's (train step, prediction step) callables on fixed random inputs."""
    base, adapter = (m.to(device) for m in (entry.base, entry.adapter))
    channels_last = entry.channels_last
    if channels_last:  # weights (ours: and inputs, see tune_networks) in channels-last 3D memory
        for m in (base, adapter):
            tune_networks(to_channels_last(m), channels_last=True)
    base, adapter = base.eval().requires_grad_(False), adapter.train()
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    t = _inputs(shape, device, channels_last)
    c = CHANNELS

    def final():
        with torch.no_grad():  # the black-box call
            out_pre = base(with_first_frames(t["x_i"], first=t["first"]), t["i"])
        out = adapter(with_first_frames(t["x_i"], out_pre, first=t["first"]), t["i"], t["actions"])
        m = torch.sigmoid(out[:, c:].float())
        return out_pre * m + out[:, :c] * (1 - m)  # eq. 5

    def train():
        with prec.autocast():
            loss = F.mse_loss(final().float(), t["target"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def predict():
        with torch.no_grad(), prec.autocast():
            final()

    return train, predict


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def time_steps(entries: list[Entry], shape: Shape, precision: str = "fp32", warmup: int = 2, repeats: int = 5,
               device: str = "cpu") -> list[dict]:
    """Median train and prediction step seconds (wall and CPU) of each entry, timed alternately.
    A compiled entry's first call (the compilation) is timed on its own and reported as ``compile_s``."""
    dev = torch.device(device)
    prec = resolve_precision(precision, dev.type)
    fns = [steps(e, shape, prec, dev) for e in entries]
    first = [[_timed(f, dev)[0] for f in pair] for pair in fns]  # compiles here, if compiled
    for _ in range(max(warmup - 1, 0)):
        for pair in fns:
            for f in pair:
                f()
    times = [{"train": [], "predict": []} for _ in entries]
    for _ in range(repeats):
        for kind, k in (("train", 0), ("predict", 1)):
            for j, pair in enumerate(fns):
                times[j][kind].append(_timed(pair[k], dev))
    rows = []
    for e, ts, f in zip(entries, times, first):
        row = {"name": e.name, "base_parameters": count_parameters(e.base, trainable_only=False),
               "adapter_parameters": count_parameters(e.adapter), "precision": prec.name, "device": device,
               "batch": shape.batch, "frames": shape.frames, "size": shape.size,
               "threads": torch.get_num_threads(), "channels_last": e.channels_last, "first_train_s": f[0],
               "first_predict_s": f[1], **e.notes}
        for kind in ("train", "predict"):
            wall = sorted(w for w, _ in ts[kind])
            cpu = sorted(c for _, c in ts[kind])
            row[f"{kind}_step_s"], row[f"{kind}_cpu_s"] = wall[len(wall) // 2], cpu[len(cpu) // 2]
        rows.append(row)
    return rows


def compiled(entry: Entry) -> Entry:
    """The entry with both networks through ``torch.compile`` (compile time lands in the first call)."""
    return Entry(f"{entry.name} (compiled)", torch.compile(entry.base), torch.compile(entry.adapter),
                 {**entry.notes, "compiled": True}, entry.channels_last)


def format_rows(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [f"CPU: {describe_cpu()}" if r0["device"] == "cpu" else f"device: {torch.cuda.get_device_name()}",
             f"batch {r0['batch']} of {r0['frames']} frames at {r0['size']}x{r0['size']}, {r0['precision']}, "
             f"{r0['threads']} threads; medians (wall-clock; CPU seconds of the process in brackets)", "",
             f"{'':<44}{'base / adapter params':>24}{'train step':>20}{'prediction step':>20}"]
    for r in rows:
        params = f"{r['base_parameters'] / 1e6:.2f}M / {r['adapter_parameters'] / 1e6:.2f}M"
        train = f"{r['train_step_s']:.3f} s ({r['train_cpu_s']:.2f})"
        pred = f"{r['predict_step_s']:.3f} s ({r['predict_cpu_s']:.2f})"
        lines.append(f"{r['name']:<44}{params:>24}{train:>20}{pred:>20}")
    eager = {r["name"]: r for r in rows if not r.get("compiled")}
    for r in rows:
        plain = eager.get(r["name"].removesuffix(" (compiled)"))
        if r.get("compiled") and plain:
            lines.append(f"{r['name']}: compile + first train step {r['first_train_s']:.1f} s, first prediction step "
                         f"{r['first_predict_s']:.1f} s; speed-up {plain['train_step_s'] / r['train_step_s']:.2f}x "
                         f"train, {plain['predict_step_s'] / r['predict_step_s']:.2f}x prediction")
    return "\n".join(lines)


def bench_preset(preset: str, shape: Shape, width: int | None = None, precision: str = "fp32", repeats: int = 5,
                 compile: bool = False, device: str = "cpu", channels_last: bool = False) -> list[dict]:
    """``avid bench --preset``: the preset's networks; with ``channels_last`` also in channels-last
    memory, with ``compile`` also compiled (each beside the plain one, timed alternately)."""
    name = preset if width is None else f"{preset} @ width {width}"

    def entry(suffix: str = "", cl: bool = False) -> Entry:
        torch.manual_seed(0)
        return Entry(name + suffix, *preset_networks(preset, width), channels_last=cl)

    entries = [entry()] + ([entry(", channels-last", True)] if channels_last else [])
    if compile:
        entries += [compiled(entry(e.name.removeprefix(name), e.channels_last)) for e in list(entries)]
    rows = time_steps(entries, shape, precision, repeats=repeats, device=device)
    for r in rows:
        r["cpu"] = cpu_info()
    return rows
