"""The black-box door to pretrained models (paper section 3.1: no parameters, only predictions)."""

from avid.blackbox.denoiser import Codec, Denoiser, DenoiserSpec, IdentityCodec
from avid.blackbox.local import open_denoiser

__all__ = ["Codec", "Denoiser", "DenoiserSpec", "IdentityCodec", "open_denoiser"]
