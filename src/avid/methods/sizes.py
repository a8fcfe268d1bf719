"""Parameter-matched size presets (``configs/sizes/<name>.yaml``).

The paper compares the adapters at equal trainable parameters (section 4, Tables 8 and 9): AVID,
action-conditioned diffusion (``scratch``), ``poe``, ``action-cfg`` and ``controlnet-small`` must
lie within 10% of each other. A preset maps each method name to its ``unet`` options and names the
base model it was matched against (``base_unet``; ControlNet-Small's projections depend on it)::

    base_unet: {from: configs/unet/paper-97m.yaml}
    methods:
      avid: {from: configs/unet/paper-22m.yaml}
      controlnet-small: {from: configs/unet/paper-22m.yaml, base_channels: 56}

``from: FILE`` or ``from: FILE#a.b`` takes the mapping in that YAML file (at key path ``a.b``)
and the other keys override it, merged by the one rule (``avid.config.merge``). ``load_size_preset("paper-22m").options("avid")`` gives the
constructor options ``{"unet": {...}}``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avid.checkpoint import resolve
from avid.config import merge, read_mapping
from avid.methods import REGISTRY, Context, build_method, method_class
from avid.methods.controlnet import small_control_branch
from avid.nn import UNetConfig, count_parameters

SIZES_DIR = "configs/sizes"
MATCHED = ("avid", "scratch", "poe", "action-cfg", "controlnet-small")


@dataclass
class SizePreset:
    name: str
    base_unet: dict[str, Any]  # UNetConfig fields of the base model the sizes are matched against
    methods: dict[str, dict[str, Any]]  # method name -> UNetConfig fields of its network

    def options(self, method: str) -> dict[str, Any]:
        """Constructor options of ``method`` at this size: ``{"unet": {...}}`` from the entry the
        method is sized by (``Method.size_entry``; the ablations keep AVID's network), ``{}`` for a
        method the presets do not size (copies of the base network: the base's size by construction)."""
        entry = method_class(method).size_entry
        if entry is None:
            return {}
        if entry not in self.methods:
            raise ValueError(f"size preset {self.name!r} has no entry for method {entry!r}; "
                             f"it sizes {sorted(self.methods)}")
        return {"unet": dict(self.methods[entry])}


def _mapping(entry: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``from: FILE[#a.b]`` under the entry's own keys."""
    entry = dict(entry)
    source = entry.pop("from", None)
    if source is None:
        return entry
    file, _, keys = str(source).partition("#")
    data = read_mapping(file, "size preset source")
    for key in filter(None, keys.split(".")):
        if not isinstance(data, dict) or key not in data:
            raise ValueError(f"{source}: {file} has no key {keys!r}")
        data = data[key]
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a mapping of UNet options")
    return merge(copy.deepcopy(data), entry)  # the one merge rule (avid.config)


def load_size_preset(name_or_path: str | Path) -> SizePreset:
    """A preset by name (``configs/sizes/<name>.yaml``) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(SIZES_DIR) / f"{name_or_path}.yaml"
    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"no size preset {name_or_path!r} (looked for {path})")
    raw = read_mapping(path, "size preset")
    if not {"base_unet", "methods"} <= set(raw):
        raise ValueError(f"size preset {path} needs the keys `base_unet` and `methods`")
    unknown = sorted(set(raw["methods"]) - set(REGISTRY))
    if unknown:
        raise ValueError(f"size preset {path} names unknown methods {unknown}")
    return SizePreset(path.stem, _mapping(raw["base_unet"]),
                      {m: _mapping(e) for m, e in raw["methods"].items()})


def trainable_parameter_counts(preset: SizePreset, ctx: Context, methods: tuple[str, ...] = MATCHED,
                               options: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Trainable parameters of each method at the preset's sizes (or with its constructor ``options``
    when given, e.g. an experiment's), built on the meta device (no memory, no weights). ``ctx`` gives
    the data layout and action space (its black-box base is only held); ControlNet-Small is counted
    against the preset's ``base_unet``."""
    counts = {}
    with torch.device("meta"):
        for name in methods:
            opts = (options or {}).get(name, preset.options(name))
            if name == "controlnet-small":
                base_cfg = UNetConfig(**{**preset.base_unet, "in_channels": ctx.channels * (1 + ctx.cond_frames),
                                         "out_channels": ctx.channels, "num_steps": ctx.diffusion.num_steps})
                module = small_control_branch(ctx, base_cfg, opts["unet"])
            elif method_class(name).needs_parameters:
                raise ValueError(f"cannot count {name!r} without its base model's weights")
            else:
                module = build_method(name, ctx, opts)
            counts[name] = count_parameters(module)
    return counts
