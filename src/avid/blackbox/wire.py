"""What travels between a black-box client and a provider's server (``avid serve``).

Tensors go as binary bodies: the bytes of a safetensors file (an 8-byte header length, a JSON
header of dtypes, shapes and offsets, then the raw little-endian data), never JSON lists. Any
safetensors library reads and writes them; ``pack`` and ``unpack`` do it with one copy each (the
library's own ``save`` / ``load`` copy each tensor twice: 11 ms of a 3 MB query on our CPU). Every answer names the model that computed it in the
``X-Avid-Fingerprint`` header; clients name themselves in ``X-Avid-Client`` (per-client metrics).

Endpoints: ``GET /health`` (no token), ``GET /spec``, ``POST /denoise`` (``x_i`` float32
``(B, C, T, H, W)``, ``i`` int64 ``(B,)``, ``first`` float32 ``(B, C, k, H, W)`` -> ``out``),
``POST /encode`` (``video`` -> ``latent``) and ``POST /decode`` (``latent`` -> ``video``) for latent
models, ``GET /metrics``.
"""

from __future__ import annotations

import json
import struct

import torch

TENSORS = "application/octet-stream"
FINGERPRINT_HEADER = "X-Avid-Fingerprint"
CLIENT_HEADER = "X-Avid-Client"
_CODES = {torch.float32: "F32", torch.int64: "I64", torch.float64: "F64", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}
_TYPES = {v: k for k, v in _CODES.items()}
DTYPES = {"x_i": torch.float32, "first": torch.float32, "i": torch.int64, "out": torch.float32, "video": torch.float32,
          "latent": torch.float32}


class MalformedBody(ValueError):
    """The body is not what the endpoint reads (answered with 400; wrong dtypes and shapes: 422)."""


def pack(**tensors: torch.Tensor) -> bytes:
    """The safetensors bytes of ``tensors`` (CPU, little-endian)."""
    header, views, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        views.append(t.view(torch.uint8).reshape(-1).numpy() if t.numel() else b"")
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the format asks
    return b"".join([struct.pack("<Q", len(text)), text, *views])


def unpack(body: bytes | bytearray, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The tensors ``names`` from a safetensors body, each of its wire dtype: views of one private
    copy of ``body`` (none when it is a ``bytearray``, which the tensors then share).
    ``MalformedBody`` when the body is not safetensors or lacks a tensor, ``ValueError`` for a wrong
    dtype (one line each)."""
    body = body if isinstance(body, bytearray) else bytearray(body)
    try:
        (n,) = struct.unpack_from("<Q", body)
        header = json.loads(bytes(body[8:8 + n]))
        start, tensors = 8 + n, {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            (a, b), shape, dtype = info["data_offsets"], [int(d) for d in info["shape"]], _TYPES[info["dtype"]]
            count = (b - a) // dtype.itemsize
            if not 0 <= a <= b <= len(body) - start or count != torch.Size(shape).numel() or min(shape, default=0) < 0:
                raise ValueError(f"tensor {name!r}: offsets {a}..{b} do not hold shape {shape}")
            t = torch.frombuffer(body, dtype=dtype, count=count, offset=start + a) if count else torch.empty(0, dtype=dtype)
            tensors[name] = t.view(shape)
    except Exception as e:  # every kind of garbage: short, not JSON, unknown dtype, offsets out of range
        raise MalformedBody(f"the body is not safetensors bytes ({type(e).__name__}: {e})") from None
    missing = [n for n in names if n not in tensors]
    if missing:
        raise MalformedBody(f"the body lacks tensor(s) {missing}; expected {list(names)}, got {sorted(tensors)}")
    wrong = {n: str(tensors[n].dtype) for n in names if tensors[n].dtype != DTYPES[n]}
    if wrong:
        raise ValueError(f"wrong dtype(s) {wrong}; expected {({n: str(DTYPES[n]) for n in wrong})}")
    return [tensors[n] for n in names]
