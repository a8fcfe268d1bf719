"""AVID (paper section 3.3): a small action-conditioned 3D UNet reads the noisy video, the
black-box model's prediction and the first frames, and outputs a mask ``m`` and its own
prediction; ``final = out_pre * m + out_adapt * (1 - m)`` (eq. 5), trained with eq. 6.

``residual=True`` (a CPU-scale choice, not the paper's): the adapter's own prediction is the change
from the last conditioning frame (``out_adapt = hold_last + adapter output``, the output starting
at zero), so at initialisation ``final`` mixes the base prediction with "nothing moves";
``residual_change="x0"`` adds the change to the clean frame instead (``from_x0(last + output)``; the
same for x0, different for v and eps: ``avid.nn.residual``).
``motion`` (with ``residual``; also not the paper's): the adapter's own prediction is the last
conditioning frame *moved*, plus the change (``avid.nn.warp``), starting at "no move": a camera that
follows the agent is a few numbers per frame instead of a redrawn frame. ``"flow"`` (or ``True``): a
dense flow field per frame, bilinear. ``"shift"``: the whole frame moved by a distribution over
integer shifts of up to ``shift_radius`` pixels per axis, one per predicted frame (logits averaged
over the adapter's output pixels; a prior puts most mass on "no move" at the start) — every candidate
shift meets the target in the loss, where a bilinear flow's gradient sees only neighbouring pixels.

Ablations (Table 3): ``mask=False`` ("no mask": ``final = out_pre + zero_conv(out_adapt)``) and
``condition_on_base=False`` ("no conditioning": the adapter does not see ``out_pre``).
"""

from __future__ import annotations

import torch
from torch import nn

from avid.methods._unet import build_unet
from avid.methods.base import Context, Method
from avid.nn import SHIFT_LOGIT_SCALE, SHIFT_PRIOR, ShiftPath, warp_frame, with_first_frames, zero_module
from avid.nn.residual import add_change, check_change_space

FLOW_SCALE = 8.0  # pixels per unit of the flow channels: the view moves up to ~10 px per frame in Coinrun
MOTIONS = {False: None, None: None, True: "flow", "flow": "flow", "shift": "shift"}


class AVID(Method):
    name = "avid"
    size_entry = "avid"

    def __init__(self, ctx: Context, unet: dict | None = None, mask: bool = True,
                 condition_on_base: bool = True, residual: bool = False, motion: bool | str = False,
                 shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0, residual_change: str = "param") -> None:
        super().__init__(ctx)
        check_change_space(residual_change, "residual_change")
        c, k = ctx.channels, ctx.cond_frames
        if motion not in MOTIONS:
            raise ValueError(f"motion must be false, 'flow' (or true) or 'shift', got {motion!r}")
        motion = MOTIONS[motion]
        if shift_target and motion != "shift":
            raise ValueError(f"shift_target trains the shift path's distributions: it needs motion='shift', got {motion!r}")
        self.shifts = ShiftPath(shift_radius, shift_scale, shift_prior, shift_target) if motion == "shift" else None
        self.unet_options, self.use_mask, self.condition_on_base = dict(unet or {}), mask, condition_on_base
        if residual and not mask:
            raise ValueError("residual=True changes the adapter's own prediction in eq. 5; the no-mask "
                             "ablation has none (final = out_pre + zero_conv(out_adapt))")
        if motion and not residual:
            raise ValueError("motion=True moves the last conditioning frame that a residual adapter adds its "
                             "change to: it needs residual=True")
        if motion and ctx.codec is not None:
            raise ValueError("motion=True moves pixels; this base model works in a codec's latent space")
        self.residual, self.motion, self.residual_change = residual, motion, residual_change
        in_ch = c * (1 + int(condition_on_base) + k)  # x_i, out_pre, first frames (3c for one frame)
        # residual: the adapter's own prediction starts at zero; its mask logit channel does not, or the
        # mask head (zero-initialised below) and that channel would both stay at zero (each one's
        # gradient is the other's value) and the mask could learn only a constant.
        # channels: the change (c), the motion (a flow: 2; shifts: 2 x (2R + 1) logits), the mask logit (1)
        flow = self.shifts.channels if self.shifts else {None: 0, "flow": 2}[motion]
        self.adapter = build_unet(ctx, self.unet_options, in_ch, c + flow + int(mask), actions=True,
                                  zero_output=c + flow if residual else False)
        if mask:
            self.mask_head = zero_module(nn.Conv3d(1, 1, 1))  # mask logit starts at 0: m = 0.5
        else:
            self.out_head = zero_module(nn.Conv3d(c, c, 1))  # final starts as out_pre

    def predict(self, x_i, i, first, actions):
        out_pre = self.base(x_i, i, first)  # black-box call: no parameters, no gradient
        inputs = (x_i, out_pre) if self.condition_on_base else (x_i,)
        out = self.adapter(with_first_frames(*inputs, first=first), i, actions)
        c = self.ctx.channels
        if not self.use_mask:
            return out_pre + self.out_head(out), {}
        out_adapt, m = out[:, :c], torch.sigmoid(self.mask_head(out[:, -1:]).float())
        extras = {}
        if self.residual:  # the change from the held frame, in clean-frame or in the parameterisation's units
            held = (self._moved(first[:, :, -1], out[:, c:], extras) if self.motion
                    else first[:, :, -1:].expand_as(x_i))
            out_adapt = add_change(out_adapt, held, x_i, i, self.diffusion.from_x0, self.residual_change)
        final = out_pre * m + out_adapt * (1 - m)  # eq. 5, mask broadcast over channels
        return final, {"mask": m, **extras}

    def auxiliary_loss(self, extras: dict, batch) -> torch.Tensor | None:
        """``shift_target > 0``: the shift path's cross-entropy against the best whole-frame shifts."""
        return self.shifts.loss(extras, batch) if self.shifts else None

    def _moved(self, last: torch.Tensor, motion: torch.Tensor, extras: dict) -> torch.Tensor:
        """The last conditioning frame ``(B, C, H, W)`` moved by the adapter's motion channels."""
        if self.motion == "flow":
            return warp_frame(last, motion[:, :2].float() * FLOW_SCALE)
        return self.shifts(last, motion[:, :self.shifts.channels], extras)


class AVIDNoMask(AVID):
    """Table 3's "no mask": ``final = out_pre + zero_conv(out_adapt)``."""

    name = "avid-no-mask"
    ablation_of = "avid"

    def __init__(self, ctx: Context, unet: dict | None = None, mask: bool = False,
                 condition_on_base: bool = True, residual: bool = False) -> None:
        super().__init__(ctx, unet, mask, condition_on_base, residual)


class AVIDNoCond(AVID):
    """Table 3's "no conditioning": the adapter does not see ``out_pre``."""

    name = "avid-no-cond"
    ablation_of = "avid"

    def __init__(self, ctx: Context, unet: dict | None = None, mask: bool = True,
                 condition_on_base: bool = False, residual: bool = False, motion: bool | str = False,
                 shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0) -> None:
        super().__init__(ctx, unet, mask, condition_on_base, residual, motion, shift_radius, shift_scale, shift_prior,
                         shift_target)
