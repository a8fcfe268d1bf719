"""Configuration: typed trees of small dataclasses, and the one way every config is loaded.

A run (a method, the base model's pretraining) is a ``RunConfig``; the action classifier's run, an
experiment and the scaling ladder are dataclasses of their pipelines that hold the same pieces
(``TrainConfig``, ``RunConfig``). ``load(cls, path, overrides, values)`` gives any of them: the
defaults, then the YAML file, then ``--set`` overrides, then the command's flags, merged by one
rule (``merge``) and checked at every depth (``from_dict``). Every run writes its resolved config
next to its checkpoint.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from avid.checkpoint import resolve
from avid.diffusion import DiffusionConfig
from avid.options import check_numbers, check_options

T = TypeVar("T")


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


ACCELERATORS = ("auto", "cpu", "gpu", "cuda")  # what this project runs on (Lightning's names)


@dataclass
class TrainConfig:
    max_steps: int = 1000
    max_minutes: float | None = None  # stop after this wall time (whichever comes first)
    batch_size: int = 8
    lr: float | None = None  # None: the method's default_lr (1e-4; finetune 2e-5, as the paper)
    lr_schedule: str = "constant"  # or "cosine": decay to lr * min_lr_ratio at max_steps
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Denoising-loss weighting (avid.diffusion.WEIGHTINGS); None: the base model's own (or `diffusion`'s)
    loss_weighting: str | None = None
    ema_decay: float | None = 0.995  # None: no EMA
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
        if self.max_minutes is not None and not 0 < self.max_minutes < math.inf:
            raise ValueError(f"train.max_minutes must be positive (or null: no time limit), got {self.max_minutes}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"train.accelerator must be one of {ACCELERATORS}, got {self.accelerator!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in [0, 1) (or null: no EMA), got {self.ema_decay}")


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # "ddpm" (paper, all steps) or "ddim"
    steps: int | None = 4  # DDIM steps (None: all); 4: the best of 1, 4, 10, 20 on validation levels (README)
    eta: float = 0.0
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"  # e.g. "cuda": the method runs there; the videos come back on the CPU
    precision: str = "auto"  # of every forward pass while sampling (see TrainConfig.precision)
    # SDEdit-style start: begin at this diffusion step from the last conditioning frame, repeated over
    # the clip and noised to the step, instead of at the last step from pure noise (None); the steps are
    # then spaced over start..0. Every method sampled with one config gets the same start.
    start_step: int | None = None

    def __post_init__(self) -> None:
        if self.sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        check_numbers(self, "sampling", at_least_1=("steps", "batch_size"), at_least_0=("eta", "seed", "start_step"))

    def describe(self) -> str:
        """The sampler in words, as every report states it: "DDIM with 4 steps (eta 0)", "DDPM with every
        diffusion step"."""
        start = "" if self.start_step is None else f", from the last frame noised to step {self.start_step}"
        if self.sampler != "ddim":
            return f"{self.sampler.upper()} with every diffusion step{start}"
        return f"DDIM with {f'{self.steps} steps' if self.steps else 'every diffusion step'} (eta {self.eta:g}){start}"


@dataclass
class RunConfig:
    name: str = "run"
    out: str = "runs/run"
    base: str | None = "assets/base-procgen"  # the black-box model (None when training the base)
    diffusion: dict[str, Any] = field(default_factory=dict, metadata={"keys_of": DiffusionConfig})  # without a base
    codec: str | None = None  # pretraining only: train the base model in this codec's latent space
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_dict(cls: type[T], values: Any, where: str = "", what: str = "config") -> T:
    """``cls`` (a dataclass) from a mapping, every nested dataclass field built the same way.

    Unknown keys at any depth are refused by name with the valid ones; a mapping field whose
    metadata names ``keys_of`` (e.g. ``DiffusionConfig``) accepts only that target's options;
    numbers given as strings (YAML reads ``1e-4`` as one) become numbers. ``where``: the dotted
    path of this section ("" at the top), ``what``: the kind of config, both for messages."""
    label = f"{what} section {where!r}" if where else f"{what} (top level)"
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{label} must be a mapping of key: value, got {values!r}")
    check_options(cls, values, label)
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        v, at = values[f.name], f"{where}.{f.name}" if where else f.name
        kind = _dataclass_in(hints[f.name])
        if kind is not None:
            v = v if isinstance(v, kind) else from_dict(kind, v, at, what)
        elif "keys_of" in f.metadata:
            check_options(f.metadata["keys_of"], v, f"{what} section {at!r}")
        else:
            v = _number(v, hints[f.name], at)
        kwargs[f.name] = v
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    options = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (Union, UnionType) else [hint]
    return options[0] if len(options) == 1 and is_dataclass(options[0]) else None


def _number(value: Any, hint: Any, where: str) -> Any:
    """A value of a ``bool``, ``int`` or ``float`` field, checked: YAML reads ``1e-4`` as a string (no
    dot), so numbers given as strings become numbers; a count is never rounded (``2.5``) and ``true``
    is not a number, nor ``maybe`` a truth value."""
    kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None and type(None) in kinds:
        return value
    if isinstance(value, str) and (float in kinds or int in kinds):
        try:
            value = float(value) if float in kinds else int(value)
        except ValueError:
            raise ValueError(f"config value {where}={value!r} is not a number") from None
    if bool in kinds and not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if int in kinds and float not in kinds and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if float in kinds and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return value


def merge(into: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The one merge rule: mappings merge key by key at every depth, anything else replaces."""
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


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


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``dotted.key=value`` texts (``--set``) as ``{dotted.key: value}``, values parsed as YAML."""
    out = {}
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like key=value")
        k, v = ov.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ValueError(f"override {ov!r}: the value is not valid YAML ({e})") from None
    return out


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
         values: Mapping[str, Any] | None = None, what: str = "config", start: T | None = None) -> T:
    """Every config of the project, one rule: ``cls``'s defaults (or ``start``), then the YAML file,
    then the ``--set`` overrides (``dotted.key=value`` texts), then ``values`` (``{dotted.key: value}``,
    the command's own flags; None means "not given"), merged by ``merge`` and built by ``from_dict``."""
    d = asdict(start if start is not None else cls())
    if path is not None:
        merge(d, read_mapping(path, what))
    flags = {k: v for k, v in (values or {}).items() if v is not None}
    for key, value in {**parse_overrides(overrides), **flags}.items():
        set_dotted(d, key, value)
    return from_dict(cls, d, what=what)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    values: Mapping[str, Any] | None = None) -> RunConfig:
    """A ``RunConfig`` (``load``): defaults, the YAML file, ``--set`` overrides, then flags."""
    return load(RunConfig, path, overrides, values)


def run_config_from_dict(d: Mapping[str, Any]) -> RunConfig:
    return from_dict(RunConfig, d)
