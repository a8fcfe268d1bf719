"""Methods: every way of producing the final prediction, behind one interface (``Method``).

``build_method(name, ctx, options)`` builds one by the name used in configs and tables. What
differs between methods (whether it trains, needs the base's parameters, its size preset entry,
its default learning rate) is a class attribute (``Method``); ``method_class(name)`` reads them.
"""

from __future__ import annotations

from typing import Any

from avid.methods.action_cfg import ActionCFG
from avid.methods.avid import AVID, AVIDNoCond, AVIDNoMask
from avid.methods.base import Context, Method
from avid.methods.classifier_guidance import ClassifierGuidance
from avid.methods.controlnet import ControlNet, ControlNetSmall
from avid.methods.finetune import Finetune
from avid.methods.poe import PoE
from avid.methods.scratch import Base, CopyLast, Pretrain, Scratch
from avid.options import check_options

# In the paper's row order (Tables 1 and 3)
REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (
    AVID, AVIDNoMask, AVIDNoCond, Scratch, PoE, ActionCFG, ControlNetSmall, ControlNet, Base, ClassifierGuidance,
    Finetune, Pretrain)}

# The methods an experiment compares (trained on the same data and budget), Table 1's rows and Table 3's
COMPARED = tuple(n for n, c in REGISTRY.items() if c.trains and not c.pretrains_base)
TABLE1 = tuple(n for n, c in REGISTRY.items() if c.ablation_of is None and not c.pretrains_base)
ABLATIONS = tuple(n for n, c in REGISTRY.items() if c.ablation_of)
TABLE3 = tuple(dict.fromkeys(REGISTRY[n].ablation_of for n in ABLATIONS)) + ABLATIONS


def method_class(name: str) -> type[Method]:
    """The class of the method called ``name`` in configs and tables."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name]


def compared_method(name: str) -> type[Method]:
    """``method_class(name)`` for a method an experiment can train and compare (not ``base``, ``pretrain``)."""
    if name not in COMPARED:
        raise ValueError(f"method {name!r} is not a trainable method to compare; choose from {sorted(COMPARED)}")
    return REGISTRY[name]


def check_method_options(name: str, options: dict[str, Any] | None) -> type[Method]:
    """The class of method ``name``, after checking that its constructor takes every key of ``options``."""
    cls = method_class(name)
    check_options(cls, options, f"method.options of method {name!r}", skip=("ctx",))
    return cls


def build_method(name: str, ctx: Context, options: dict[str, Any] | None = None) -> Method:
    return check_method_options(name, options)(ctx, **(options or {}))


__all__ = ["AVID", "AVIDNoCond", "AVIDNoMask", "ActionCFG", "Base", "COMPARED", "ClassifierGuidance", "Context", "CopyLast",
           "ControlNet", "ControlNetSmall", "Finetune", "Method", "PoE", "Pretrain", "REGISTRY", "Scratch", "TABLE1",
           "TABLE3", "build_method", "check_method_options", "compared_method", "method_class"]
