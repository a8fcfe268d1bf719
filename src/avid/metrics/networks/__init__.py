"""The standard networks of the distribution and perceptual metrics, in plain PyTorch, with the
state-dict key layouts of the published weight files (see ``avid.metrics.weights``)."""

from avid.metrics.networks.i3d import InceptionI3d
from avid.metrics.networks.inception import FIDInceptionV3
from avid.metrics.networks.vgg import VGG16Features

__all__ = ["FIDInceptionV3", "InceptionI3d", "VGG16Features"]
