"""AVID and the black-box door: the paper's identities (section 3.3) and the no-access guarantee."""

import copy

import pytest
import torch

from avid.blackbox import open_denoiser
from avid.data import Batch
from avid.diffusion import Diffusion
from avid.methods import Context, build_method
from avid.nn import with_first_frames
from avid.whitebox import load_base_model
from tests.conftest import K, SIZE, TINY_UNET


def ctx_for(denoiser):
    return Context(diffusion=Diffusion(denoiser.spec.diffusion), channels=3, cond_frames=K,
                   action_kind="discrete", num_actions=5, base=denoiser)


def inputs(b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_i = torch.randn(b, 3, t, SIZE, SIZE, generator=g)
    first = torch.rand(b, 3, K, SIZE, SIZE, generator=g) * 2 - 1
    return x_i, torch.tensor([3, 17][:b]), first, torch.randint(0, 5, (b, t), generator=g)


def test_mask_starts_at_one_half_everywhere(tiny_denoiser):
    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    x_i, i, first, a = inputs()
    final, extras = avid.predict(x_i, i, first, a)
    assert torch.all(extras["mask"] == 0.5)
    out_pre = tiny_denoiser(x_i, i, first)
    out = avid.adapter(torch.cat([x_i, out_pre, first.flatten(1, 2)[:, :, None].expand(-1, -1, 4, -1, -1)], 1), i, a)
    assert torch.allclose(final, 0.5 * out_pre + 0.5 * out[:, :3], atol=1e-5)  # eq. 5 with m = 0.5


def test_no_mask_equals_the_base_at_initialisation(tiny_denoiser):
    nm = build_method("avid-no-mask", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    x_i, i, first, a = inputs()
    final, _ = nm.predict(x_i, i, first, a)
    assert torch.equal(final, tiny_denoiser(x_i, i, first))


def test_no_conditioning_adapter_does_not_read_the_base_output(tiny_denoiser):
    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    nc = build_method("avid-no-cond", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    assert avid.adapter.cfg.in_channels == 3 * (2 + K) and nc.adapter.cfg.in_channels == 3 * (1 + K)


def test_adapter_training_leaves_the_base_bit_identical_and_builds_no_graph_through_it(tiny_base):
    base_net, _ = load_base_model(tiny_base)
    before = copy.deepcopy(base_net.state_dict())
    denoiser = open_denoiser(tiny_base, precision="fp32")
    avid = build_method("avid", ctx_for(denoiser), {"unet": TINY_UNET})
    x_i, i, first, a = inputs()
    out_pre = denoiser(x_i.requires_grad_(), i, first)
    assert out_pre.grad_fn is None and not out_pre.requires_grad
    opt = torch.optim.AdamW(avid.parameters(), lr=1e-2)
    for step in range(3):
        loss, logs = avid.loss(Batch(first, torch.rand(2, 3, 4, SIZE, SIZE) * 2 - 1, a))
        loss.backward()
        opt.step()
        opt.zero_grad()
    after, _ = load_base_model(tiny_base)
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())
    assert denoiser.calls >= 4 and 0 < logs["mask_mean"] < 1


def test_the_black_box_is_shared_not_copied_and_cannot_be_pickled(tiny_base):
    denoiser = open_denoiser(tiny_base, precision="fp32")
    avid = build_method("avid", ctx_for(denoiser), {"unet": TINY_UNET})
    assert sum(p.numel() for p in avid.parameters()) == sum(p.numel() for p in avid.adapter.parameters()) + 2
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(denoiser)
    assert copy.deepcopy(denoiser) is denoiser  # EMA copies share the black box
    assert copy.deepcopy(avid).base is denoiser


def test_black_box_rejects_wrong_shapes(tiny_denoiser):
    x_i, i, first, _ = inputs()
    with pytest.raises(ValueError, match="expects x_i"):
        tiny_denoiser(torch.randn(2, 3, 4, 32, 32), i, first)
    with pytest.raises(ValueError, match="first frames"):
        tiny_denoiser(x_i, i, first[:, :, :1])
    with pytest.raises(ValueError, match="diffusion steps"):
        tiny_denoiser(x_i, torch.tensor([0, 99]), first)


def test_methods_reject_actions_of_another_space(tiny_denoiser):
    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET})
    x_i, i, first, _ = inputs()
    with pytest.raises(ValueError, match=r"lie in \[0, 5\)"):
        avid.predict(x_i, i, first, torch.full((2, 4), 7))
    with pytest.raises(ValueError, match="integer actions"):
        avid.predict(x_i, i, first, torch.randn(2, 4, 7))


def test_opening_something_that_is_not_a_base_model_fails(tmp_path, tiny_base):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="no model"):
        open_denoiser(tmp_path / "x")
    text = (tiny_base / "config.yaml").read_text().replace("avid-base-model", "avid-method")
    (tiny_base / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="not a base model"):
        open_denoiser(tiny_base)


def test_a_residual_adapter_starts_halfway_between_the_base_and_nothing_moves(tiny_denoiser):
    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True})
    x_i, i, first, a = inputs()
    final, extras = avid.predict(x_i, i, first, a)
    still = first[:, :, -1:].expand_as(x_i)  # x0 parameterisation: "nothing moves" is the last frame
    assert torch.all(extras["mask"] == 0.5)
    assert torch.allclose(final, 0.5 * tiny_denoiser(x_i, i, first) + 0.5 * still, atol=1e-5)
    with pytest.raises(ValueError, match="no-mask"):
        build_method("avid-no-mask", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True})


def test_the_motion_path_moves_the_last_frame_by_the_adapters_flow(tiny_denoiser):
    from avid.methods.avid import FLOW_SCALE

    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "motion": True})
    x_i, i, first, a = inputs()
    final, extras = avid.predict(x_i, i, first, a)  # flow and change start at zero: "nothing moves"
    still = first[:, :, -1:].expand_as(x_i)
    assert torch.allclose(final, 0.5 * tiny_denoiser(x_i, i, first) + 0.5 * still, atol=1e-5)
    final.pow(2).mean().backward()  # the flow channels (zero at the start) get gradients through the warp
    head = avid.adapter.head[-1].weight.grad
    p2 = avid.adapter.cfg.patch_size ** 2
    assert head[3 * p2:5 * p2].abs().sum() > 0

    class Fixed(torch.nn.Module):  # the adapter's outputs: no change, flow 1 px right / 2 px up, any mask logit
        cfg = avid.adapter.cfg

        def forward(self, x, i, actions):
            out = torch.zeros(x.shape[0], 6, *x.shape[2:])
            out[:, 3], out[:, 4] = 1 / FLOW_SCALE, -2 / FLOW_SCALE
            return out

    avid.adapter = Fixed()
    with torch.no_grad():
        avid.mask_head.bias.fill_(-30.0)  # m = 0: the adapter's own prediction alone
        final, _ = avid.predict(x_i, i, first, a)
    last = first[:, :, -1]
    assert torch.allclose(final[..., :-2, 1:], last[:, :, None, 2:, :-1].expand_as(final[..., :-2, 1:]), atol=1e-5)
    with pytest.raises(ValueError, match="needs residual=True"):
        build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "motion": True})


def test_warp_frame_moves_pixels_by_the_flow():
    from avid.nn import warp_frame

    frame = torch.zeros(1, 1, 8, 8)
    frame[0, 0, 2, 3] = 1
    flow = torch.zeros(1, 2, 3, 8, 8)
    flow[:, 0, 1], flow[:, 1, 1] = 2, 1  # frame 1: 2 px right, 1 down
    flow[:, 0, 2] = 0.5  # frame 2: half a pixel right, shared bilinearly
    out = warp_frame(frame, flow)
    assert torch.equal(out[0, 0, 0], frame[0, 0])  # zero flow: the frame itself
    assert out[0, 0, 1].nonzero().tolist() == [[3, 5]]
    assert out[0, 0, 2, 2, 3] == pytest.approx(0.5) and out[0, 0, 2, 2, 4] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="flow must be"):
        warp_frame(frame, torch.zeros(1, 3, 2, 8, 8))


def test_a_residual_adapters_mask_can_learn_where_and_when_to_trust_the_base(tiny_denoiser):
    # Two zero-initialised layers in series (the mask logit channel, then the mask head) would give
    # each other zero gradients: the mask could only learn its bias, one constant for every pixel,
    # frame and diffusion step. The residual adapter zeroes only its prediction channels.
    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True})
    x_i, i, first, a = inputs()
    final, extras = avid.predict(x_i, i, first, a)
    assert torch.all(extras["mask"] == 0.5)
    final.pow(2).mean().backward()
    assert avid.mask_head.weight.grad.abs().item() > 0
    out = avid.adapter(with_first_frames(x_i, tiny_denoiser(x_i, i, first), first=first), i, a)
    assert torch.all(out[:, :3] == 0) and out[:, 3].abs().max() > 0
