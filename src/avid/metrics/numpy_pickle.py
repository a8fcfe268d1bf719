"""Read a pickled tree of numpy arrays (the weight files that JAX/Flax packages ship) without
running arbitrary code.

``pickle.load`` calls whatever callable a file names, so a weight file could run ``os.system``.
``load_arrays`` uses an unpickler whose ``find_class`` admits only the three callables that a
pickled ``numpy.ndarray`` needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``; ``numpy._core...`` is numpy 2's name for the first) and refuses any other with
``ForbiddenGlobal``. The tree must be nested ``dict``s with string keys and numeric arrays as
leaves (no object arrays); it is returned flat, keys joined with "/".
"""

from __future__ import annotations

import os
import pickle

import numpy as np

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own array rebuilder, whatever its module
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a callable other than numpy's array reconstruction."""


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise ForbiddenGlobal(f"{self.source} references {module}.{name}; refusing to load it: a weight pickle "
                              f"may only reference {', '.join(f'{m}.{n}' for m, n in ALLOWED)}")


def _flatten(tree, prefix: str, out: dict[str, np.ndarray], source: str) -> None:
    if isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "biuf":
            raise ValueError(f"{source}: array {prefix!r} has dtype {tree.dtype}, expected a numeric array")
        out[prefix] = tree
    elif isinstance(tree, dict) and all(isinstance(k, str) for k in tree):
        for k, v in tree.items():
            _flatten(v, f"{prefix}/{k}" if prefix else k, out, source)
    else:
        raise ValueError(f"{source}: {prefix or 'the root'} is a {type(tree).__name__}, expected a dict of "
                         f"numpy arrays")


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a pickled tree of dicts, flat: ``{"a/b/kernel": array, ...}``.

    Raises ``ForbiddenGlobal`` (an ``UnpicklingError``) if the file references anything but numpy's
    array reconstruction, and ``ValueError`` if the tree holds anything but dicts and numeric arrays.
    """
    with open(path, "rb") as f:
        tree = _ArrayUnpickler(f, str(path)).load()
    out: dict[str, np.ndarray] = {}
    _flatten(tree, "", out, str(path))
    return out
