"""The one interface every method shares (paper section 4.1): a training loss and a prediction at
a diffusion step. The trainer, the sampler and the evaluation never ask which method they hold.
"""

from __future__ import annotations

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


class Method(nn.Module):
    """A way of producing the final prediction ``(B, C, T, H, W)`` at diffusion step ``i``."""

    name = "method"
    needs_parameters = False  # True: requires the base model's parameters (the paper's shading)
    uses_base = True

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

    def loss(self, batch: Batch, i: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain denoising loss of the final prediction (eq. 6), at random diffusion steps or at ``i`` ``(B,)``."""
        x0 = batch.x0
        i = self.diffusion.sample_steps(len(batch), x0.device) if i is None else i
        eps = torch.randn_like(x0)
        x_i = self.diffusion.q_sample(x0, i, eps)
        pred, extras = self.train_predict(x_i, i, batch)
        loss = self.diffusion.loss(pred, x0, eps, i)
        logs = {"loss": float(loss.detach())}
        if "mask" in extras:
            logs["mask_mean"] = float(extras["mask"].detach().float().mean())
        return loss, logs

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def options(self) -> dict[str, Any]:
        """Constructor options that rebuild this method (saved with its checkpoint)."""
        return {}

