"""AVID: action-conditioned world models from black-box video diffusion models."""

__version__ = "0.1.0"
