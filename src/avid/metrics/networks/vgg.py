"""VGG16's convolutional part (Simonyan & Zisserman 2015) with torchvision's key layout.

``features`` is the ``nn.Sequential`` of torchvision's ``vgg16().features``: 13 3x3 convs with
ReLU, 5 max-pools, indices 0..30, so ``features.0.weight`` ... ``features.28.bias`` load directly
from torchvision's ``vgg16-397923af.pth`` (whose ``classifier.*`` tensors are not needed here).
"""

from __future__ import annotations

import torch
from torch import nn

# channels per conv, "M" = 2x2 max-pool (torchvision's configuration "D")
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = outputs of features[:4], [4:9], ...
TAPS = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x (N, 3, H, W)`` (ImageNet-normalised by the caller) -> the 5 relu taps, the k-th
        ``(N, CHANNELS[k], H / 2^k, W / 2^k)``."""
        taps, start = [], 0
        for stop in TAPS:
            for layer in self.features[start:stop]:
                x = layer(x)
            taps.append(x)
            start = stop
        return taps
