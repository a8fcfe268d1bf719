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


def _preset(name):
    import yaml

    from avid.checkpoint import REPO_ROOT

    return yaml.safe_load((REPO_ROOT / f"configs/unet/{name}.yaml").read_text())


# Table 8 side by side with the official configs' Unet3D arguments (dim, attn_heads, attn_dim_head)
@pytest.mark.parametrize("size,target,official,layout", [
    ("22m", 22e6, dict(base_channels=50, attn_heads=4, attn_head_dim=50), dict(in_channels=12, out_channels=4, action_kind="discrete")),
    ("71m", 71e6, dict(base_channels=90, attn_heads=6, attn_head_dim=50), dict(in_channels=12, out_channels=4, action_kind="discrete")),
    ("97m", 97e6, dict(base_channels=100, attn_heads=8, attn_head_dim=64), dict(in_channels=9, out_channels=3, action_kind="none")),
])
def test_paper_presets_are_unet3d_with_table_8_parameter_counts_within_5_percent(size, target, official, layout):
    """Adapters (in: x_i, out_pre, 2 first frames; out: c + 1) and the base (in: x_i, 2 first
    frames; out: c) at the official widths: Unet3D's blocks, linear spatial attention at every
    level, channel multipliers 1, 2, 4, 8, two residual blocks per level."""
    preset = _preset(f"paper-{size}")
    assert {k: preset[k] for k in official} == official
    assert (preset["blocks"], preset["spatial_attn"], preset["channel_mults"], preset["num_res_blocks"],
            preset["attn_from_level"], preset["patch_size"]) == ("paper", "linear", [1, 2, 4, 8], 2, 0, 1)
    with torch.device("meta"):
        n = count_parameters(UNet3D(UNetConfig(**layout, **preset)))
    assert abs(n - target) / target < 0.05


def paper_tiny(**kw):
    return tiny(blocks="paper", spatial_attn="linear", attn_from_level=0, num_res_blocks=2, patch_size=1,
                temporal_kernel=1, **kw)


def test_paper_blocks_have_linear_spatial_attention_per_level_and_full_attention_in_the_middle():
    from avid.nn.attention import Attention, LinearAttention

    net = paper_tiny(action_kind="discrete", num_actions=5)
    for level in [*net.down, *net.up]:
        space, time = level["attn"]
        assert isinstance(space, LinearAttention) and (time.axis, time.rotary.dim) == ("time", 8)
    assert isinstance(net.mid[1], Attention) and net.mid[1].axis == "space" and net.mid[2].axis == "time"
    assert net.stem.kernel_size == (1, 7, 7) and net.stem_attn.axis == "time"
    assert [len(level["res"]) for level in net.down] == [2, 2]
    x, i, a = torch.randn(2, 9, 3, 16, 16), torch.tensor([0, 19]), torch.tensor([[0, 1, 4], [2, 3, 0]])
    h, skips = net.encode(x, net.embed(i, a, 3))
    assert [s.shape[1] for s in skips] == net.cfg.skip_widths == [8, 8, 16]  # the stem's, then one per level
    out = net(x, i, a)
    assert out.shape == (2, 4, 3, 16, 16)
    with torch.no_grad():  # the shared relative position bias reaches the output
        net.time_bias.table.weight.normal_()
    assert not torch.allclose(out, net(x, i, a))


def test_linear_attention_is_efficient_attention():
    """out = sum_n softmax_n(k)[d, n] v[e, n] softmax_d(q)[d, m] / sqrt(d), per head and frame."""
    from avid.nn.attention import LinearAttention

    torch.manual_seed(0)
    attn = LinearAttention(6, heads=2, head_dim=4, norm=torch.nn.Identity())
    x = torch.randn(1, 6, 2, 3, 5)
    tokens = x.permute(0, 2, 3, 4, 1).reshape(2, 15, 6)  # (frames, pixels, channels)
    q, k, v = attn.qkv(tokens).reshape(2, 15, 3, 2, 4).unbind(2)  # (frames, pixels, heads, d)
    q, k = q.softmax(-1) / 2, k.softmax(1)
    o = torch.einsum("fnhd,fnhe,fmhd->fmhe", k, v, q).reshape(2, 15, 8)
    want = x + attn.out(o).reshape(1, 2, 3, 5, 6).permute(0, 4, 1, 2, 3)
    assert torch.allclose(attn(x), want, atol=1e-5)


def test_relative_position_bias_buckets_offsets_as_t5():
    from avid.nn.attention import RelativePositionBias

    bias = RelativePositionBias(heads=2, buckets=32, max_distance=32)
    offsets = torch.tensor([0, 1, 7, -1, -7, 8, 16, 31, 100, -100])
    assert bias.bucket(offsets).tolist() == [0, 17, 23, 1, 7, 24, 28, 31, 31, 15]
    b = bias(5)
    assert b.shape == (2, 5, 5) and torch.equal(b[:, 0, 1], b[:, 3, 4]) and not torch.equal(b[:, 0, 1], b[:, 1, 0])


def test_rotary_scores_depend_only_on_the_frame_offset():
    from avid.nn.attention import Rotary

    rot = Rotary(4)
    q, k = torch.randn(6), torch.randn(6)
    seq = lambda v: rot(v.expand(1, 8, 6))[0]  # noqa: E731  the same vector at every position
    rq, rk = seq(q), seq(k)
    assert torch.allclose(rq[2] @ rk[5], rq[0] @ rk[3], atol=1e-5) and not torch.allclose(rq[2] @ rk[5], rq[2] @ rk[4])
    assert torch.equal(rq[:, 4:], q[4:].expand(8, 2))  # features past the rotary dimension pass unchanged


def test_the_cpu_layout_and_the_shipped_base_give_the_outputs_they_gave_before_the_paper_blocks():
    """Reference values recorded with the network code before the paper blocks were added."""
    from avid.whitebox import load_base_model

    net, _ = load_base_model("assets/base-procgen")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = net(torch.randn(1, 9, 4, 64, 64, generator=g), torch.tensor([100]))
    got = [out.mean(), out.abs().mean(), out[0, 1, 2, 30, 40], out[0, 2, 3, 5, 60]]
    assert torch.allclose(torch.stack(got), torch.tensor([-0.000938, 0.031516, -0.037676, -0.02984]), atol=2e-6)
    torch.manual_seed(0)
    small = UNet3D(UNetConfig(in_channels=12, out_channels=4, action_kind="discrete", **_preset("cpu-small")))
    with torch.no_grad():
        out = small(torch.randn(1, 12, 4, 32, 32, generator=g), torch.tensor([100]), torch.tensor([[1, 2, 3, 4]]))
    got = [out.mean(), out.abs().mean(), out[0, 1, 2, 10, 20], out[0, 3, 3, 5, 30]]
    assert torch.allclose(torch.stack(got), torch.tensor([0.01695, 0.296213, 0.559492, 0.171068]), atol=2e-6)


def test_the_paper_base_training_config_uses_the_paper_base_network():
    import yaml

    from avid.checkpoint import REPO_ROOT
    from avid.config import load_run_config

    preset = yaml.safe_load((REPO_ROOT / "configs/unet/paper-97m.yaml").read_text())
    cfg = load_run_config(REPO_ROOT / "configs/procgen/base-paper.yaml")
    assert cfg.method.name == "pretrain" and cfg.base is None and cfg.method.options["unet"] == preset
    assert (cfg.train.batch_size, cfg.train.lr) == (64, 1e-4)  # paper Table 8


def test_compiled_and_channels_last_networks_keep_their_parameter_names_and_outputs():
    from avid.nn import tune_networks

    net, other = paper_tiny(action_kind="discrete", num_actions=5), paper_tiny(action_kind="discrete", num_actions=5)
    x, i, a = torch.randn(1, 9, 3, 16, 16), torch.tensor([4]), torch.tensor([[0, 1, 4]])
    want = net(x, i, a)
    holder = torch.nn.ModuleDict({"adapter": net, "other": other})
    assert tune_networks(holder, compile=True, channels_last=True, backend="eager") == 2
    assert net._compiled_call_impl is not None and net.channels_last
    assert net.stem.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert set(holder.state_dict()) == {f"adapter.{k}" for k in net.state_dict()} | {f"other.{k}" for k in other.state_dict()}
    assert "_orig_mod" not in "".join(holder.state_dict())
    assert torch.allclose(net(x, i, a), want, atol=1e-5)


@pytest.mark.parametrize("kind, n", [("continuous", 7), ("discrete", 15)])
def test_action_history_gives_each_frame_the_actions_before_it_and_none_after(kind, n):
    """``action_history``: frame t's conditioning depends on the actions 0..t (their running sum), never
    on later ones; without it, on frame t's own action alone. It starts at zero: the plain embedding."""
    from avid.nn.unet import Conditioning

    torch.manual_seed(0)
    t = 6
    plain = Conditioning(UNetConfig(**{**TINY_UNET, "action_kind": kind, "num_actions": n}))
    hist = Conditioning(UNetConfig(**{**TINY_UNET, "action_kind": kind, "num_actions": n, "action_history": True}))
    hist.load_state_dict({**plain.state_dict(), **{k: v for k, v in hist.state_dict().items() if "history" in k}})
    i = torch.tensor([5])
    a = torch.rand(1, t, n) * 2 - 1 if kind == "continuous" else torch.randint(0, n, (1, t))
    assert torch.allclose(hist(i, a, t), plain(i, a, t))  # zero-initialised: the plain embedding
    with torch.no_grad():
        hist.history.weight.normal_()
    b = a.clone()
    b[:, 2] = -a[:, 2] if kind == "continuous" else (a[:, 2] + 1) % n  # change the action of frame 2
    changed = lambda net: (net(i, a, t) - net(i, b, t)).abs().amax(dim=(0, 2)) > 1e-6  # noqa: E731
    assert changed(plain).tolist() == [False, False, True, False, False, False]
    assert changed(hist).tolist() == [False, False, True, True, True, True]
