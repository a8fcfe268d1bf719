"""DDPM and DDIM samplers over any ``predict(x_i, i) -> prediction`` callable.

``predict`` returns a prediction in the diffusion's parameterisation. It may also return a tuple
``(prediction, extras)`` where ``extras`` is a dict of tensors (e.g. AVID's mask); the sampler
passes each step's extras to ``on_step(step_index, i, extras)`` so callers can record them.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from avid.diffusion.process import Diffusion

Predict = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict]"]


def _call(predict: Predict, x: torch.Tensor, i: torch.Tensor):
    out = predict(x, i)
    return out if isinstance(out, tuple) else (out, {})


def ddim_timesteps(num_steps: int, sample_steps: int, start: int | None = None) -> list[int]:
    """Evenly spaced descending steps from ``start`` (default ``num_steps - 1``) to 0 (``sample_steps``
    of them)."""
    top = _top(num_steps, start)
    if not 1 <= sample_steps <= top + 1:
        raise ValueError(f"sample_steps must be in [1, {top + 1}], got {sample_steps}")
    steps = torch.linspace(top, 0, sample_steps).round().long().tolist()
    return sorted(set(steps), reverse=True)


def sampler_timesteps(num_steps: int, sampler: str = "ddpm", steps: int | None = None,
                      start: int | None = None) -> list[int]:
    """The diffusion steps a sampler visits, in sampling order (from ``start``, default ``num_steps -
    1``, down): all of them for DDPM, ``steps`` evenly spaced ones for DDIM (None: all)."""
    top = _top(num_steps, start)
    if sampler == "ddpm":
        if steps not in (None, top + 1):
            raise ValueError(f"DDPM walks all {top + 1} steps; use sampler='ddim' for {steps}")
        return list(range(top, -1, -1))
    if sampler == "ddim":
        return ddim_timesteps(num_steps, steps or top + 1, start)
    raise ValueError(f"unknown sampler {sampler!r}; expected 'ddpm' or 'ddim'")


def _top(num_steps: int, start: int | None) -> int:
    if start is None:
        return num_steps - 1
    if not 0 <= start < num_steps:
        raise ValueError(f"the starting diffusion step must be in [0, {num_steps - 1}], got {start}")
    return start


@torch.no_grad()
def sample(
    diffusion: Diffusion,
    predict: Predict,
    shape: tuple[int, ...],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int, dict], None] | None = None,
    progress: bool = False,
    start: int | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``x_0`` of ``shape`` (``(B, C, T, H, W)``) by reverse diffusion.

    ``sampler="ddpm"`` walks all N steps with the posterior of eq. 1 (``steps`` must be None or N);
    ``sampler="ddim"`` takes ``steps`` evenly spaced steps (Song et al., 2021) with stochasticity
    ``eta`` (``eta=1`` with all steps has the DDPM posterior variance).

    ``start`` and ``init`` (given together) begin the reverse process part-way, as SDEdit (Meng et
    al., 2022) does: at diffusion step ``start`` from ``init`` (a guess of the clean video, ``shape``)
    noised to that step, instead of at the last step from pure noise; ``steps`` are then spaced over
    ``start..0``.
    """
    if (start is None) != (init is None):
        raise ValueError("a part-way start needs both the starting step and the clean guess it noises")
    seq = sampler_timesteps(diffusion.num_steps, sampler, steps, start)
    ac = diffusion.alphas_cumprod.to(device)
    x = torch.randn(shape, generator=generator, device=device)
    if init is not None:
        if tuple(init.shape) != tuple(shape):
            raise ValueError(f"the clean guess to start from has shape {tuple(init.shape)}, expected {tuple(shape)}")
        x = ac[seq[0]].sqrt() * init.to(device).float() + (1 - ac[seq[0]]).sqrt() * x
    for k, t in enumerate(tqdm(seq, desc=f"{sampler} sampling", disable=not progress, leave=False)):
        i = torch.full((shape[0],), t, device=device, dtype=torch.long)
        pred, extras = _call(predict, x, i)
        pred = pred.float()
        if on_step is not None:
            on_step(k, t, extras)
        x0 = diffusion.to_x0(pred, x, i)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        if sampler == "ddpm":
            mean, var = diffusion.posterior(x0, x, i)
            noise = torch.randn(shape, generator=generator, device=device) if t > 0 else torch.zeros_like(x)
            x = mean + var.sqrt() * noise
            continue
        a_t = ac[t]
        eps = _eps_from_x0(x0, x, a_t)
        a_s = ac[seq[k + 1]] if k + 1 < len(seq) else torch.ones((), device=device, dtype=ac.dtype)
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp(min=0).sqrt()
        noise = torch.randn(shape, generator=generator, device=device) if k + 1 < len(seq) else 0.0
        x = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
    return x


def _eps_from_x0(x0: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    return (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
