"""Opening the black box: ``open_denoiser(base)`` chooses the backend from what ``base`` names.

- ``http://host:port`` (or https): a provider's server (``avid serve``), ``avid.blackbox.remote``;
- a folder (an avid base model, or a diffusers image-to-video model): a worker process on this
  machine, ``avid.blackbox.worker``.

Either way the caller gets a ``Denoiser``: outputs only, no parameters, no module, no path.
Local models are shared: opening the same folder with the same settings again, while a
``Denoiser`` of it is alive and open, returns that one (one worker process per model, not per method).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch

from avid.blackbox.denoiser import Denoiser
from avid.blackbox.remote import is_url, open_remote
from avid.blackbox.worker import open_worker
from avid.checkpoint import resolve

_OPEN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _version(folder: Path) -> tuple:
    """The folder and every file's size and modification time: a changed model is opened anew."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return (str(folder.resolve()), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def open_denoiser(base: str | Path, precision: str = "auto", device: str | None = None, threads: int | None = None,
                  token: str | None = None, fingerprint: str | None = None) -> Denoiser:
    """``precision`` ("bf16" or "fp32"), ``device`` (default: "cuda" when there is one, else "cpu")
    and ``threads`` choose how a local model runs (a server chose its own); ``token`` is a server's
    bearer token; ``fingerprint``, when given, must be the served model's."""
    if is_url(base):
        return open_remote(str(base), token=token, fingerprint=fingerprint)
    threads = threads or torch.get_num_threads()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (_version(resolve(base)), precision, device, threads)
    denoiser = _OPEN.get(key)
    if denoiser is None or denoiser.closed:
        denoiser = _OPEN[key] = open_worker(base, precision=precision, device=device, threads=threads)
    if fingerprint is not None and denoiser.spec.fingerprint != fingerprint:
        raise ValueError(f"{base} holds model {denoiser.spec.fingerprint[:12]}, expected {fingerprint[:12]}")
    return denoiser
