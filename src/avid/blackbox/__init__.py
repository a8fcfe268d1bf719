"""The black-box door to pretrained models (paper section 3.1: no parameters, only predictions).

``open_denoiser(base)`` returns a ``Denoiser`` whose network runs elsewhere: in a worker process
(a local folder) or on a provider's server (``http://host:port``, see ``avid serve``).
"""

from avid.blackbox.denoiser import Codec, Denoiser, DenoiserSpec, IdentityCodec, QueryStats
from avid.blackbox.door import open_denoiser
from avid.blackbox.remote import is_url

__all__ = ["Codec", "Denoiser", "DenoiserSpec", "IdentityCodec", "QueryStats", "is_url", "open_denoiser"]
