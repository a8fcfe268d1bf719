"""Options given by name (config sections, ``method.options``, ``unet``, ``diffusion``) checked
against what the receiving constructor accepts, so a typo is one clear line naming the valid
names instead of a ``TypeError`` from deep inside."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping


def accepted(target: Callable[..., Any], skip: tuple[str, ...] = ()) -> set[str] | None:
    """Names ``target`` (a dataclass, class or function) takes by keyword; None if it takes any."""
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target) if f.init} - set(skip)
    params = inspect.signature(target).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds} - set(skip)


def check_options(target: Callable[..., Any], options: Mapping[str, Any] | None, where: str,
                  skip: tuple[str, ...] = ()) -> None:
    """``ValueError`` naming the unknown keys of ``options`` and the valid ones."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ValueError(f"{where} must be a mapping of name: value, got {options!r}")
    valid = accepted(target, skip)
    unknown = sorted(set(options) - valid) if valid is not None else []
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid: {sorted(valid)}")


def build(target: Callable[..., Any], options: Mapping[str, Any] | None, where: str, **fixed: Any) -> Any:
    """``target(**options, **fixed)`` after ``check_options``; ``fixed`` (set by the caller) win."""
    check_options(target, options, where)
    return target(**{**(options or {}), **fixed})


def check_numbers(obj, where: str, at_least_1: tuple[str, ...] = (), at_least_0: tuple[str, ...] = (),
                  whole: tuple[str, ...] = ()) -> None:
    """Counts must be >= 1 and amounts finite and >= 0: no 0 meaning "all", no -1 meaning "forever"
    (None: not set, allowed). ``whole``: sizes that must be set, as whole numbers >= 1."""
    for names, low in ((at_least_1, 1), (at_least_0, 0)):
        for name in names:
            v = getattr(obj, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= low):
                raise ValueError(f"{where}.{name} must be a finite number >= {low}, got {v!r}")
    for name in whole:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}.{name} must be a whole number >= 1, got {v!r}")
