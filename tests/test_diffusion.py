"""The diffusion maths: schedules, parameterisations, posterior, loss weighting, samplers."""

import math

import pytest
import torch

from avid.diffusion import Diffusion, DiffusionConfig, ddim_timesteps, make_schedule, sample


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_schedules_decrease_from_one_towards_zero(name):
    ac = make_schedule(name, 200)
    assert ac.shape == (200,)
    assert torch.all(ac[1:] < ac[:-1])
    assert 0.97 < float(ac[0]) < 1 and float(ac[-1]) < 0.01


def test_sigmoid_schedule_is_defined_on_cumulative_alphas():
    # f(t) = (sigmoid(3) - sigmoid(6 t - 3)) / (sigmoid(3) - sigmoid(-3)): at t = 1/2, f = 1/2 exactly
    ac = make_schedule("sigmoid", 200)
    assert float(ac[99]) == pytest.approx(0.5, abs=1e-9)


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="noise schedule"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="parameterisation"):
        DiffusionConfig(param="score")


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_parameterisations_round_trip(param):
    torch.manual_seed(0)
    d = Diffusion(DiffusionConfig(num_steps=100, schedule="cosine", param=param))
    x0, eps = torch.randn(6, 3, 2, 4, 4), torch.randn(6, 3, 2, 4, 4)
    i = torch.tensor([0, 10, 40, 60, 90, 98])
    x_i = d.q_sample(x0, i, eps)
    target = d.target(x0, i, eps)
    assert torch.allclose(d.to_x0(target, x_i, i), x0, atol=1e-4)
    assert torch.allclose(d.to_eps(target, x_i, i), eps, atol=1e-3)
    assert torch.allclose(d.from_x0(x0, x_i, i), target, atol=1e-3)


def test_ddpm_posterior_matches_closed_form_and_diffusers():
    from diffusers import DDPMScheduler

    d = Diffusion(DiffusionConfig(num_steps=50, schedule="sigmoid", param="x0"))
    ac = d.alphas_cumprod.double()
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    x0, x_t = torch.randn(1, 3, 1, 2, 2), torch.randn(1, 3, 1, 2, 2)
    for t in (1, 17, 49):
        mean, var = d.posterior(x0, x_t, torch.tensor([t]))
        a, a_prev, b = ac[t], ac[t - 1], betas[t]
        want = (b * a_prev.sqrt() / (1 - a)) * x0 + ((1 - a_prev) * (1 - b).sqrt() / (1 - a)) * x_t
        assert torch.allclose(mean, want.float(), atol=1e-5)
        assert float(var.flatten()[0]) == pytest.approx(float(b * (1 - a_prev) / (1 - a)), rel=1e-5)
    sched = DDPMScheduler(num_train_timesteps=50, trained_betas=betas.float().numpy(), prediction_type="sample",
                          clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(50)
    out = sched.step(x0, 17, x_t, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0))
    mean, var = d.posterior(x0, x_t, torch.tensor([17]))
    assert torch.allclose(out.prev_sample, mean + var.sqrt() * noise, atol=1e-4)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_loss_weighting_equals_the_plain_mse_of_the_named_target(param):
    torch.manual_seed(1)
    d = Diffusion(DiffusionConfig(num_steps=200, param=param, weighting="eps"))
    x0, eps, pred = torch.randn(4, 3, 2, 4, 4), torch.randn(4, 3, 2, 4, 4), torch.randn(4, 3, 2, 4, 4)
    i = torch.tensor([5, 50, 100, 150])
    x_i = d.q_sample(x0, i, eps)
    eps_hat = d.to_eps(pred, x_i, i)
    per_sample = (eps_hat - eps).pow(2).flatten(1).mean(1)
    assert float(d.loss(pred, x0, eps, i)) == pytest.approx(float(per_sample.mean()), rel=1e-3)
    native = Diffusion(DiffusionConfig(num_steps=200, param=param, weighting=param))
    plain = (pred - native.target(x0, i, eps)).pow(2).mean()
    assert float(native.loss(pred, x0, eps, i)) == pytest.approx(float(plain), rel=1e-5)


def test_min_snr_clips_the_weight():
    d = Diffusion(DiffusionConfig(num_steps=200, param="x0", weighting="min_snr", min_snr_gamma=5.0))
    w = d.loss_weight(torch.arange(200))
    assert float(w.max()) == pytest.approx(5.0) and float(w[-1]) == pytest.approx(float(d.snr[-1]))


def test_truncated_snr_is_the_larger_of_the_x0_and_eps_losses_capped_at_gamma():
    d = Diffusion(DiffusionConfig(num_steps=200, param="x0", weighting="truncated_snr", min_snr_gamma=5.0))
    torch.manual_seed(2)
    x0, eps, pred = torch.randn(3, 3, 2, 4, 4), torch.randn(3, 3, 2, 4, 4), torch.randn(3, 3, 2, 4, 4)
    i = torch.tensor([199, 100, 0])  # SNR 1.5e-6 (floored to 1), ~0.97 (floored to 1), 658 (capped at 5)
    x_i = d.q_sample(x0, i, eps)
    x0_mse = (pred - x0).pow(2).flatten(1).mean(1)
    eps_mse = (d.to_eps(pred, x_i, i) - eps).pow(2).flatten(1).mean(1)
    want = torch.stack([x0_mse[0], torch.maximum(x0_mse[1], eps_mse[1]), 5.0 * x0_mse[2]]).mean()
    assert float(d.loss(pred, x0, eps, i)) == pytest.approx(float(want), rel=1e-4)


def test_ddim_with_eta_one_and_all_steps_has_the_ddpm_variance():
    d = Diffusion(DiffusionConfig(num_steps=30, schedule="linear", param="eps"))
    ac = d.alphas_cumprod
    for t in (5, 20, 29):
        a_t, a_s = ac[t], ac[t - 1]
        sigma2 = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
        _, var = d.posterior(torch.zeros(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1), torch.tensor([t]))
        assert float(sigma2) == pytest.approx(float(var.flatten()[0]), rel=1e-4)
    assert ddim_timesteps(30, 30) == list(range(29, -1, -1))
    assert ddim_timesteps(200, 20)[0] == 199 and ddim_timesteps(200, 20)[-1] == 0


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 10), ("ddim", 40)])
@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_samplers_recover_a_point_mass_with_an_oracle(sampler, steps, param):
    """For data concentrated on one video c, the ideal predictor yields c from any noise."""
    d = Diffusion(DiffusionConfig(num_steps=40, schedule="cosine", param=param))
    c = torch.linspace(-0.8, 0.8, 3 * 2 * 4 * 4).reshape(1, 3, 2, 4, 4).expand(2, -1, -1, -1, -1)

    def oracle(x_i, i):
        return d.from_x0(c, x_i, i)

    out = sample(d, oracle, (2, 3, 2, 4, 4), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, c, atol=1e-3 if sampler == "ddim" else 2e-2)


def _two_point_x0(d, pts):
    def exact_x0(x_i, i):
        a = d.alphas_cumprod[i].view(-1, 1, 1, 1, 1)
        logw = -(x_i[..., None] - a.sqrt()[..., None] * pts) ** 2 / (2 * (1 - a[..., None]))
        return (torch.softmax(logw, -1) * pts).sum(-1)
    return exact_x0


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 4)])
def test_a_part_way_start_noises_the_guess_to_that_step_and_walks_down_from_it(sampler, steps):
    """SDEdit-style start: the first network call sees the guess noised to ``start`` (with the sampler's
    own noise), the steps run start..0, and a lightly noised guess keeps its mode where pure noise
    splits between both."""
    d = Diffusion(DiffusionConfig(num_steps=50, schedule="cosine", param="x0"))
    exact = _two_point_x0(d, torch.tensor([-0.5, 0.5]))
    seen = []

    def record(x_i, i):
        seen.append((int(i[0]), x_i.clone()))
        return exact(x_i, i)

    shape, guess = (2000, 1, 1, 1, 1), torch.full((2000, 1, 1, 1, 1), 0.5)
    out = sample(d, record, shape, sampler=sampler, steps=steps, start=5, init=guess,
                 generator=torch.Generator().manual_seed(0))
    visited = [t for t, _ in seen]
    assert visited[0] == 5 and visited[-1] == 0 and len(visited) == (6 if sampler == "ddpm" else 4)
    a = d.alphas_cumprod[5]
    expected = a.sqrt() * guess + (1 - a).sqrt() * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen[0][1], expected, atol=1e-6)
    assert float((out > 0).float().mean()) > 0.98  # from pure noise: about half (the test below)
    with pytest.raises(ValueError, match="both the starting step"):
        sample(d, exact, shape, start=12)
    with pytest.raises(ValueError, match=r"\[0, 49\]"):
        sample(d, exact, shape, start=50, init=guess)


def test_ddpm_matches_the_data_distribution_of_two_points():
    """DDPM with the exact posterior-mean predictor of a two-point dataset samples both points ~equally."""
    d = Diffusion(DiffusionConfig(num_steps=50, schedule="cosine", param="x0"))
    pts = torch.tensor([-0.5, 0.5])
    out = sample(d, _two_point_x0(d, pts), (4000, 1, 1, 1, 1), sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert torch.all((out.flatten().abs() - 0.5).abs() < 0.05)
    assert abs(float((out > 0).float().mean()) - 0.5) < 0.05
    assert math.isfinite(float(out.mean()))
