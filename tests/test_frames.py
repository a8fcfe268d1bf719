"""Frame metrics: SSIM per predicted frame, computed in chunks so 1024 trajectories fit in memory."""

import pytest
import torch

from avid.metrics.frames import against_copy_last, frame_metrics, psnr_per_frame, ssim_per_frame


def test_ssim_in_chunks_equals_ssim_at_once_and_identical_frames_score_one():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 5, 32, 32, generator=g)
    fake = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    assert torch.equal(ssim_per_frame(real, fake, chunk=3), ssim_per_frame(real, fake, chunk=1000))
    assert ssim_per_frame(real, fake).shape == (10,)
    assert frame_metrics(real, real.clone())["ssim"] == 1.0


def test_against_copy_last_separates_the_still_frames_the_baseline_gets_exactly():
    last = torch.full((1, 3, 1, 4, 4), 0.5)
    real = torch.cat([last, last + 0.1, last - 0.2], dim=2)  # frame 0 still, frames 1 and 2 moved
    copy = last.expand_as(real)
    near = real + torch.tensor([0.01, 0.01, 0.3]).view(1, 1, 3, 1, 1)  # better than copy on frame 1 only
    split = against_copy_last(real, {"m": near}, copy)
    assert split["still_frames"] == pytest.approx(1 / 3)
    moving_psnr = psnr_per_frame(real, near)[1:].mean()
    assert split["psnr_moving"]["m"] == pytest.approx(float(moving_psnr))
    assert split["psnr_moving"]["copy"] == pytest.approx(float(psnr_per_frame(real, copy)[1:].mean()))
    assert split["beats_copy_last"]["m"] == pytest.approx(1 / 3)  # frame 0: copy is exact, frame 2: worse


def test_psnr_against_copy_last_is_paired_over_trajectories():
    """``psnr_vs_copy``: the mean over trajectories of (method's PSNR - copy-last's), each trajectory's
    frames kept together, with a paired bootstrap interval: a method better on every trajectory has an
    interval above zero even when the trajectories' own PSNRs spread far more than the gain."""
    g = torch.Generator().manual_seed(0)
    real = torch.rand(12, 3, 4, 8, 8, generator=g)
    noise = torch.linspace(0.02, 0.3, 12).view(12, 1, 1, 1, 1)  # trajectories from easy to hard
    copy = real + noise * torch.randn(real.shape, generator=g)
    better = real + 0.8 * (copy - real)  # 20% less error on every trajectory: +1.9 dB each
    split = against_copy_last(real, {"better": better, "same": copy.clone()}, copy)
    d, lo, hi = split["psnr_vs_copy"]["better"]
    per = (psnr_per_frame(real, better) - psnr_per_frame(real, copy)).view(12, 4).mean(1)
    assert d == pytest.approx(float(per.mean())) and d == pytest.approx(-20 * torch.log10(torch.tensor(0.8)).item(), abs=1e-3)
    assert 0 < lo <= d <= hi
    assert split["psnr_vs_copy"]["same"] == [0.0, 0.0, 0.0]
