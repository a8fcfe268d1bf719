"""Methods: every way of producing the final prediction, behind one interface (``Method``).

``build_method(name, ctx, options)`` builds one by the name used in configs and tables.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from avid.methods.action_cfg import ActionCFG
from avid.methods.avid import AVID
from avid.methods.base import Context, Method
from avid.methods.classifier_guidance import ClassifierGuidance
from avid.methods.controlnet import ControlNet
from avid.methods.finetune import Finetune
from avid.methods.poe import PoE
from avid.methods.scratch import Base, Scratch
from avid.options import check_options

REGISTRY: dict[str, Callable[..., Method]] = {
    "avid": AVID,
    "avid-no-mask": partial(AVID, mask=False),
    "avid-no-cond": partial(AVID, condition_on_base=False),
    "scratch": Scratch,
    "pretrain": partial(Scratch, use_actions=False),
    "base": Base,
    "poe": PoE,
    "action-cfg": ActionCFG,
    "classifier-guidance": ClassifierGuidance,
    # require the base model's parameters (needs_parameters = True)
    "controlnet": ControlNet,
    "controlnet-small": partial(ControlNet, small=True),
    "finetune": Finetune,
}


def needs_parameters(name: str) -> bool:
    """Whether the method ``name`` requires the base model's parameters (the paper's shading): only
    such a method is given the base model's folder (``Context.base_path``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {sorted(REGISTRY)}")
    factory = REGISTRY[name]
    return getattr(factory, "func", factory).needs_parameters


def build_method(name: str, ctx: Context, options: dict[str, Any] | None = None) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {sorted(REGISTRY)}")
    check_options(REGISTRY[name], options, f"method.options of method {name!r}", skip=("ctx",))
    method = REGISTRY[name](ctx, **(options or {}))
    method.name = name
    return method


__all__ = ["AVID", "ActionCFG", "Base", "ClassifierGuidance", "Context", "ControlNet", "Finetune", "Method",
           "PoE", "REGISTRY", "Scratch", "build_method", "needs_parameters"]
