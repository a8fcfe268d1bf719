"""The default local backend: the base network in a worker process, answering exactly as the
network does in-process; shared, closable, and failing clearly when its process dies."""

import os
import signal

import pytest
import torch
import yaml

from avid.blackbox import open_denoiser
from avid.blackbox.provider import open_provider
from avid.diffusion import Diffusion
from tests.conftest import K, SIZE, make_base


def inputs(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, t, SIZE, SIZE, generator=g), torch.randint(0, 20, (b,), generator=g),
            torch.rand(b, 3, K, SIZE, SIZE, generator=g) * 2 - 1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_worker_answers_exactly_as_the_network_in_process_at_every_batch_size(tiny_base, precision):
    worker, local = open_denoiser(tiny_base, precision=precision), open_provider(tiny_base, precision=precision)
    for b, t in [(1, 4), (3, 6), (2, 4), (8, 8)]:  # the shared block grows, and is reused
        q = inputs(b, t, seed=b)
        assert torch.equal(worker(*q), local.denoise(*q))
    assert worker.stats.calls == 4 and worker.stats.frames == 4 + 18 + 8 + 64
    assert worker.stats.bytes_received == 4 * 3 * SIZE * SIZE * (4 + 18 + 8 + 64)


def test_a_residual_base_model_predicts_the_last_frame_plus_its_network_output(tmp_path):
    folder = make_base(tmp_path / "base")
    plain = open_provider(folder, precision="fp32")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**cfg, "residual": True}))
    residual = open_denoiser(folder, precision="fp32")
    x_i, i, first = inputs(2, 4)
    hold = Diffusion(residual.spec.diffusion).hold_last(first, x_i, i)
    assert torch.allclose(residual(x_i, i, first), plain.denoise(x_i, i, first) + hold, atol=1e-6)


def test_opening_a_model_twice_shares_one_worker_until_it_is_closed(tiny_base):
    a = open_denoiser(tiny_base, precision="fp32")
    assert open_denoiser(tiny_base, precision="fp32") is a
    assert open_denoiser(tiny_base, precision="bf16") is not a
    a.close()
    with pytest.raises(RuntimeError, match="closed"):
        a(*inputs(1, 4))
    b = open_denoiser(tiny_base, precision="fp32")
    assert b is not a and b(*inputs(1, 4)).shape == (1, 3, 4, SIZE, SIZE)


def test_a_dead_worker_gives_a_clear_error(tiny_base):
    denoiser = open_denoiser(tiny_base, precision="fp32", threads=1)
    os.kill(denoiser._Denoiser__backend._proc.pid, signal.SIGKILL)  # the test reaches in, on purpose
    with pytest.raises(RuntimeError, match="worker process exited"):
        denoiser(*inputs(1, 4))
    assert denoiser.closed and open_denoiser(tiny_base, precision="fp32", threads=1) is not denoiser  # opened anew


def test_bad_precision_and_bad_folders_fail_clearly(tmp_path, tiny_base):
    with pytest.raises(ValueError, match="precision"):
        open_denoiser(tiny_base, precision="fp8")
    with pytest.raises(FileNotFoundError, match="no model"):
        open_denoiser(tmp_path)
