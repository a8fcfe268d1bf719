"""Diffusion maths: schedules, the forward process, parameterisations, the loss, samplers."""

from avid.diffusion.process import Diffusion, DiffusionConfig
from avid.diffusion.samplers import ddim_timesteps, sample, sampler_timesteps
from avid.diffusion.schedules import make_schedule

__all__ = ["Diffusion", "DiffusionConfig", "ddim_timesteps", "make_schedule", "sample", "sampler_timesteps"]
