"""The one place that decides numeric precision, for the device at hand.

``resolve_precision(requested, device)`` turns "auto", "fp32", "bf16" or "fp16" (or Lightning's
names, "bf16-mixed", "32-true", "16-mixed") into a ``Precision``: the autocast dtype every forward
pass uses, the Lightning precision string training uses, and the reason for the choice.

"auto" picks bf16 only where it is native:
- CPU: bf16 autocast is fast only with AMX or AVX512-BF16 instructions that PyTorch actually uses
  (``torch.backends.cpu.get_cpu_capability()`` is "AVX512" and the CPU flags list ``amx_bf16`` or
  ``avx512_bf16``), confirmed by a micro-benchmark cached per CPU, torch version and ISA settings
  (``~/.cache/avid/precision.json``, or ``$AVID_CACHE_DIR``). Elsewhere (AVX2 CPUs) bf16 is emulated,
  up to 66x slower per convolution, and "auto" picks fp32.
- CUDA: bf16 where the GPU supports it, else fp16.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

CHOICES = ("auto", "fp32", "bf16", "fp16")
_ALIASES = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16", "16-mixed": "fp16",
            "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_LIGHTNING = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


@dataclass(frozen=True)
class Precision:
    """``name``: "fp32", "bf16" or "fp16"; ``reason``: why (printed at start, written to reports)."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: plain fp32)."""
        return _DTYPES[self.name]

    @property
    def lightning(self) -> str:
        return _LIGHTNING[self.name]

    def autocast(self):
        """Autocast to this precision on its device type (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_info() -> dict:
    """The CPU's model name, PyTorch's vector capability, bf16-related flags and threads."""
    return {**_cpu_static(), "threads": torch.get_num_threads()}


@lru_cache(maxsize=1)
def _cpu_static() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if flags and model:
                break
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_flags": sorted(flags & {"amx_bf16", "avx512_bf16"})}


def describe_cpu() -> str:
    info = cpu_info()
    flags = ", ".join(info["bf16_flags"]) or "none"
    return f"{info['model']}; capability {info['capability']}; bf16 instructions: {flags}; {info['threads']} threads"


def _conv_seconds(dtype: torch.dtype | None, repeats: int = 3) -> float:
    conv, x = torch.nn.Conv3d(32, 32, 3, padding=1), torch.randn(8, 32, 10, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        conv(x)
        t = time.perf_counter()
        for _ in range(repeats):
            conv(x)
    return (time.perf_counter() - t) / repeats


def _cache_file() -> Path:
    root = os.environ.get("AVID_CACHE_DIR") or Path.home() / ".cache" / "avid"
    return Path(root) / "precision.json"


def _cpu_key(info: dict) -> str:
    isa = ",".join(f"{k}={os.environ.get(k, '')}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"))
    return f"{info['model']}|{info['capability']}|{'+'.join(info['bf16_flags'])}|torch {torch.__version__}|{isa}"


@lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float | None:
    """fp32 time / bf16 time of a small 3D convolution on this CPU (cached on disk), or None when
    the CPU has no native bf16 instructions that PyTorch uses (then nothing is measured)."""
    info = cpu_info()
    if info["capability"] != "AVX512" or not info["bf16_flags"]:
        return None
    key, path = _cpu_key(info), _cache_file()
    cache = {}
    with contextlib.suppress(OSError, ValueError):
        cache = json.loads(path.read_text())
    if key not in cache:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cache[key] = _conv_seconds(None) / _conv_seconds(torch.bfloat16)
        finally:
            torch.set_num_threads(threads)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(path)
    return float(cache[key])


def auto_precision(device_type: str = "cpu") -> Precision:
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "cuda", "auto: this GPU supports bf16")
        return Precision("fp16", "cuda", "auto: this GPU lacks bf16")
    if device_type != "cpu":
        return Precision("fp32", device_type, f"auto: fp32 on {device_type}")
    speedup = cpu_bf16_speedup()
    if speedup is None:
        info = cpu_info()
        return Precision("fp32", "cpu", f"auto: no native bf16 on this CPU (capability {info['capability']}, "
                                        "bf16 would be emulated)")
    if speedup <= 1.0:
        return Precision("fp32", "cpu", f"auto: bf16 measured {1 / speedup:.1f}x slower than fp32 on this CPU")
    return Precision("bf16", "cpu", f"auto: native bf16 on this CPU, measured {speedup:.1f}x faster than fp32")


def resolve_precision(requested: str | None = "auto", device: str | torch.device = "cpu") -> Precision:
    """``requested`` in ``CHOICES`` (or a Lightning alias) -> the precision to use on ``device``."""
    device_type = torch.device(device).type if not isinstance(device, torch.device) else device.type
    name = _ALIASES.get(str(requested), str(requested)) if requested is not None else "auto"
    if name not in CHOICES:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(CHOICES)}")
    if name == "auto":
        return auto_precision(device_type)
    if name == "fp16" and device_type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU choose fp32 or bf16")
    return Precision(name, device_type, "requested")


__all__ = ["CHOICES", "Precision", "auto_precision", "cpu_bf16_speedup", "cpu_info", "describe_cpu",
           "resolve_precision"]
