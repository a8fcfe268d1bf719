"""What travels between a black-box client and a provider's server (``avid serve``).

Tensors go as binary bodies: the bytes of a safetensors file (a JSON header, then the raw
little-endian data), never JSON lists. Every answer names the model that computed it in the
``X-Avid-Fingerprint`` header; clients name themselves in ``X-Avid-Client`` (per-client metrics).

Endpoints: ``GET /health`` (no token), ``GET /spec``, ``POST /denoise`` (``x_i`` float32
``(B, C, T, H, W)``, ``i`` int64 ``(B,)``, ``first`` float32 ``(B, C, k, H, W)`` -> ``out``),
``POST /encode`` (``video`` -> ``latent``) and ``POST /decode`` (``latent`` -> ``video``) for latent
models, ``GET /metrics``.
"""

from __future__ import annotations

import torch
from safetensors.torch import load, save

TENSORS = "application/octet-stream"
FINGERPRINT_HEADER = "X-Avid-Fingerprint"
CLIENT_HEADER = "X-Avid-Client"
DTYPES = {"x_i": torch.float32, "first": torch.float32, "i": torch.int64, "out": torch.float32, "video": torch.float32,
          "latent": torch.float32}


class MalformedBody(ValueError):
    """The body is not what the endpoint reads (answered with 400; wrong dtypes and shapes: 422)."""


def pack(**tensors: torch.Tensor) -> bytes:
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def unpack(body: bytes, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The tensors ``names`` from a safetensors body, each of its wire dtype. ``MalformedBody`` when
    the body is not safetensors or lacks a tensor, ``ValueError`` for a wrong dtype (one line each)."""
    try:
        tensors = load(body)
    except Exception as e:  # safetensors raises its own error types for every kind of garbage
        raise MalformedBody(f"the body is not safetensors bytes ({type(e).__name__}: {e})") from None
    missing = [n for n in names if n not in tensors]
    if missing:
        raise MalformedBody(f"the body lacks tensor(s) {missing}; expected {list(names)}, got {sorted(tensors)}")
    wrong = {n: str(tensors[n].dtype) for n in names if tensors[n].dtype != DTYPES[n]}
    if wrong:
        raise ValueError(f"wrong dtype(s) {wrong}; expected {({n: str(DTYPES[n]) for n in wrong})}")
    return [tensors[n] for n in names]
