"""The Gaussian diffusion process: forward noising, parameterisations and the denoising loss.

Tensors are videos ``(B, C, T, H, W)``; diffusion steps ``i`` are integer tensors ``(B,)`` in
``[0, N)``. A model predicts one of three targets (``param``):

- ``eps``: the noise, eq. 3;
- ``x0``: the clean video (the paper's Coinrun models);
- ``v``:  ``sqrt(a) * eps - sqrt(1 - a) * x0`` (Salimans & Ho, 2022; the paper's RT1 models).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from avid.diffusion.schedules import make_schedule

PARAMS = ("eps", "x0", "v")
WEIGHTINGS = ("eps", "x0", "v", "min_snr", "truncated_snr")


@dataclass
class DiffusionConfig:
    num_steps: int = 200
    schedule: str = "sigmoid"
    param: str = "x0"
    # Loss weighting, expressed as which target's plain MSE the loss equals. "eps" is the paper's
    # unweighted eq. 6 whatever the parameterisation (the official code weights x0-MSE by the SNR);
    # "min_snr" clips that weight at ``min_snr_gamma`` (Hang et al., 2023) to tame loss spikes;
    # "truncated_snr" also floors it at 1 (max(x0-MSE, eps-MSE), Salimans & Ho, 2022), so the noisiest
    # steps, where the SNR weight vanishes (1.5e-6 at the last sigmoid step), are still trained.
    weighting: str = "eps"
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        if self.param not in PARAMS:
            raise ValueError(f"unknown parameterisation {self.param!r}; expected one of {PARAMS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {self.weighting!r}; expected one of {WEIGHTINGS}")


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class Diffusion:
    """Schedule-derived quantities and conversions, as plain functions of tensors."""

    def __init__(self, cfg: DiffusionConfig | None = None) -> None:
        self.cfg = cfg or DiffusionConfig()
        ac = make_schedule(self.cfg.schedule, self.cfg.num_steps)
        self.alphas_cumprod = ac.float()
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]]).float()
        self.snr = (ac / (1 - ac)).float()

    def with_weighting(self, weighting: str) -> "Diffusion":
        """The same process with another loss weighting (a training or scoring choice)."""
        return Diffusion(dataclasses.replace(self.cfg, weighting=weighting))

    @property
    def num_steps(self) -> int:
        return self.cfg.num_steps

    @property
    def param(self) -> str:
        return self.cfg.param

    def _coef(self, i: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod.to(like.device)[i]
        return _bcast(a.sqrt(), like), _bcast((1 - a).sqrt(), like)

    # forward process ---------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x_i = sqrt(a_i) x0 + sqrt(1 - a_i) eps``."""
        sa, s1a = self._coef(i, x0)
        return sa * x0 + s1a * eps

    def target(self, x0: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """What a model of parameterisation ``param`` should output for ``(x_i, i)``."""
        if self.param == "eps":
            return eps
        if self.param == "x0":
            return x0
        sa, s1a = self._coef(i, x0)
        return sa * eps - s1a * x0

    # conversions between parameterisations, given x_i -------------------------------------------
    def to_x0(self, pred: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        sa, s1a = self._coef(i, x_i)
        if self.param == "x0":
            return pred
        if self.param == "eps":
            return (x_i - s1a * pred) / sa
        return sa * x_i - s1a * pred

    def to_eps(self, pred: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        sa, s1a = self._coef(i, x_i)
        if self.param == "eps":
            return pred
        if self.param == "x0":
            return (x_i - sa * pred) / s1a
        return s1a * x_i + sa * pred

    def from_x0(self, x0: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Express an x0 estimate in this process's parameterisation (inverse of ``to_x0``)."""
        sa, s1a = self._coef(i, x_i)
        if self.param == "x0":
            return x0
        eps = (x_i - sa * x0) / s1a
        return eps if self.param == "eps" else sa * eps - s1a * x0

    def hold_last(self, first: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """The "nothing moves" prediction: the video stays at its last conditioning frame
        ``first[:, :, -1]`` (``first``: ``(B, C, k, H, W)``), in this parameterisation. A residual
        model adds its output to it, so a zero output is the copy-last-frame baseline."""
        return self.from_x0(first[:, :, -1:].expand_as(x_i).to(x_i.dtype), x_i, i)

    # posterior q(x_{i-1} | x_i, x0) -----------------------------------------------------------
    def posterior(self, x0: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(x_{i-1} | x_i, x0)`` (Ho et al., 2020, eq. 7)."""
        ac = self.alphas_cumprod.to(x_i.device)[i]
        ac_prev = self.alphas_cumprod_prev.to(x_i.device)[i]
        beta = 1 - ac / ac_prev
        c0 = beta * ac_prev.sqrt() / (1 - ac)
        ct = (1 - ac_prev) * (1 - beta).sqrt() / (1 - ac)
        var = beta * (1 - ac_prev) / (1 - ac)
        return _bcast(c0, x_i) * x0 + _bcast(ct, x_i) * x_i, _bcast(var, x_i)

    # the denoising loss -----------------------------------------------------------------------
    def _x0_weight(self, name: str, snr: torch.Tensor) -> torch.Tensor:
        """Weight on ``||x0_hat - x0||^2`` that equals the plain MSE of target ``name``."""
        if name == "eps":
            return snr
        if name == "x0":
            return torch.ones_like(snr)
        if name == "v":
            return snr + 1
        if name == "truncated_snr":
            return snr.clamp(min=1.0, max=max(1.0, self.cfg.min_snr_gamma))
        return snr.clamp(max=self.cfg.min_snr_gamma)

    def loss_weight(self, i: torch.Tensor) -> torch.Tensor:
        """Per-sample weight ``(B,)`` on the plain MSE in this process's own parameterisation."""
        snr = self.snr.to(i.device)[i]
        return self._x0_weight(self.cfg.weighting, snr) / self._x0_weight(self.param, snr)

    def loss(self, pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Denoising loss of a prediction in this process's parameterisation (eq. 6).

        ``weight(i) * ||pred - target||^2``; the weight makes it equal to the plain MSE of the target
        named by ``weighting`` (so "eps" is the paper's unweighted loss whatever ``param`` is).
        """
        err = (pred.float() - self.target(x0.float(), i, eps.float())).pow(2).flatten(1).mean(1)
        return (self.loss_weight(i) * err).mean()

    def sample_steps(self, batch: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        return torch.randint(0, self.num_steps, (batch,), device=device, generator=generator)
