"""Classifier guidance (paper section 4.1, after Dhariwal & Nichol, 2021): an action classifier
``f(a | x_i, i)`` trained on noisy videos steers the black-box base model at sampling time:

    eps_final = eps_pre - sqrt(1 - abar_i) * w * grad_{x_i} log f(a | x_i)

The classifier is the encoder half of the project's 3D UNet (``embed`` of the step ``i``,
``encode``), spatially pooled per frame, and an MLP giving per-frame logits. It reads the base's
input layout (``x_i`` and the first frames repeated over time), so the first predicted frame's
action is visible. Discrete actions are classes; continuous actions are binned into ``bins``
uniform bins per dimension over ``action_range`` (paper section 9.5, after Padalkar et al., 2023).
``w`` (paper sweep {0.003, 0.01, 0.03, 0.1, 0.3}) is an attribute a sweep may change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avid.data import Batch
from avid.methods._encoder import encoder_only, level_widths
from avid.methods._unet import build_unet
from avid.methods.base import Context, Method
from avid.nn import with_first_frames
from avid.nn.blocks import group_norm
from avid.nn.unet import check_actions


class NoisyActionClassifier(nn.Module):
    """``f(a | x_i, i)``: noisy video ``(B, C, T, H, W)``, steps ``(B,)`` and first frames
    ``(B, C, k, H, W)`` -> logits ``(B, T, D, K)``: ``D`` action dimensions (1 for discrete actions)
    of ``K`` classes (the actions, or the bins of a continuous dimension)."""

    def __init__(self, ctx: Context, unet: dict, hidden: int = 256, bins: int = 256,
                 action_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        if ctx.action_kind not in ("discrete", "continuous"):
            raise ValueError(f"classifier guidance needs actions; got action_kind={ctx.action_kind!r}")
        low, high = action_range
        if not high > low or bins < 2:
            raise ValueError(f"need action_range low < high and bins >= 2, got {action_range}, {bins}")
        self.kind, self.num_actions, self.bins, self.low, self.high = ctx.action_kind, ctx.num_actions, bins, low, high
        self.dims, self.classes = (1, ctx.num_actions) if self.kind == "discrete" else (ctx.num_actions, bins)
        c, k = ctx.channels, ctx.cond_frames
        self.encoder = encoder_only(build_unet(ctx, unet, c * (1 + k), c, actions=False))
        width = level_widths(self.encoder)[-1]
        self.norm = group_norm(width, self.encoder.cfg.groups)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, self.dims * self.classes))

    def forward(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        x = with_first_frames(x_i, first=first)
        self.encoder.check_inputs(x, None)
        h, _ = self.encoder.encode(x, self.encoder.embed(i, None, x.shape[2]))  # (B, C_mid, T, h, w)
        h = F.silu(self.norm(h)).mean(dim=(-2, -1)).transpose(1, 2)  # pool space: (B, T, C_mid)
        return self.mlp(h).unflatten(-1, (self.dims, self.classes))

    def labels(self, actions: torch.Tensor) -> torch.Tensor:
        """Class index per frame and dimension ``(B, T, D)``: the action, or its uniform bin."""
        b, t = actions.shape[:2]
        check_actions(actions, b, t, self.kind, self.num_actions)
        if self.kind == "discrete":
            return actions[..., None].long()
        u = (actions.float() - self.low) / (self.high - self.low)
        return (u * self.bins).floor().clamp(0, self.bins - 1).long()

    def log_prob(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log f(a | x_i)`` of the whole action sequence ``(B,)``: per-frame terms summed."""
        logp = self(x_i, i, first).float().log_softmax(-1)
        return logp.gather(-1, self.labels(actions)[..., None]).flatten(1).sum(1)


class ClassifierGuidance(Method):
    name = "classifier-guidance"
    size_entry = "classifier-guidance"
    sampling_options = ("w",)

    def __init__(self, ctx: Context, unet: dict | None = None, w: float = 0.03, hidden: int = 256,
                 bins: int = 256, action_range: tuple[float, float] | list[float] = (-1.0, 1.0)) -> None:
        super().__init__(ctx)
        self.unet_options, self.w = dict(unet or {}), float(w)
        self.hidden, self.bins, self.action_range = hidden, bins, [float(v) for v in action_range]
        self.classifier = NoisyActionClassifier(ctx, self.unet_options, hidden, bins, tuple(self.action_range))

    def loss(self, batch: Batch, i: torch.Tensor | None = None,
             auxiliary: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the classifier on noisy videos ``x_i`` (per frame and dimension); it has no
        auxiliary term."""
        x0 = batch.x0
        i = self.diffusion.sample_steps(len(batch), x0.device) if i is None else i
        x_i = self.diffusion.q_sample(x0, i, torch.randn_like(x0))
        logits = self.classifier(x_i, i, batch.first).float()
        labels = self.classifier.labels(batch.actions)
        loss = F.cross_entropy(logits.flatten(0, 2), labels.flatten())
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(acc)}

    def grad_log_prob(self, x_i, i, first, actions) -> torch.Tensor:
        """``grad_{x_i} log f(a | x_i)`` ``(B, C, T, H, W)``, also under an outer ``no_grad``."""
        with torch.enable_grad():
            x = x_i.detach().float().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.classifier.log_prob(x, i, first, actions).sum(), x)
        return grad

    def predict(self, x_i, i, first, actions):
        if actions is None:
            raise ValueError("classifier guidance steers towards given actions; got actions=None")
        out_pre = self.base(x_i, i, first)
        grad = self.grad_log_prob(x_i, i, first, actions)
        abar = self.diffusion.alphas_cumprod.to(x_i.device)[i].view(-1, 1, 1, 1, 1)
        # section 4.1, classifier guidance: eps_final = eps_pre - sqrt(1 - abar_i) w grad log f(a | x_i)
        d_eps = -(1 - abar).sqrt() * self.w * grad
        # the same shift in this process's parameterisation: at fixed x_i, x0 = (x_i - sqrt(1-abar) eps)
        # / sqrt(abar), and ``from_x0`` is linear in (x0, x_i), so from_x0(d_x0, 0) is the shift
        d_x0 = -((1 - abar) / abar).sqrt() * d_eps
        return out_pre + self.diffusion.from_x0(d_x0, torch.zeros_like(x_i), i), {}
