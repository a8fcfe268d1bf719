"""Networks: the spatio-temporal 3D UNet and its size presets."""

from avid.nn.unet import UNet3D, UNetConfig, count_parameters, tune_networks, with_first_frames, zero_module
from avid.nn.residual import SHIFT_LOGIT_SCALE, SHIFT_PRIOR, ResidualOutput, ShiftPath
from avid.nn.warp import best_shifts, shift_frame, warp_frame

__all__ = ["SHIFT_LOGIT_SCALE", "SHIFT_PRIOR", "ResidualOutput", "ShiftPath", "UNet3D", "UNetConfig", "best_shifts", "count_parameters", "shift_frame", "tune_networks", "warp_frame", "with_first_frames", "zero_module"]
