"""The spatio-temporal 3D UNet: shapes, conditioning, input checks, and the paper's sizes."""

import pytest
import torch

from avid.nn import UNet3D, UNetConfig, count_parameters
from tests.conftest import TINY_UNET


def tiny(**kw):
    torch.manual_seed(0)
    return UNet3D(UNetConfig(**{**TINY_UNET, "in_channels": 9, "out_channels": 4, "num_steps": 20, **kw}))


@pytest.mark.parametrize("patch,kernel", [(1, 3), (2, 1), (4, 3)])
def test_output_shape(patch, kernel):
    net = tiny(patch_size=patch, temporal_kernel=kernel, action_kind="discrete", num_actions=5)
    x = torch.randn(2, 9, 3, 16, 16)
    out = net(x, torch.tensor([0, 19]), torch.tensor([[0, 1, 4], [2, 3, 0]]))
    assert out.shape == (2, 4, 3, 16, 16)


def test_film_scales_and_shifts_each_frame_by_its_own_conditioning():
    from avid.nn.blocks import FiLM

    torch.manual_seed(0)
    film = FiLM(cond_dim=6, channels=4)
    h = torch.randn(2, 4, 3, 5, 5)
    cond = torch.randn(2, 3, 6)
    other = cond.clone()
    other[:, 1] += 1.0
    diff = (film(h, cond) - film(h, other)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[1] > 1e-3 and diff[0] == 0 and diff[2] == 0
    scale, shift = film.proj(cond).chunk(2, dim=-1)
    want = h * (1 + scale.permute(0, 2, 1)[..., None, None]) + shift.permute(0, 2, 1)[..., None, None]
    assert torch.allclose(film(h, cond), want, atol=1e-6)


def test_actions_and_steps_change_the_output():
    net = tiny(action_kind="discrete", num_actions=5)
    x, i = torch.randn(1, 9, 3, 16, 16), torch.tensor([5])
    a, b = torch.tensor([[1, 1, 1]]), torch.tensor([[1, 4, 1]])
    out = net(x, i, a)
    assert not torch.allclose(out, net(x, i, b))
    assert not torch.allclose(out, net(x, torch.tensor([6]), a))


def test_continuous_actions_and_null_action():
    net = tiny(action_kind="continuous", num_actions=7)
    x, i = torch.randn(2, 9, 3, 16, 16), torch.tensor([1, 2])
    a = torch.randn(2, 3, 7)
    with_a = net(x, i, a)
    null = net(x, i, None)
    dropped = net(x, i, a, drop=torch.tensor([True, False]))
    assert torch.allclose(dropped[0], null[0], atol=1e-6) and torch.allclose(dropped[1], with_a[1], atol=1e-6)


def test_bad_inputs_fail_clearly():
    net = tiny(action_kind="discrete", num_actions=5, patch_size=2)
    x, i = torch.randn(1, 9, 3, 16, 16), torch.tensor([0])
    with pytest.raises(ValueError, match=r"expected input \(B, 9"):
        net(torch.randn(1, 6, 3, 16, 16), i)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 9, 3, 18, 18), i)
    with pytest.raises(ValueError, match=r"lie in \[0, 5\)"):
        net(x, i, torch.tensor([[0, 5, 1]]))
    with pytest.raises(ValueError, match="integer actions of shape"):
        net(x, i, torch.tensor([[0, 1]]))


@pytest.mark.parametrize("size,target,options", [
    ("22m", 22e6, dict(base_channels=50, attn_heads=4, attn_head_dim=50, cond_dim=200)),
    ("71m", 71e6, dict(base_channels=90, attn_heads=6, attn_head_dim=50, cond_dim=360)),
])
def test_paper_adapter_sizes_within_5_percent(size, target, options):
    """Table 8: AVID adapters of 22M and 71M (input: x_i, out_pre, 2 first frames; output c+1)."""
    import yaml

    from avid.checkpoint import REPO_ROOT

    preset = yaml.safe_load((REPO_ROOT / f"configs/unet/paper-{size}.yaml").read_text())
    assert {k: preset[k] for k in options} == options
    n = count_parameters(UNet3D(UNetConfig(in_channels=12, out_channels=4, action_kind="discrete", **preset)))
    assert abs(n - target) / target < 0.05


def test_paper_base_size_within_5_percent():
    import yaml

    from avid.checkpoint import REPO_ROOT

    preset = yaml.safe_load((REPO_ROOT / "configs/unet/paper-97m.yaml").read_text())
    n = count_parameters(UNet3D(UNetConfig(in_channels=9, out_channels=3, action_kind="none", **preset)))
    assert abs(n - 97e6) / 97e6 < 0.05


def test_the_paper_base_training_config_uses_the_paper_base_network():
    import yaml

    from avid.checkpoint import REPO_ROOT
    from avid.config import load_run_config

    preset = yaml.safe_load((REPO_ROOT / "configs/unet/paper-97m.yaml").read_text())
    cfg = load_run_config(REPO_ROOT / "configs/procgen/base-paper.yaml")
    assert cfg.method.name == "pretrain" and cfg.base is None and cfg.method.options["unet"] == preset
    assert (cfg.train.batch_size, cfg.train.lr) == (64, 1e-4)  # paper Table 8
