"""Metrics: frame metrics, perceptual and distribution metrics, action error ratio, tables."""

from avid.metrics.frames import (PSNR_CAP, against_copy_last, frame_metrics, per_trajectory, psnr_per_frame,
                                 ssim_per_frame)

__all__ = ["PSNR_CAP", "against_copy_last", "frame_metrics", "per_trajectory", "psnr_per_frame", "ssim_per_frame"]
