"""Frame metrics: SSIM per predicted frame, computed in chunks so 1024 trajectories fit in memory."""

import torch

from avid.metrics.frames import frame_metrics, ssim_per_frame


def test_ssim_in_chunks_equals_ssim_at_once_and_identical_frames_score_one():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 5, 32, 32, generator=g)
    fake = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    assert torch.equal(ssim_per_frame(real, fake, chunk=3), ssim_per_frame(real, fake, chunk=1000))
    assert ssim_per_frame(real, fake).shape == (10,)
    assert frame_metrics(real, real.clone())["ssim"] == 1.0
