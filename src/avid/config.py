"""Experiment configuration: one YAML file per run, resolved into small dataclasses.

Every run writes its resolved config next to its checkpoint. ``load_run_config(path, overrides)``
reads a YAML file and applies ``dotted.key=value`` overrides (values parsed as YAML).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from avid.checkpoint import resolve
from avid.options import check_options


@dataclass
class DataConfig:
    train: str = "data/coinrun-quick"  # dataset folder (see `avid data`)
    eval: str | None = None  # held-out evaluation trajectories
    frames: int = 10  # T: conditioning + predicted frames
    cond_frames: int = 2  # k
    train_limit: int | None = None  # use at most this many training windows


@dataclass
class MethodConfig:
    name: str = "avid"
    options: dict[str, Any] = field(default_factory=dict)  # constructor options, e.g. {unet: {...}}


@dataclass
class TrainConfig:
    max_steps: int = 1000
    max_minutes: float | None = None  # stop after this wall time (whichever comes first)
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": decay to lr * min_lr_ratio at max_steps
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Denoising-loss weighting (avid.diffusion.WEIGHTINGS); None: the base model's own (or `diffusion`'s)
    loss_weighting: str | None = None
    ema_decay: float = 0.995
    # "auto" (bf16 only where this machine runs it natively, else fp32; see avid.precision), "fp32",
    # "bf16", or "fp16" (GPUs); Lightning's names ("bf16-mixed", "32-true") are accepted too
    precision: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    seed: int = 0
    devices: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    threads: int | None = None  # torch CPU threads (None: all cores)
    progress: bool = True
    # torch.compile the method's networks (first steps pay the compilation; `avid bench --preset
    # NAME --compile` measures both); channels_last: channels-last 3D memory on CUDA (ignored on CPU)
    compile: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "train", at_least_1=("max_steps", "batch_size", "log_every", "ckpt_every", "devices"),
                      at_least_0=("lr", "weight_decay", "grad_clip", "warmup_steps", "num_workers", "min_lr_ratio"))
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"train.max_minutes must be positive (or null: no time limit), got {self.max_minutes}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")


def check_numbers(obj, where: str, at_least_1: tuple[str, ...] = (), at_least_0: tuple[str, ...] = ()) -> None:
    """Counts must be >= 1 and amounts finite and >= 0: no 0 meaning "all", no -1 meaning "forever"."""
    for names, low in ((at_least_1, 1), (at_least_0, 0)):
        for name in names:
            v = getattr(obj, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= low):
                raise ValueError(f"{where}.{name} must be a finite number >= {low}, got {v!r}")


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # "ddpm" (paper, all steps) or "ddim"
    steps: int | None = 4  # DDIM steps (None: all); 4: the best of 1, 4, 10, 20 on validation levels (README)
    eta: float = 0.0
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"  # e.g. "cuda": the method runs there; the videos come back on the CPU
    precision: str = "auto"  # of every forward pass while sampling (see TrainConfig.precision)

    def __post_init__(self) -> None:
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        check_numbers(self, "sampling", at_least_1=("steps", "batch_size"), at_least_0=("eta", "seed"))


@dataclass
class RunConfig:
    name: str = "run"
    out: str = "runs/run"
    base: str | None = "assets/base-procgen"  # the black-box model (None when training the base)
    diffusion: dict[str, Any] = field(default_factory=dict)  # only used without a base model
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {"data": DataConfig, "method": MethodConfig, "train": TrainConfig, "sample": SampleConfig}


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """YAML reads ``1e-4`` as a string (no dot): numbers given as strings become numbers."""
    if isinstance(value, str) and annotation.split(" |")[0] in ("float", "int"):
        try:
            return float(value) if annotation.startswith("float") else int(value)
        except ValueError:
            raise ValueError(f"config value {key}={value!r} is not a number") from None
    return value


def build_section(cls, values: dict[str, Any], where: str):
    """``cls(**values)`` with unknown keys refused by name and numbers given as strings coerced."""
    types = {f.name: str(f.type) for f in fields(cls)}
    check_options(cls, values, f"config section {where!r}")
    return cls(**{k: _coerce(v, types[k], f"{where}.{k}") for k, v in values.items()})


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    d = dict(d)
    sections = {k: build_section(c, d.pop(k) or {}, k) for k, c in _SECTIONS.items() if k in d}
    return build_section(RunConfig, {**d, **sections}, "top level")


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ValueError(f"cannot set {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def read_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping (paths relative to the repository resolve)."""
    p = resolve(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file {path} not found")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {path} must be a mapping")
    return loaded


def apply_overrides(d: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """``dotted.key=value`` overrides (values parsed as YAML) applied to ``d`` in place."""
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like key=value")
        k, v = ov.split("=", 1)
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ValueError(f"override {ov!r}: the value is not valid YAML ({e})") from None
        set_dotted(d, k.strip(), value)
    return d


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    base: dict[str, Any] | None = None) -> RunConfig:
    """A ``RunConfig`` from defaults (or ``base``), then the YAML file, then ``key=value`` overrides."""
    d: dict[str, Any] = RunConfig().to_dict() if base is None else base
    if path is not None:
        for k, v in read_mapping(path).items():
            if isinstance(v, dict) and isinstance(d.get(k), dict):
                d[k] = {**d[k], **v}
            else:
                d[k] = v
    return run_config_from_dict(apply_overrides(d, overrides))


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def load_sections(cls, path: str | Path | None = None, overrides: list[str] | None = None, what: str = "config"):
    """A pipeline's config dataclass (e.g. an experiment's): its defaults, then the YAML file (merged
    section by section), then ``dotted.key=value`` overrides. Fields holding a dataclass become that
    dataclass (a ``RunConfig`` field through ``run_config_from_dict``); unknown keys are refused by name."""
    default = cls()
    d = asdict(default)
    if path is not None:
        _merge(d, read_mapping(path, what))
    apply_overrides(d, overrides)
    for f in fields(cls):
        section = getattr(default, f.name)
        if isinstance(section, RunConfig):
            d[f.name] = run_config_from_dict(d[f.name] or {})
        elif is_dataclass(section):
            d[f.name] = build_section(type(section), d[f.name] or {}, f.name)
    return build_section(cls, d, what)
