"""Helpers for the methods the paper marks as requiring the base model's parameters (ControlNet,
ControlNet-Small, fine-tuning). No method without ``needs_parameters = True`` may import this.
"""

from __future__ import annotations

import torch

from avid.methods.base import Context
from avid.nn import ResidualOutput, UNet3D, UNetConfig
from avid.whitebox import load_base_model


def load_frozen_base(ctx: Context, method: str) -> tuple[UNet3D, ResidualOutput | None]:
    """The base network from ``ctx.base_path``, in eval mode with ``requires_grad=False``, and how its
    output becomes a prediction if it is residual (``ResidualOutput``; ``None``: the output is the prediction)."""
    if ctx.base_path is None:
        raise ValueError(f"method {method!r} requires the base model's parameters: set `base:` to a base "
                         "model folder (a remote black box cannot be used)")
    net, cfg = load_base_model(ctx.base_path)
    return net.eval().requires_grad_(False), ResidualOutput.from_config(cfg, ctx.channels)


def action_conditioned_copy(base_net: UNet3D, ctx: Context) -> UNet3D:
    """A trainable copy of an action-free base network with per-frame action conditioning.

    As in the paper's Procgen fine-tuning (section 4.1), the action embedding is concatenated to the
    diffusion-step embedding before the conditioning MLP (the UNet's own action path). The copy
    starts as the base exactly: every base weight is copied, the action embedding (and the learned
    "no action") is zero-initialised, and the MLP's first layer keeps the base's weights on the
    step half (its new action half keeps its random init, so gradients reach the embedding).
    """
    if base_net.cfg.action_kind != "none":
        raise ValueError(f"expected an action-free base model, got action_kind={base_net.cfg.action_kind!r}")
    if ctx.action_kind == "none":
        raise ValueError("an action-conditioned copy needs an action space (ctx.action_kind is 'none')")
    cfg = UNetConfig(**{**base_net.cfg.to_dict(), "action_kind": ctx.action_kind, "num_actions": ctx.num_actions})
    net = UNet3D(cfg)
    own, state = net.state_dict(), dict(base_net.state_dict())
    w = own["cond.mlp.0.weight"].clone()  # (4d, 2d): [step half | action half]
    w[:, :cfg.cond_dim] = state["cond.mlp.0.weight"]
    state["cond.mlp.0.weight"] = w
    state.update({k: torch.zeros_like(v) for k, v in own.items() if k.startswith("cond.action.")})
    state["cond.null_action"] = torch.zeros_like(own["cond.null_action"])
    net.load_state_dict(state)  # strict: nothing of the base is left out
    return net.train().requires_grad_(True)
