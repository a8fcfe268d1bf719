"""Handing freed memory back to the operating system between the stages of a long command.

Python and PyTorch free small and medium blocks into the C allocator's heap, which keeps them: after
a stage that allocated a lot in pieces (loading networks, a few forward passes) the process stays
that large, and the next stage's big arrays (mapped fresh) come on top. ``give_back`` runs a full
collection (reference cycles, e.g. Lightning's trainer and module) and asks glibc to return its
free heap (``malloc_trim``); elsewhere only the collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def give_back() -> None:
    """Collect garbage and return the allocator's free memory to the system, where it can."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
