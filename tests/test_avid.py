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
    in_x0 = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True,
                                                           "residual_change": "x0"})
    in_x0.load_state_dict(avid.state_dict())  # x0 parameterisation: both ways of adding the change agree
    assert torch.allclose(in_x0.predict(x_i, i, first, a)[0], final, atol=1e-6)
    with pytest.raises(ValueError, match="residual_change must be one of"):
        build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "residual_change": "v"})


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


def test_shift_frame_moves_the_whole_frame_by_a_distribution_over_integer_shifts():
    from avid.nn import shift_frame

    g = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 3, 8, 8, generator=g)
    p_y, p_x = torch.zeros(2, 3, 5), torch.zeros(2, 3, 5)  # radius 2: index 2 is "no move"
    p_y[:, 0, 2] = p_x[:, 0, 2] = 1  # frame 0: still
    p_y[:, 1, 3], p_x[:, 1, 0] = 1, 1  # frame 1: 1 px down, 2 px left
    p_y[:, 2, 2], p_x[:, 2, 2], p_x[:, 2, 4] = 1, 0.25, 0.75  # frame 2: a quarter still, three quarters 2 px right
    out = shift_frame(frame, p_y, p_x)
    assert out.shape == (2, 3, 3, 8, 8)
    assert torch.allclose(out[:, :, 0], frame, atol=1e-6)
    rows, cols = (torch.arange(8) - 1).clamp(0, 7), (torch.arange(8) + 2).clamp(0, 7)  # borders repeated
    assert torch.allclose(out[:, :, 1], frame[:, :, rows][..., cols], atol=1e-6)
    right = frame[..., (torch.arange(8) - 2).clamp(0, 7)]
    assert torch.allclose(out[:, :, 2], 0.25 * frame + 0.75 * right, atol=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        shift_frame(frame, torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_the_shift_motion_path_starts_near_still_and_learns_a_camera_move(tiny_denoiser):
    """``motion="shift"``: logits averaged over the adapter's pixels pick a whole-frame shift per
    frame; at the start the prior keeps most mass on "no move", and the shift logits get gradients
    that prefer the shift the target shows, even where a bilinear flow's gradient would be zero."""
    from avid.methods.avid import SHIFT_PRIOR

    avid = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "motion": "shift",
                                                         "shift_radius": 3})
    x_i, i, first, a = inputs()
    with torch.no_grad():
        avid.mask_head.bias.fill_(-30.0)  # m = 0: the adapter's own prediction alone
    final, _ = avid.predict(x_i, i, first, a)
    p0 = 1 / (1 + 6 * torch.exp(torch.tensor(-SHIFT_PRIOR)))  # "no move" on one axis at the start
    moved_start = final  # x0-parameterised: the adapter's prediction is the moved last frame
    last = first[:, :, -1:].expand_as(final)
    assert (moved_start - last).abs().mean() < (1 - p0 ** 2) * 2  # mostly the last frame
    # a target that is the last frame moved 3 px down: the loss pulls the "3 down" logit up
    target = torch.cat([first[:, :, -1:, :1].expand(-1, -1, 1, 3, -1), first[:, :, -1:, :-3]], dim=3).expand_as(final)
    (final - target).pow(2).mean().backward()
    d, p2 = 7, avid.adapter.cfg.patch_size ** 2
    bias_grad = avid.adapter.head[-1].bias.grad.view(-1, p2).sum(1)  # per output channel
    y_grad = bias_grad[3:3 + d]  # the y logits, shifts -3 .. 3
    assert y_grad.argmin().item() == 6  # gradient descent raises the logit of the true shift most
    with pytest.raises(ValueError, match="motion must be"):
        build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "motion": "twist"})
    wide = build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "motion": "shift",
                                                         "shift_radius": [3, 1]})  # rows up to 3 px, columns 1
    final, extras = wide.predict(x_i, i, first, a)
    assert final.shape == x_i.shape and extras["shift_logits"].shape == (2, 4, 7 + 3)
    with pytest.raises(ValueError, match="shift_radius must be"):
        build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "motion": "shift",
                                                      "shift_radius": [3, 0]})


def test_best_shifts_finds_the_whole_frame_move_of_each_frame():
    from avid.nn import best_shifts, shift_frame

    g = torch.Generator().manual_seed(1)
    frame = torch.rand(3, 3, 12, 12, generator=g)
    ty, tx = torch.randint(0, 7, (3, 4), generator=g), torch.randint(0, 7, (3, 4), generator=g)
    p_y = torch.nn.functional.one_hot(ty, 7).float()
    p_x = torch.nn.functional.one_hot(tx, 7).float()
    video = shift_frame(frame, p_y, p_x) + 0.01 * torch.randn(3, 3, 4, 12, 12, generator=g)
    assert torch.equal(best_shifts(frame, video, 3), torch.stack([ty, tx], dim=-1))
    ty = torch.randint(0, 9, (3, 4), generator=g)  # rows up to 4 px, columns up to 1
    tx = torch.randint(0, 3, (3, 4), generator=g)
    p_y, p_x = torch.nn.functional.one_hot(ty, 9).float(), torch.nn.functional.one_hot(tx, 3).float()
    assert torch.equal(best_shifts(frame, shift_frame(frame, p_y, p_x), (4, 1)), torch.stack([ty, tx], dim=-1))
    # training runs under bf16 autocast: the search keeps float32 costs there (bf16 products picked
    # another shift for about 7% of real Coinrun frames). A bright, faint texture: the costs differ by
    # less than bf16's resolution of their size
    faint = 1 + 0.02 * frame
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(best_shifts(faint, shift_frame(faint, p_y, p_x), (4, 1)), torch.stack([ty, tx], dim=-1))


def test_the_shift_target_trains_the_shift_path_toward_the_videos_own_camera_move(tiny_denoiser):
    """``shift_target``: a cross-entropy of the shift distributions against ``best_shifts`` of the
    clean frames, added in training only (held-out losses leave it out)."""
    opts = {"unet": TINY_UNET, "residual": True, "motion": "shift", "shift_radius": 2}
    torch.manual_seed(0)
    plain = build_method("avid", ctx_for(tiny_denoiser), opts)
    torch.manual_seed(0)
    aux = build_method("avid", ctx_for(tiny_denoiser), {**opts, "shift_target": 0.5})
    x_i, i, first, a = inputs()
    x0 = first[:, :, -1:].roll(1, dims=-2).expand_as(x_i).clone()  # the last frame moved 1 px down (wrapped)
    batch = Batch(first=first, x0=x0, actions=a)
    torch.manual_seed(1)
    loss_plain, logs_plain = plain.loss(batch, i)
    torch.manual_seed(1)
    loss_aux, logs_aux = aux.loss(batch, i)
    assert "auxiliary" not in logs_plain and logs_aux["loss"] == pytest.approx(logs_plain["loss"], rel=1e-5)
    assert float(loss_aux.detach()) == pytest.approx(logs_aux["loss"] + logs_aux["auxiliary"], rel=1e-5)
    torch.manual_seed(1)
    held_out, logs = aux.loss(batch, i, auxiliary=False)
    assert "auxiliary" not in logs and float(held_out.detach()) == pytest.approx(float(loss_plain.detach()), rel=1e-5)
    loss_aux.backward()  # descending the cross-entropy raises the logit of the shift the frames show
    p2 = aux.adapter.cfg.patch_size ** 2
    y_grad = aux.adapter.head[-1].bias.grad.view(-1, p2).sum(1)[3:3 + 5]
    assert y_grad.argmin().item() == 3  # shifts -2 .. 2: index 3 is 1 px down
    with pytest.raises(ValueError, match="needs motion='shift'"):
        build_method("avid", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "shift_target": 0.1})


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


def test_a_saturated_gate_and_a_confident_no_move_reproduce_the_last_frame_exactly():
    """``avid.nn.ResidualOutput`` with a shift path and a gate: the change is scaled by the gate's
    sigmoid and added to the moved last frame, so a closed gate and a confident "no move" give the
    last conditioning frame to the grey level, whatever the change channels say."""
    from avid.diffusion import DiffusionConfig
    from avid.nn import ResidualOutput, ShiftPath

    d = Diffusion(DiffusionConfig(num_steps=20, schedule="sigmoid", param="x0"))
    head = ResidualOutput(3, ShiftPath(2, scale=1.0), gate=True)
    assert head.out_channels == 3 + 5 + 5 + 1
    g = torch.Generator().manual_seed(0)
    first = torch.rand(2, 3, K, SIZE, SIZE, generator=g) * 2 - 1
    x_i, i = torch.randn(2, 3, 4, SIZE, SIZE, generator=g), torch.tensor([3, 17])
    out = torch.zeros(2, head.out_channels, 4, SIZE, SIZE)
    out[:, :3] = torch.randn(2, 3, 4, SIZE, SIZE, generator=g)  # a change of about one unit everywhere
    out[:, 3 + 2] = out[:, 8 + 2] = 40.0  # "no move" on both axes, far ahead of the prior
    out[:, -1] = -40.0  # the gate closed
    pred, extras = head(out, first, x_i, i, d.from_x0)  # x0-parameterised: the prediction is the video
    assert (pred - first[:, :, -1:]).abs().max() < 0.5 / 255
    out[:, -1] = 40.0  # the gate open: the change passes whole
    pred, _ = head(out, first, x_i, i, d.from_x0)
    assert torch.allclose(pred, first[:, :, -1:] + out[:, :3], atol=1e-5)
    out[:, 3 + 2], out[:, 3 + 4] = 0.0, 40.0  # rows: 2 px down
    pred, _ = head(out, first, x_i, i, d.from_x0)
    assert torch.allclose(pred[..., 2:, :] - out[:, :3, :, 2:], first[:, :, -1:, :-2].expand(-1, -1, 4, -1, -1),
                          atol=1e-5)
    with pytest.raises(ValueError, match="a residual output with 14 channels"):
        head(out[:, :-1], first, x_i, i, d.from_x0)


def test_snap_drops_changes_below_it_at_inference_only():
    """``snap``: at inference a pixel whose change is below it on every channel gets none (the
    background of a still frame comes out exactly); training keeps every change, or a zero-initialised
    output would get no gradient."""
    from avid.diffusion import DiffusionConfig
    from avid.nn import ResidualOutput

    d = Diffusion(DiffusionConfig(num_steps=20, schedule="sigmoid", param="x0"))
    head = ResidualOutput(3, snap=0.02)
    g = torch.Generator().manual_seed(0)
    first = torch.rand(1, 3, K, SIZE, SIZE, generator=g) * 2 - 1
    x_i, i = torch.randn(1, 3, 2, SIZE, SIZE, generator=g), torch.tensor([3])
    change = 0.015 * torch.randn(1, 3, 2, SIZE, SIZE, generator=g).clamp(-1, 1)  # a grey level or two of noise
    change[..., :4, :4] = 0.5  # and one patch that really changes
    trained, _ = head(change, first, x_i, i, d.from_x0)
    assert torch.allclose(trained, first[:, :, -1:] + change)  # training mode: every change kept
    head.eval()
    snapped, _ = head(change, first, x_i, i, d.from_x0)
    still = first[:, :, -1:].expand_as(x_i)
    assert torch.equal(snapped[..., 4:, :], still[..., 4:, :])  # exactly the last frame where nothing moved
    assert torch.allclose(snapped[..., :4, :4], still[..., :4, :4] + 0.5)
    cfg = {"residual": True, "residual_output": {"snap": 0.02}, "diffusion": {"param": "eps"}}
    with pytest.raises(ValueError, match="needs the x0"):
        ResidualOutput.from_config(cfg, 3)
    assert not ResidualOutput.from_config({**cfg, "diffusion": {"param": "x0"}}, 3).training  # served for inference


@pytest.mark.parametrize("param", ["v", "eps"])
def test_a_residual_change_moves_the_clean_frame_by_itself_at_every_noise_level(param):
    """``change="x0"`` (v and eps): the implied x0 is the last frame plus the change at every step, so
    at the least noisy steps a change of the frame's size suffices; the default ``"param"`` (and every
    base exported before ``change`` was recorded) adds it in v units, where it moves x0 by -sigma times
    itself."""
    from avid.diffusion import DiffusionConfig
    from avid.nn import ResidualOutput

    d = Diffusion(DiffusionConfig(num_steps=1000, schedule="linear", param=param))
    g = torch.Generator().manual_seed(0)
    first = torch.randn(2, 4, 1, 8, 8, generator=g)
    x_i, change = torch.randn(2, 4, 3, 8, 8, generator=g), 0.3 * torch.randn(2, 4, 3, 8, 8, generator=g)
    i = torch.tensor([20, 990])
    head = ResidualOutput(4, param=param, change="x0")
    pred, _ = head(change, first, x_i, i, d.from_x0)
    assert torch.allclose(d.to_x0(pred, x_i, i), first + change, atol=1e-4)
    legacy = ResidualOutput.from_config({"residual": True, "residual_output": {"gate": False},
                                         "diffusion": {"param": param}}, 4)
    assert legacy.change == "param" and head.options()["change"] == "x0"
    pred, _ = legacy(change, first, x_i, i, d.from_x0)
    moved = d.to_x0(pred, x_i, i) - first
    sigma = (1 - d.alphas_cumprod[i]).sqrt().view(-1, 1, 1, 1, 1)
    if param == "v":  # the old way: the clean frame moves by -sigma times the change
        assert torch.allclose(moved, -sigma * change, atol=1e-4)
    with pytest.raises(ValueError, match="change must be one of"):
        ResidualOutput(4, param=param, change="pixels")


def test_hard_shift_copies_a_confident_frame_exactly_and_leaves_an_unsure_one_blended():
    """``ShiftPath(hard=p)``: at inference an axis whose likeliest shift has probability >= p uses that
    shift alone, so the moved frame is an exact copy (a 0.9 / 0.1 blend is off wherever the frame has
    edges); an axis below p, and every axis in training, keep the blend. Bases record it in their
    config and are rebuilt with it."""
    import torch.nn.functional as F

    from avid.nn import ResidualOutput, ShiftPath, shift_frame

    g = torch.Generator().manual_seed(0)
    last = torch.rand(1, 3, SIZE, SIZE, generator=g)
    channels = torch.zeros(1, 10, 2, SIZE, SIZE)  # radius 2: 5 row + 5 column logits per frame
    channels[:, 2, 0] = 1.0  # frame 0: "no move" on rows, a logit lead of 4 (p ~ 0.93)
    channels[:, 5 + 2, 0] = 1.0  # ... and on columns
    channels[:, 5 + 2, 1] = 1.0  # frame 1: columns sure, rows uniform (p = 0.2)
    path = ShiftPath(2, scale=4.0, prior=0.0, hard=0.8)
    blended = path(last, channels, {})
    assert (blended[:, :, 0] - last).abs().max() > 0.01  # trained mode: a blend, not the frame
    path.eval()
    moved = path(last, channels, {})
    assert torch.equal(moved[:, :, 0], last)  # confident on both axes: exactly the frame
    # frame 1: the sure columns commit to "no move", the unsure rows stay the uniform blend
    rows_blend = sum(shift_frame(last, F.one_hot(torch.tensor([[dy]]), 5).float(),
                                 F.one_hot(torch.tensor([[2]]), 5).float()) for dy in range(5)) / 5
    assert torch.allclose(moved[:, :, 1], rows_blend[:, :, 0], atol=1e-6)
    assert not torch.allclose(blended[:, :, 1], rows_blend[:, :, 0], atol=1e-4)  # the soft columns blur too
    assert torch.equal(ShiftPath(2, scale=4.0, prior=0.0).eval()(last, channels, {}), blended)  # off by default
    with pytest.raises(ValueError, match="hard is a probability"):
        ShiftPath(2, hard=1.5)
    cfg = {"residual": True, "residual_output": {"shift": path.options(), "gate": False},
           "diffusion": {"param": "x0"}}
    assert ResidualOutput.from_config(cfg, 3).shifts.hard == 0.8


def test_stay_moves_a_frame_only_where_the_model_is_sure_it_moved(tiny_denoiser):
    """``ShiftPath(stay=s)``: at inference "no move" gets ``s`` more logits on each axis, so a frame whose
    shift the model leans to but is unsure of stays put, while a frame it is sure of still moves; training
    keeps the plain distribution (its cross-entropy target is the best shift), and bases record it."""
    import torch.nn.functional as F

    from avid.nn import ResidualOutput, ShiftPath, shift_frame

    g = torch.Generator().manual_seed(0)
    last = torch.rand(1, 3, SIZE, SIZE, generator=g)
    channels = torch.zeros(1, 10, 2, SIZE, SIZE)  # radius 2: 5 row + 5 column logits per frame
    channels[:, 3, 0] = 0.5  # frame 0: rows lean to +1 (a lead of 2 logits over "no move"), columns flat
    channels[:, 3, 1] = 3.0  # frame 1: rows sure of +1 (a lead of 12)
    channels[:, 5:, :] = -1.0
    channels[:, 5 + 2, :] = 1.0  # columns sure of "no move" in both frames
    path = ShiftPath(2, scale=4.0, prior=0.0, hard=0.8, stay=5.0)
    plain = ShiftPath(2, scale=4.0, prior=0.0, hard=0.8).eval()
    one = lambda dy: shift_frame(last, F.one_hot(torch.tensor([[dy]]), 5).float(),  # noqa: E731
                                 F.one_hot(torch.tensor([[2]]), 5).float())[:, :, 0]
    leaned = plain(last, channels, {})
    assert not torch.equal(leaned[:, :, 0], last)  # without stay: frame 0 is a blend led by +1
    trained = path(last, channels, {})
    assert torch.allclose(trained, ShiftPath(2, scale=4.0, prior=0.0, hard=0.8)(last, channels, {}))
    moved = path.eval()(last, channels, {})
    assert torch.equal(moved[:, :, 0], last)  # a lean of 2 logits against 5 of stay: p(no move) 0.93, committed
    assert torch.equal(moved[:, :, 1], one(3))  # sure: still moves by one row, exactly
    assert torch.equal(plain(last, channels, {})[:, :, 1], moved[:, :, 1])
    with pytest.raises(ValueError, match="stay is a number of logits"):
        ShiftPath(2, stay=-1.0)
    cfg = {"residual": True, "residual_output": {"shift": path.options(), "gate": False},
           "diffusion": {"param": "x0"}}
    assert ResidualOutput.from_config(cfg, 3).shifts.stay == 5.0
    with pytest.raises(ValueError, match="shift_stay favours"):
        build_method("scratch", ctx_for(tiny_denoiser), {"unet": TINY_UNET, "residual": True, "shift_stay": 1.0})
