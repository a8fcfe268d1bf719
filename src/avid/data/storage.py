"""Episode storage: a folder of compressed ``.npz`` shards and an ``index.json``.

A shard holds consecutive environment steps of one stream:

- ``frames``  ``(N, H, W, 3)`` uint8 observations;
- ``actions`` ``(N,)`` int64 (discrete) or ``(N, A)`` float32 (continuous): ``actions[j]`` is the
  action taken after observing ``frames[j]``, which leads to ``frames[j + 1]``;
- ``firsts``  ``(N,)`` bool: ``firsts[j]`` marks the first frame of an episode (the transition
  into it is not a real transition).

Shards and the index are written to a temporary file and renamed, so a killed writer leaves either
the old or the new file, never half of one (and a temporary file, which ``clean_temp`` removes); the
index records each shard's size and SHA-256, so a generator resumes by skipping the shards that are
in the index and on disk at their recorded size and checksum, and ``avid data verify`` finds garbled ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

INDEX = "index.json"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean_temp(folder: Path) -> list[Path]:
    """Remove the temporary files a killed ``atomic_write`` left anywhere under ``folder``; call it
    only while holding the folder's lock (``avid.locks``), when no other writer can be mid-write."""
    orphans = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def spec_from_meta(cls, meta: dict[str, Any]):
    """The generator spec (a dataclass ``cls``) that made a dataset, from its ``index.json`` metadata
    (for regeneration): the metadata's values of ``cls``'s fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in meta.items() if k in names})


# What reading a damaged .npz raises: a bad zip, a truncated or empty file, garbled deflate data
SHARD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


class ShardError(ValueError):
    """A shard that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot use shard {path}: {reason}; repair the dataset with `avid data verify {path.parent} --repair`")


class EpisodeStore:
    """Read and append shards of a dataset folder."""

    def __init__(self, root: str | Path, meta: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        index_path = self.root / INDEX
        if index_path.exists():
            try:
                self.index = json.loads(index_path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"corrupt dataset index {index_path}: {e}") from e
            if meta:
                old = self.index.get("meta", {})
                clash = {k: (old.get(k), v) for k, v in meta.items() if k in old and old[k] != v}
                if clash:
                    raise ValueError(f"{self.root} holds a dataset made with other settings: {clash} "
                                     "(choose another --out or delete the folder)")
        elif meta is None:
            raise FileNotFoundError(f"no dataset at {self.root} (missing {INDEX}); create one with `avid data`")
        else:
            self.index = {"version": 1, "meta": meta, "shards": []}

    @property
    def meta(self) -> dict[str, Any]:
        return self.index["meta"]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.index["shards"]

    def has(self, name: str) -> bool:
        """``name`` is in the index and its file is on disk at the recorded size and SHA-256, so a rerun
        regenerates a missing, truncated or garbled shard (hashing reads each shard once)."""
        shard = next((s for s in self.shards if s["name"] == name), None)
        if shard is None:
            return False
        path = self.root / shard["file"]
        if not (path.is_file() and path.stat().st_size == shard.get("bytes", path.stat().st_size) > 0):
            return False
        return "sha256" not in shard or sha256(path) == shard["sha256"]

    def num_frames(self) -> int:
        return sum(s["frames"] for s in self.shards)

    def write_shard(self, name: str, frames: np.ndarray, actions: np.ndarray, firsts: np.ndarray,
                    **info: Any) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        if len(actions) != len(frames) or len(firsts) != len(frames):
            raise ValueError(f"frames, actions and firsts differ in length: "
                             f"{len(frames)}, {len(actions)}, {len(firsts)}")
        size = self.meta.get("frame_size")
        if size is not None and frames.shape[1:3] != (size, size):
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[1]} px, the dataset's metadata says "
                             f"{size}px ({self.root})")
        file, buf = f"{name}.npz", io.BytesIO()
        np.savez_compressed(buf, frames=frames, actions=actions, firsts=firsts.astype(bool))
        data = buf.getvalue()
        atomic_write(self.root / file, lambda f: f.write(data))
        self.index["shards"] = [s for s in self.shards if s["name"] != name]
        self.shards.append({"name": name, "file": file, "frames": int(len(frames)), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), **info})
        self.save_index()

    def save_index(self) -> None:
        atomic_write_text(self.root / INDEX, json.dumps(self.index, indent=1))

    def load_shard(self, shard: dict[str, Any]) -> dict[str, np.ndarray]:
        path = self.root / shard["file"]
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in ("frames", "actions", "firsts")}
        except SHARD_ERRORS as e:
            raise ShardError(path, f"unreadable ({type(e).__name__}: {e})") from None
        if len(data["frames"]) != shard["frames"]:
            raise ShardError(path, f"{len(data['frames'])} frames, the index says {shard['frames']}")
        size = self.meta.get("frame_size")
        shape = data["frames"].shape
        if size is not None and (len(shape) != 4 or shape[1:] != (size, size, 3)):
            raise ValueError(f"shard {path} holds frames of shape {shape[1:]}, but {self.root / INDEX} says "
                             f"frame_size {size} (meta.frame_size); correct the metadata or regenerate the data")
        return data

    def load_all(self, shards: int | None = None) -> dict[str, np.ndarray]:
        """Every shard (or the first ``shards``) concatenated; ``firsts`` also marks each shard's
        start. Filled shard by shard into arrays sized from the index, so the peak memory is the data
        plus one shard (not twice the data, as concatenating a list of loaded shards would hold)."""
        if not self.shards:
            raise ValueError(f"dataset {self.root} has no shards")
        chosen = self.shards[:shards]
        total = sum(int(s["frames"]) for s in chosen)
        out: dict[str, np.ndarray] = {}
        at = 0
        for shard in chosen:
            part = self.load_shard(shard)
            n = len(part["frames"])
            if not out:
                out = {k: np.empty((total, *v.shape[1:]), v.dtype) for k, v in part.items()}
            for k, v in part.items():
                if v.shape[1:] != out[k].shape[1:]:
                    raise ShardError(self.root / shard["file"], f"{k} of shape {v.shape[1:]}, earlier shards "
                                     f"{out[k].shape[1:]}")
                out[k][at:at + n] = v
            out["firsts"][at] = True
            at += n
            del part
        return out
