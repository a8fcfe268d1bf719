"""The one interface every method shares (paper section 4.1): a training loss and a prediction at
a diffusion step. The trainer, the sampler and the evaluation never ask which method they hold.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from avid.blackbox import Denoiser
from avid.data import Batch
from avid.diffusion import Diffusion


@dataclass
class Context:
    """What a method may know: the diffusion process, the video layout and the action space, and
    (for methods that use it) the black-box base model."""

    diffusion: Diffusion
    channels: int = 3
    cond_frames: int = 2
    action_kind: str = "discrete"
    num_actions: int = 15
    base: Denoiser | None = None
    base_path: str | None = None  # the base model's folder: given only to methods with needs_parameters
    frame_size: int | None = None  # H = W of the videos (None: not checked); of the latents for a latent base

    @property
    def codec(self):
        """The black box's codec when the base model is latent (every method then works in its latent
        space and touches the codec only through ``encode`` / ``decode``), else None."""
        return self.base.codec if self.base is not None and self.base.spec.latent else None


def to_latent(codec, batch: Batch) -> Batch:
    """A pixel ``Batch`` in ``codec``'s latent space: first frames and frames encoded in one call."""
    with torch.no_grad():
        z = codec.encode(torch.cat([batch.first, batch.x0], dim=2))
    k = batch.first.shape[2]
    return Batch(z[:, :, :k], z[:, :, k:], batch.actions)


def encodes_frames_apart(codec, video: torch.Tensor, tol: float = 0.02) -> bool:
    """Whether ``codec`` encodes each frame of ``video`` ``(B, C, T >= 2, H, W)`` (its first 4) on its
    own (an image autoencoder applied per frame, as the shipped one) rather than mixing frames (a video codec):
    measured, the frames encoded together against each encoded alone, within ``tol`` of the latents'
    spread (reduced precision reorders sums). Only then may a latent run encode its frames once
    (``avid.data.LatentWindows``)."""
    with torch.no_grad():
        n = min(4, video.shape[2])
        together = codec.encode(video[:1, :, :n]).float()
        apart = torch.cat([codec.encode(video[:1, :, t:t + 1]).float() for t in range(n)], dim=2)
    return bool((together - apart).abs().max() <= tol * (together.std() + 1e-6))


class Method(nn.Module):
    """A way of producing the final prediction ``(B, C, T, H, W)`` at diffusion step ``i``.

    What differs between methods is a class attribute, so no code elsewhere compares method names.
    The options a subclass's constructor is called with are recorded (``options()``), never
    restated by hand."""

    name = "method"  # as in configs and tables
    needs_parameters = False  # True: requires the base model's parameters (the paper's shading)
    uses_base = True  # calls the black-box base model
    trains = True  # False: nothing to train (the base model alone)
    pretrains_base = False  # True: the run trains the base image-to-video model itself (`avid pretrain`)
    ablation_of: str | None = None  # the method this is an ablation of (Table 3)
    size_entry: str | None = None  # the size preset entry its `unet` options come from (None: not sized)
    default_lr = 1e-4  # the paper's learning rate (Tables 8, 9) when `train.lr` is not given
    sampling_options: tuple[str, ...] = ()  # strengths a sweep may change without retraining

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        if self.uses_base and ctx.base is None:
            raise ValueError(f"method {self.name!r} needs a pretrained base model (set `base:` in the config)")
        self.ctx = ctx
        self.diffusion = ctx.diffusion
        self.base = ctx.base

    def predict(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor,
                actions: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The final prediction in the diffusion's parameterisation, and extras (e.g. the mask)."""
        raise NotImplementedError

    def train_predict(self, x_i: torch.Tensor, i: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The prediction used by the training loss (methods with training-only tricks override)."""
        return self.predict(x_i, i, batch.first, batch.actions)

    def loss(self, batch: Batch, i: torch.Tensor | None = None,
             auxiliary: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain denoising loss of the final prediction (eq. 6), at random diffusion steps or at ``i``
        ``(B,)``, plus the method's ``auxiliary_loss`` unless ``auxiliary`` is false (held-out scores)."""
        x0 = batch.x0
        i = self.diffusion.sample_steps(len(batch), x0.device) if i is None else i
        eps = torch.randn_like(x0)
        x_i = self.diffusion.q_sample(x0, i, eps)
        pred, extras = self.train_predict(x_i, i, batch)
        loss = self.diffusion.loss(pred, x0, eps, i)
        logs = {"loss": float(loss.detach())}
        extra = self.auxiliary_loss(extras, batch) if auxiliary else None
        if extra is not None:
            logs["auxiliary"] = float(extra.detach())
            loss = loss + extra
        if "mask" in extras:
            logs["mask_mean"] = float(extras["mask"].detach().float().mean())
        return loss, logs

    def auxiliary_loss(self, extras: dict, batch: Batch) -> torch.Tensor | None:
        """A term a method adds to the denoising loss during training (none by default), from its
        ``predict`` extras and the batch."""
        return None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def options(self) -> dict[str, Any]:
        """Constructor options that rebuild this method (saved with its checkpoint): those its
        constructor was called with, defaults filled in, sampling-time strengths at their current values."""
        recorded = dict(self.__dict__.get("_init_options", {}))
        recorded.update({k: getattr(self, k) for k in self.sampling_options if k in recorded})
        return _plain(recorded)


def _recording(init):
    """``init`` that first records the options of the outermost constructor call (not ``ctx``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self, *args: Any, **kwargs: Any) -> None:
        if "_init_options" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            options = {k: v for k, v in bound.arguments.items() if k not in ("self", "ctx")}
            object.__setattr__(self, "_init_options", options)  # before nn.Module.__init__: a plain attribute
        init(self, *args, **kwargs)

    return recording_init


def _plain(value: Any) -> Any:
    """Options as YAML writes them: tuples become lists, mappings are copied."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

