"""The paper's baselines (section 4.1, appendix 9.5) behind the one Method interface: their
combinations, their identities at zero strength or at initialisation, parameter matching, and the
no-access guarantee for the methods that use the base model as a black box."""

import copy

import pytest
import torch

from avid.blackbox import open_denoiser
from avid.checkpoint import REPO_ROOT
from avid.data import Batch
from avid.diffusion import Diffusion, DiffusionConfig
from avid.methods import REGISTRY, Context, build_method
from avid.methods.controlnet import small_control_branch
from avid.methods.sizes import MATCHED, load_size_preset, trainable_parameter_counts
from avid.methods.sweeps import PAPER_SWEEPS, set_sampling_options
from avid.nn import count_parameters, with_first_frames
from avid.whitebox import load_base_model
from tests.conftest import K, SIZE, TINY_UNET, make_base

torch.set_num_threads(1)

SMALL = {**TINY_UNET, "base_channels": 4}  # controlnet-small: narrower than the base (8)
OPTIONS = {
    "poe": {"unet": TINY_UNET},
    "action-cfg": {"unet": TINY_UNET},
    "classifier-guidance": {"unet": TINY_UNET, "hidden": 16},
    "controlnet": {},
    "controlnet-small": {"unet": SMALL},
    "finetune": {},
}
BLACK_BOX = ("poe", "action-cfg", "classifier-guidance")
WITH_PARAMETERS = ("controlnet", "controlnet-small", "finetune")


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Tiny base model folders, one per parameterisation."""
    root = tmp_path_factory.mktemp("bases")
    return {param: make_base(root / param, param=param) for param in ("x0", "eps", "v")}


def ctx_for(folder, action_kind: str = "discrete", num_actions: int = 5) -> Context:
    denoiser = open_denoiser(folder, precision="fp32")
    return Context(diffusion=Diffusion(denoiser.spec.diffusion), channels=3, cond_frames=K,
                   action_kind=action_kind, num_actions=num_actions, base=denoiser, base_path=str(folder))


def build(name: str, ctx: Context, **extra):
    torch.manual_seed(1)
    return build_method(name, ctx, {**OPTIONS[name], **extra})


def inputs(b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_i = torch.randn(b, 3, t, SIZE, SIZE, generator=g)
    first = torch.rand(b, 3, K, SIZE, SIZE, generator=g) * 2 - 1
    return x_i, torch.tensor([3, 17][:b]), first, torch.randint(0, 5, (b, t), generator=g)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_baseline_predicts_a_video_and_rebuilds_from_its_options(bases, name):
    ctx = ctx_for(bases["x0"])
    method = build(name, ctx)
    x_i, i, first, a = inputs()
    with torch.no_grad():  # as the samplers call it (classifier guidance still takes its gradient)
        final, extras = method.predict(x_i, i, first, a)
    assert final.shape == x_i.shape and final.dtype == torch.float32 and torch.isfinite(final).all()
    assert method.needs_parameters == (name in WITH_PARAMETERS)
    again = build_method(name, ctx, method.options())
    assert again.options() == method.options()
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in method.state_dict().items()}


@pytest.mark.parametrize("param", ["x0", "eps", "v"])
def test_combinations_are_the_papers_epsilon_equations_in_every_parameterisation(bases, param):
    ctx = ctx_for(bases[param])
    d, pre = ctx.diffusion, ctx.base
    x_i, i, first, a = inputs()
    eps = lambda out: d.to_eps(out, x_i, i)  # noqa: E731
    eps_pre = eps(pre(x_i, i, first))

    poe = build("poe", ctx, lambda_p=0.4)
    x = with_first_frames(x_i, first=first)
    eps_adapt = eps(poe.net(x, i, a))
    assert torch.allclose(eps(poe.predict(x_i, i, first, a)[0]), 0.4 * eps_adapt + 0.6 * eps_pre, atol=1e-4)

    cfg = build("action-cfg", ctx, lambda_a=3.0)
    want = eps_pre + 3.0 * (eps(cfg.net(x, i, a)) - eps(cfg.net(x, i, None)))
    assert torch.allclose(eps(cfg.predict(x_i, i, first, a)[0]), want, atol=1e-4)

    cg = build("classifier-guidance", ctx, w=0.3)
    x = x_i.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cg.classifier.log_prob(x, i, first, a).sum(), x)
    assert grad.abs().max() > 0
    s1a = (1 - d.alphas_cumprod[i]).sqrt().view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        final = cg.predict(x_i, i, first, a)[0]
    assert torch.allclose(eps(final), eps_pre - s1a * 0.3 * grad, atol=1e-4)


def test_at_zero_strength_the_guided_baselines_are_the_base_and_strength_changes_without_retraining(bases):
    ctx = ctx_for(bases["x0"])
    x_i, i, first, a = inputs()
    out_pre = ctx.base(x_i, i, first)
    for name, option in [("poe", "lambda_p"), ("action-cfg", "lambda_a"), ("classifier-guidance", "w")]:
        method = build(name, ctx)  # trained once at the default strength ...
        assert not torch.equal(method.predict(x_i, i, first, a)[0], out_pre)
        set_sampling_options(method, **{option: 0.0})  # ... sampled at another
        assert torch.equal(method.predict(x_i, i, first, a)[0], out_pre), name
        assert method.options()[option] == 0.0 and option in PAPER_SWEEPS[name]
    with pytest.raises(ValueError, match="no sampling-time option"):
        set_sampling_options(method, lambda_p=0.2)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_controlnet_and_finetuning_start_as_the_base(bases, name):
    ctx = ctx_for(bases["x0"])
    method = build(name, ctx)
    x_i, i, first, a = inputs()
    final, _ = method.predict(x_i, i, first, a)
    out_pre = ctx.base(x_i, i, first)
    if name == "finetune":  # the zero action embedding enters a wider matmul: equal up to rounding
        assert torch.allclose(final, out_pre, atol=1e-6)
    else:  # zero-initialised 1x1x1 convolutions add exact zeros
        assert torch.equal(final, out_pre)


def test_controlnet_keeps_a_frozen_base_and_trains_a_separate_copy(bases):
    ctx = ctx_for(bases["x0"])
    cn = build("controlnet", ctx)
    frozen = list(cn.base_net.parameters())
    assert frozen and not any(p.requires_grad for p in frozen)
    trainable = [p for p in cn.parameters() if p.requires_grad]
    assert {p.untyped_storage().data_ptr() for p in trainable}.isdisjoint(
        {p.untyped_storage().data_ptr() for p in frozen})
    copied = cn.control.encoder.state_dict()
    assert torch.equal(copied["down.0.res.0.block1.conv.weight"], cn.base_net.state_dict()["down.0.res.0.block1.conv.weight"])
    assert cn.train().base_net.training is False
    small = build("controlnet-small", ctx)
    assert count_parameters(small) == count_parameters(small_control_branch(ctx, small.base_net.cfg, SMALL))
    with pytest.raises(ValueError, match="requires the base model's parameters"):
        build("controlnet", Context(diffusion=ctx.diffusion, cond_frames=K, num_actions=5, base=ctx.base))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_training_steps_stay_finite_make_actions_matter_and_leave_the_base_bit_identical(bases, name):
    ctx = ctx_for(bases["x0"])
    before = load_base_model(bases["x0"])[0].state_dict()
    out_pre = ctx.base(*inputs()[:3])
    method = build(name, ctx)
    frozen = copy.deepcopy(method.base_net.state_dict()) if name.startswith("controlnet") else None
    params = [p for p in method.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x_i, _, first, a = inputs()
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        loss, logs = method.loss(Batch(first, torch.rand(2, 3, 4, SIZE, SIZE, generator=g) * 2 - 1, a))
        loss.backward()
        opt.step()
        opt.zero_grad()
        assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(p, s) for p, s in zip(params, start))
    with torch.no_grad():  # the actions now steer the prediction (zero-initialised action paths included)
        i = torch.tensor([5, 15])
        assert not torch.equal(method.predict(x_i, i, first, a)[0], method.predict(x_i, i, first, (a + 1) % 5)[0])
    assert torch.equal(ctx.base(*inputs()[:3]), out_pre)  # the black box answers as before training
    on_disk, _ = load_base_model(bases["x0"])
    assert all(torch.equal(before[k], v) for k, v in on_disk.state_dict().items())
    if frozen is not None:
        assert all(torch.equal(frozen[k], v) for k, v in method.base_net.state_dict().items())
        assert all(p.grad is None for p in method.base_net.parameters())
    if name == "classifier-guidance":
        assert 0 <= logs["accuracy"] <= 1


def test_classifier_guidance_bins_continuous_actions_uniformly(bases):
    ctx = ctx_for(bases["x0"], action_kind="continuous", num_actions=7)
    cg = build("classifier-guidance", ctx)
    f = cg.classifier
    assert (f.dims, f.classes) == (7, 256)
    a = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 5.0]).view(1, 6, 1).expand(1, 6, 7)
    assert f.labels(a)[0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]
    x_i, i, first, _ = inputs()
    actions = torch.rand(2, 4, 7) * 2 - 1
    with torch.no_grad():
        final, _ = cg.predict(x_i, i, first, actions)
    assert final.shape == x_i.shape and torch.isfinite(final).all()
    loss, _ = cg.loss(Batch(first, torch.rand(2, 3, 4, SIZE, SIZE) * 2 - 1, actions))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO_ROOT / "configs" / "sizes").glob("*.yaml")))
def test_size_presets_match_trainable_parameters_within_ten_percent(bases, preset):
    sizes = load_size_preset(preset)
    # the paper's Coinrun layout (200 steps, 2 first frames, 15 actions); the tiny base is only held
    denoiser = open_denoiser(bases["x0"], precision="fp32")
    ctx = Context(diffusion=Diffusion(DiffusionConfig(num_steps=200)), channels=3, cond_frames=2,
                  action_kind="discrete", num_actions=15, base=denoiser)
    counts = trainable_parameter_counts(sizes, ctx)
    assert set(counts) == set(MATCHED) and set(MATCHED) <= set(REGISTRY)
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts


def test_options_are_recorded_from_the_constructor_and_sampling_strengths_report_their_current_value(bases):
    ctx = ctx_for(bases["x0"])
    cg = build("classifier-guidance", ctx, w=0.1)
    # every constructor option, defaults filled in, as YAML writes them (the tuple default a list)
    assert cg.options() == {"unet": TINY_UNET, "w": 0.1, "hidden": 16, "bins": 256, "action_range": [-1.0, 1.0]}
    assert build_method("avid-no-mask", ctx, {"unet": TINY_UNET}).options() == {
        "unet": TINY_UNET, "mask": False, "condition_on_base": True, "residual": False}
    poe = set_sampling_options(build("poe", ctx), lambda_p=0.2)
    assert poe.options()["lambda_p"] == 0.2 and copy.deepcopy(poe).options() == poe.options()
    # the options an older export wrote by hand still rebuild the method
    old = {"unet": TINY_UNET, "mask": False, "condition_on_base": True, "residual": False}
    assert not build_method("avid-no-mask", ctx, old).use_mask
    assert build_method("controlnet-small", ctx, {"small": True, "unet": SMALL}).options() == {"small": True,
                                                                                                "unet": SMALL}


def test_what_differs_between_methods_is_a_class_attribute():
    assert REGISTRY["finetune"].default_lr == 2e-5 and REGISTRY["avid"].default_lr == 1e-4  # paper Table 8
    assert REGISTRY["avid-no-mask"].size_entry == REGISTRY["avid-no-cond"].size_entry == "avid"
    assert REGISTRY["controlnet"].size_entry is None and REGISTRY["finetune"].size_entry is None
    assert not REGISTRY["base"].trains and REGISTRY["pretrain"].pretrains_base
    assert all(REGISTRY[m].size_entry == m for m in MATCHED)


def test_a_product_of_experts_with_the_shift_path_mixes_scratchs_shift_prediction_with_the_base(bases):
    """``poe`` with Scratch's output path (``residual``, ``motion="shift"``): the small model it trains is
    the shift-path scratch model, combined with the black box at sampling time, so it can be sized
    against a shift-path AVID."""
    ctx = ctx_for(bases["x0"])
    opts = {"unet": TINY_UNET, "residual": True, "motion": "shift", "shift_radius": 2, "gate": True}
    scratch = build_method("scratch", ctx, opts)
    with torch.no_grad():
        for p in scratch.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the zero-initialised start
    poe = build("poe", ctx, lambda_p=0.4, **opts)
    poe.load_state_dict(scratch.state_dict())
    x_i, i, first, a = inputs()
    with torch.no_grad():
        own, extras = scratch.predict(x_i, i, first, a)
        mixed = poe.predict(x_i, i, first, a)[0]
    assert extras["shift_logits"].shape[-1] == 10
    assert torch.allclose(mixed, 0.4 * own + 0.6 * ctx.base(x_i, i, first), atol=1e-5)
    assert poe.options()["motion"] == "shift" and poe.options()["gate"] is True


def test_action_cfg_with_the_shift_path_guides_by_the_difference_of_two_shift_predictions(bases):
    ctx = ctx_for(bases["x0"])
    opts = {"unet": TINY_UNET, "residual": True, "motion": "shift", "shift_radius": 2}
    cfg = build("action-cfg", ctx, lambda_a=3.0, **opts)
    with torch.no_grad():
        for p in cfg.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_i, i, first, a = inputs()
    with torch.no_grad():
        own, extras = cfg._predict(x_i, i, first, a)
        null, _ = cfg._predict(x_i, i, first, None)
        guided = cfg.predict(x_i, i, first, a)[0]
    assert extras["shift_logits"].shape[-1] == 10 and (own - null).abs().max() > 1e-4  # the actions matter
    assert torch.allclose(guided, ctx.base(x_i, i, first) + 3.0 * (own - null), atol=1e-5)
