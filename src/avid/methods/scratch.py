"""Action-conditioned diffusion trained from scratch (paper section 4.1), and the image-to-video
model itself when ``use_actions=False`` (how ``avid pretrain`` trains the base model).

``residual=True`` makes the network predict the change from the last conditioning frame: its
output is added to the "nothing moves" prediction (``Diffusion.hold_last``) and starts at zero, so
an untrained model is the copy-last-frame baseline rather than noise.

``motion="shift"`` and ``gate`` (with ``residual``; ``avid.nn.residual``): the change is added to the
last conditioning frame moved as a whole by a distribution over integer shifts per predicted frame
(``shift_target`` trains it against the best shift of each clean frame), and scaled per pixel by a
sigmoid gate, so an unchanged pixel can be reproduced exactly by a saturated gate; ``snap`` (x0, at
inference) drops changes smaller than it, so a background that does not move comes out exactly;
``shift_hard`` (at inference) takes a frame's likeliest shift alone when its probability is at least
that, so a frame the model is sure of is an exact copy of the moved frame rather than a blend;
``shift_stay`` (at inference) adds that many logits to "no move", so a frame moves only where the model
is sure it moved.
``residual_change`` (v and eps): ``"param"`` adds the change in the parameterisation's units, ``"x0"``
to the clean frame (``avid.nn.residual`` says what each costs).

``action_dropout`` replaces a sample's actions by the learned "no action" embedding with that
probability during training (classifier-free guidance training, Ho & Salimans 2021).
"""

from __future__ import annotations

import torch

from avid.methods._unet import build_unet
from avid.methods.base import Context, Method
from avid.nn import SHIFT_LOGIT_SCALE, SHIFT_PRIOR, ResidualOutput, ShiftPath, with_first_frames


class Scratch(Method):
    name = "scratch"
    size_entry = "scratch"
    uses_base = False

    def __init__(self, ctx: Context, unet: dict | None = None, use_actions: bool = True,
                 action_dropout: float = 0.0, residual: bool = False, motion: bool | str = False,
                 shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0, gate: bool = False,
                 snap: float = 0.0, shift_hard: float | None = None, shift_stay: float = 0.0,
                 residual_change: str = "param") -> None:
        super().__init__(ctx)
        if not 0 <= action_dropout < 1:
            raise ValueError(f"action_dropout must be in [0, 1), got {action_dropout}")
        if motion not in (False, None, "shift"):
            raise ValueError(f"motion must be false or 'shift', got {motion!r}")
        if (motion or gate) and not residual:
            raise ValueError("motion='shift' and gate act on the change from the last conditioning frame: they "
                             "need residual=True")
        if motion and ctx.codec is not None:
            raise ValueError("motion='shift' moves pixels; this model works in a codec's latent space")
        if shift_target and not motion:
            raise ValueError("shift_target trains the shift path's distributions: it needs motion='shift'")
        if shift_hard is not None and not motion:
            raise ValueError("shift_hard commits the shift path's confident frames to one shift: it needs motion='shift'")
        if shift_stay and not motion:
            raise ValueError("shift_stay favours the shift path's 'no move': it needs motion='shift'")
        if snap and not residual:
            raise ValueError("snap drops small changes from the last conditioning frame: it needs residual=True")
        self.unet_options, self.use_actions, self.action_dropout = dict(unet or {}), use_actions, action_dropout
        self.residual = residual
        shifts = ShiftPath(shift_radius, shift_scale, shift_prior, shift_target, shift_hard, shift_stay) if motion else None
        c, k = ctx.channels, ctx.cond_frames
        self.output = ResidualOutput(c, shifts, gate, snap, ctx.diffusion.param, residual_change) if residual else None
        self.net = build_unet(ctx, self.unet_options, c * (1 + k), self.output.out_channels if residual else c,
                              actions=use_actions, zero_output=residual)

    def _predict(self, x_i, i, first, actions, drop=None):
        out = self.net(with_first_frames(x_i, first=first), i, actions if self.use_actions else None, drop)
        return self.output(out, first, x_i, i, self.diffusion.from_x0) if self.output else (out, {})

    def predict(self, x_i, i, first, actions):
        return self._predict(x_i, i, first, actions)

    def train_predict(self, x_i, i, batch):
        drop = None
        if self.use_actions and self.action_dropout > 0:
            drop = torch.rand(len(batch), device=x_i.device) < self.action_dropout
        return self._predict(x_i, i, batch.first, batch.actions, drop)

    def auxiliary_loss(self, extras: dict, batch) -> torch.Tensor | None:
        """``shift_target > 0``: the shift path's cross-entropy against the best whole-frame shifts."""
        shifts = self.output.shifts if self.output else None
        return shifts.loss(extras, batch) if shifts else None


class Pretrain(Scratch):
    """The image-to-video base model itself (``avid pretrain``): Scratch without actions, exported
    as a base model."""

    name = "pretrain"
    size_entry = None
    pretrains_base = True

    def __init__(self, ctx: Context, unet: dict | None = None, residual: bool = False, motion: bool | str = False,
                 shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0, gate: bool = False,
                 snap: float = 0.0, shift_hard: float | None = None, shift_stay: float = 0.0,
                 residual_change: str = "param") -> None:
        super().__init__(ctx, unet, use_actions=False, residual=residual, motion=motion, shift_radius=shift_radius,
                         shift_scale=shift_scale, shift_prior=shift_prior, shift_target=shift_target, gate=gate,
                         snap=snap, shift_hard=shift_hard, shift_stay=shift_stay, residual_change=residual_change)


class CopyLast(Method):
    """The trivial baseline at every diffusion step: the video stays at its last conditioning frame
    (``Diffusion.hold_last``), so its denoising loss can be set beside a model's (``avid loss``).
    Not a row of the experiments' tables, which score copy-last-frame on the videos themselves."""

    name = "copy last frame"
    uses_base = False
    trains = False

    def predict(self, x_i, i, first, actions):
        return self.diffusion.hold_last(first, x_i, i), {}


class Base(Method):
    """The pretrained model alone: ignores the actions (the paper's "Pretrained Base Model" row)."""

    name = "base"
    trains = False

    def predict(self, x_i, i, first, actions):
        return self.base(x_i, i, first), {}
