"""LPIPS, FID and FVD in one call, with the standard networks.

LPIPS and FVD work out of the box: their weights come with the set-up line from two packages
(``avid.metrics.packaged``). FID's Inception-v3 ships in no package: it is computed when its file is
in the weights folder and is otherwise ``"n/a (weights not found: <file> in <dir>; <where to get it>)"``,
never a number. A file that is present but fails its checksum or has the wrong layout raises
(``ValueError``): a broken file is a fault to fix, not a missing metric.

``Perceptual`` loads the networks once and scores any number of generated sets against one real
set, computing the real side (VGG taps per frame batch, FID and FVD features) once for all; it
keeps the FID/FVD features of the videos it has seen (real and generated, by content, up to
``FEATURE_CACHE_BYTES``), so later calls with the same videos skip them: an experiment's sweeps and
tables share the ground truth and the copy-last-frame row, its tables share their methods' videos,
and a rerun from cached samples scores the same videos again. ``Perceptual.load`` gives the same
object (networks and features) for the same weight files, so the commands of one process share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from avid.metrics import fid as fid_mod
from avid.metrics import fvd as fvd_mod
from avid.metrics import lpips as lpips_mod
from avid.metrics import packaged
from avid.metrics.frechet import frechet_distance
from avid.metrics.weights import WEIGHTS, WeightsNotFound, resolve_dir

PERCEPTUAL_METRICS = ("lpips", "fid", "fvd")  # the value keys of ``perceptual_metrics``
FEATURE_CACHE_BYTES = 256 * 2**20  # FID/FVD features kept per ``Perceptual`` (the oldest go first)
_LOADED: dict[tuple, Perceptual] = {}  # ``Perceptual.load``'s last, by the state of the files it read


def _missing(err: FileNotFoundError) -> str:
    if isinstance(err, WeightsNotFound):  # FID: no package ships it
        spec = next(s for s in WEIGHTS.values() if s.filename == err.file)
        return (f"n/a ({err.short}; no package ships it: get it from {spec.source.split(' (')[0]}, "
                f"or set $AVID_WEIGHTS_DIR / --weights)")
    return f"n/a ({getattr(err, 'short', str(err))})"


@dataclass
class Perceptual:
    """The three networks, or for each one missing the "n/a (...)" string to report instead."""

    lpips: lpips_mod.LPIPS | str
    inception: fid_mod.FIDInceptionV3 | str
    i3d: fvd_mod.I3D | str
    # FID/FVD features of the videos seen, by metric and content (real and generated alike)
    _features: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    def _cached(self, metric: str, compute, *tensors: torch.Tensor | None) -> torch.Tensor:
        digest = hashlib.sha256(metric.encode())
        for t in tensors:
            if t is not None:
                digest.update(str(tuple(t.shape)).encode())
                digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._features:
            self._features.move_to_end(key)
        else:
            self._features[key] = compute()
            while sum(f.nbytes for f in self._features.values()) > FEATURE_CACHE_BYTES and len(self._features) > 1:
                self._features.popitem(last=False)
        return self._features[key]

    @classmethod
    def load(cls, weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             check: bool = True, fvd_output: str = fvd_mod.DEFAULT_OUTPUT) -> Perceptual:
        """``fvd_output``: "logits" (400, the TF-Hub FVD's convention, default) or "pool" (1024).
        The same files (path, size, modification time), device and options: the same object."""
        key = (_files_read(weights_dir), str(torch.device(device)), check, fvd_output)
        if key not in _LOADED:
            _LOADED.clear()  # the last one only: memory stays bounded in a process that loads from many folders
            _LOADED[key] = cls._load(weights_dir, device, check, fvd_output)
        return _LOADED[key]

    @classmethod
    def _load(cls, weights_dir, device, check, fvd_output) -> Perceptual:
        nets = []
        for load in (lambda: lpips_mod.load_lpips(weights_dir, device, check),
                     lambda: fid_mod.load_inception(weights_dir, device, check),
                     lambda: fvd_mod.load_i3d(weights_dir, device, check, fvd_output)):
            try:
                nets.append(load())
            except FileNotFoundError as err:  # WeightsNotFound, PackagedWeightsMissing
                nets.append(_missing(err))
        return cls(*nets)

    def conventions(self, frames: int = 8, cond_frames: int = 2) -> dict[str, str]:
        lp = self.lpips.source if isinstance(self.lpips, lpips_mod.LPIPS) else lpips_mod.SOURCE_PACKAGED
        i3d = self.i3d if isinstance(self.i3d, fvd_mod.I3D) else None
        return {"lpips": lpips_mod.convention(lp), "fid": fid_mod.convention(),
                "fvd": (i3d.describe(frames + cond_frames, fvd_mod.I3D_SIZE, cond_frames) if i3d
                        else fvd_mod.convention())}

    def score(self, real: torch.Tensor, fakes: dict[str, torch.Tensor], first: torch.Tensor | None = None,
              batch_size: int = 8) -> dict[str, dict]:
        """Every generated set in ``fakes`` against ``real``; videos ``(N, 3, T, H, W)`` in [0, 1],
        the predicted frames only (LPIPS pairs frames, FID pools all frames); ``first (N, 3, k, H, W)``:
        conditioning frames, prepended to both sides for FVD only. ``batch_size``: frames per
        forward pass (LPIPS, FID); FVD takes ``max(1, 4 * batch_size // clip length)`` clips at a time.
        8 keeps LPIPS's activations small (32 frames per pass peak 170 MB higher and are no faster);
        I3D gets 3 clips of 10 frames per pass (8% faster than one clip at a time, for 140 MB more;
        measured on 24 clips of 10 frames, one thread).

        Returns ``{name: {"lpips": float | str, "fid": ..., "fvd": ..., "conventions": {...}}}``."""
        for fake in fakes.values():
            if real.ndim != 5 or real.shape != fake.shape or real.shape[1] != 3:
                raise ValueError(f"expected real and generated videos (N, 3, T, H, W) of one shape, got "
                                 f"{tuple(real.shape)} and {tuple(fake.shape)}")
        k = 0 if first is None else first.shape[2]
        conventions = self.conventions(real.shape[2], k)
        out = {name: {"conventions": dict(conventions)} for name in fakes}
        names = list(fakes)
        if isinstance(self.lpips, str):
            for name in names:
                out[name]["lpips"] = self.lpips
        else:
            per_frame = lpips_mod.lpips_per_frame_many(real, [fakes[n] for n in names], self.lpips, batch_size)
            for name, d in zip(names, per_frame):
                out[name]["lpips"] = float(d.mean())
        if isinstance(self.inception, str):
            for name in names:
                out[name]["fid"] = self.inception
        else:
            feats = lambda v: fid_mod.inception_features(fid_mod.frames_of(v), self.inception, batch_size)  # noqa: E731
            ref = self._cached("fid", lambda: feats(real), real)
            for name in names:
                gen = self._cached("fid", lambda: feats(fakes[name]), fakes[name])
                out[name]["fid"] = frechet_distance(ref, gen)
                out[name]["conventions"]["fid"] += f"; {ref.shape[0]} real and {gen.shape[0]} generated frames"
        if isinstance(self.i3d, str):
            for name in names:
                out[name]["fvd"] = self.i3d
        else:
            clips = max(1, 4 * batch_size // (real.shape[2] + k))  # 32 frames per I3D pass: 8% faster than one clip
            feats = lambda v: fvd_mod.i3d_features(fvd_mod.clips_of(v, first), self.i3d, clips)  # noqa: E731
            metric = f"fvd-{self.i3d.kind}-{self.i3d.output}"
            ref = self._cached(metric, lambda: feats(real), real, first)
            for name in names:
                gen = self._cached(metric, lambda: feats(fakes[name]), fakes[name], first)
                out[name]["fvd"] = frechet_distance(ref, gen)
                out[name]["conventions"]["fvd"] += f"; {real.shape[0]} real and {real.shape[0]} generated clips"
        return out


def release_loaded() -> None:
    """Drop what ``Perceptual.load`` keeps for the process (networks and features), e.g. before a
    stage that needs the memory more; the next ``load`` reads the files again."""
    _LOADED.clear()


def _files_read(weights_dir: str | os.PathLike | None) -> tuple:
    """What ``Perceptual.load`` reads: the weights folder (its "n/a" messages name it, so two empty
    folders are not the same load), (path, size, mtime_ns) of each of its files and of each packaged
    file, and the names of the packaged files that are missing."""
    folder = resolve_dir(weights_dir).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    missing = []
    for name in ("lpips", "i3d"):
        try:
            files.append(packaged.locate(name))
        except FileNotFoundError:
            missing.append(name)
    stats = []
    for f in files:
        with contextlib.suppress(OSError):  # gone meanwhile: then it is not read either
            st = f.stat()
            stats.append((str(f), st.st_size, st.st_mtime_ns))
    return str(folder), tuple(stats), tuple(missing)


def perceptual_metrics(real: torch.Tensor, fake: torch.Tensor, first: torch.Tensor | None = None,
                       weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                       batch_size: int = 8, check: bool = True,
                       fvd_output: str = fvd_mod.DEFAULT_OUTPUT) -> dict:
    """LPIPS, FID and FVD of one generated set against the ground truth (see ``Perceptual.score``).

    Returns ``{"lpips": float | str, "fid": float | str, "fvd": float | str,
    "conventions": {"lpips": str, "fid": str, "fvd": str}}``; a string value is "n/a (why)".
    """
    nets = Perceptual.load(weights_dir, device, check, fvd_output)
    return nets.score(real, {"": fake}, first, batch_size)[""]
