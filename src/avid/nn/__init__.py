"""Networks: the spatio-temporal 3D UNet and its size presets."""

from avid.nn.unet import UNet3D, UNetConfig, count_parameters, tune_networks, with_first_frames, zero_module

__all__ = ["UNet3D", "UNetConfig", "count_parameters", "tune_networks", "with_first_frames", "zero_module"]
