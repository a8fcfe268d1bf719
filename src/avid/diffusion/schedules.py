"""Noise schedules, as cumulative products of alphas (the paper's alpha_i, eq. in section 2).

Every schedule returns ``alphas_cumprod`` of shape ``(N,)`` for diffusion steps ``i = 0..N-1``
(step ``i`` here is the paper's step ``i + 1``), strictly decreasing from near 1 towards 0.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine", "sigmoid", "scaled_linear")


def _from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas.double(), dim=0)


def linear(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Ho et al. (2020) linear betas, rescaled so any ``num_steps`` spans the same noise range."""
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
    return _from_betas(betas.clamp(max=0.999))


def cosine(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    return _from_betas(betas)


def sigmoid(num_steps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule defined on the cumulative alphas (Jabri et al., 2022), as the official
    Coinrun models use it. Not diffusers' ``beta_schedule="sigmoid"``, which is sigmoid in betas."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    f = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    return _from_betas(betas)


def scaled_linear(num_steps: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Latent diffusion's schedule (Stable Diffusion, Stable Video Diffusion): betas linear in
    square-root space, as diffusers' ``beta_schedule="scaled_linear"`` with its defaults."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return _from_betas(betas)


def make_schedule(name: str, num_steps: int) -> torch.Tensor:
    """``alphas_cumprod`` (float64, shape ``(num_steps,)``) for a schedule named in ``SCHEDULES``."""
    fns = {"linear": linear, "cosine": cosine, "sigmoid": sigmoid, "scaled_linear": scaled_linear}
    if name not in fns:
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {SCHEDULES}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return fns[name](num_steps)
