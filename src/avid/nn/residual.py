"""How a residual network's raw output becomes its prediction: the change from the last conditioning
frame (``residual``), optionally added to that frame moved as a whole (``ShiftPath``) and scaled by a
per-pixel gate. One home for the scratch and base models (``avid.methods.scratch``), the black box's
provider and the methods that run a copy of the base network (fine-tuning, ControlNet); AVID's
adapter uses ``ShiftPath`` in its own eq. 5.

``ShiftPath``: the last conditioning frame moved by a distribution over integer shifts per predicted
frame (``avid.nn.shift_frame``), its logits the mean of ``channels`` output channels over the pixels.
A prior puts most mass on "no move", so a zero-initialised output starts as "nothing moves";
``target`` adds a cross-entropy against the best whole-frame shift of each clean training frame
(``avid.nn.best_shifts``: no labels); ``hard`` (inference only) replaces an axis's distribution by its
likeliest shift where that shift's probability reaches it, so a confident frame is copied exactly
rather than blended with its neighbours' shifts (a blend is off by a grey level or more wherever
the frame has edges); ``stay`` (inference only) adds that many logits to "no move" on each axis, so a
frame moves only where the model is sure it moved (an image-to-video model that does not see the
actions cannot know when the camera follows an agent that may stand still, and a wrong shift costs
more than none). The gate (one more output channel) scales the change by a
sigmoid, so a pixel that does not change can be reproduced exactly (to the 8-bit grey level videos
are scored at) by a saturated gate rather than by a change output of exactly zero. ``snap`` (x0
parameterisation, inference only): a pixel whose change is below it on every channel gets none, so
the background of a frame in which nothing moves comes out exactly, not within a grey level or two
(training keeps every change: a dead zone would give a zero-initialised output no gradient).

``change``: where the change is added (the two agree for x0). ``"param"`` (the default, and every base
exported before ``change`` was recorded): to the held frame's prediction in the model's own
parameterisation. ``"x0"``: to the clean frame (the prediction is ``from_x0(held + change)``). For v
(and eps) a change in v units moves the implied clean frame by only ``sigma`` times itself, so at the
least noisy steps, where the noisy input nearly is the answer, the network must output ~1/sigma times
the frame's change to use it: the robot base's x0 error at step 20 of 1000 is 0.13 against
copy-last's 0.07 with ``"param"``, 0.016 with ``"x0"``, and its held-out min-SNR loss 0.085 against
0.039. Its sampled videos are nevertheless worse with ``"x0"`` (README, robot section): min-SNR
weighting leaves the noisiest steps untrained, and there the free change drifts where ``"param"``
stays near "nothing moves".
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from avid.nn.warp import best_shifts, shift_frame

CHANGE_SPACES = ("x0", "param")


def check_change_space(space: str, name: str = "change") -> str:
    """``space`` if it names where a residual change is added (``CHANGE_SPACES``), else one clear error."""
    if space not in CHANGE_SPACES:
        raise ValueError(f"{name} must be one of {CHANGE_SPACES}, got {space!r}")
    return space


def add_change(change: torch.Tensor, held: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor,
               from_x0: FromX0, space: str) -> torch.Tensor:
    """The prediction of the clean frame ``held`` plus ``change``, in the parameterisation ``from_x0``
    expresses an x0 estimate in: the change added to the clean frame (``space="x0"``) or to ``held``'s
    prediction in the parameterisation's own units (``"param"``); the module docstring says what each
    costs. The one rule for the residual base models and AVID's residual adapter."""
    if space == "x0":
        return from_x0((held + change).to(x_i.dtype), x_i, i)
    return change + from_x0(held.to(x_i.dtype), x_i, i)

SHIFT_LOGIT_SCALE = 4.0  # logits per unit of the shift channels, so a few units make a confident choice
SHIFT_PRIOR = 5.0  # logit lead of "no move" on each axis at the start (p = 0.85 each at radius 12)

FromX0 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x0, x_i, i) -> prediction


def shift_radii(radius: int | list[int]) -> tuple[int, int]:
    """``radius`` (pixels, one for both axes or ``[rows, columns]``) checked, as ``(rows, columns)``."""
    radii = [radius] * 2 if isinstance(radius, (int, float)) else list(radius)
    if len(radii) != 2 or any(r != int(r) or r < 1 for r in radii):
        raise ValueError(f"shift_radius must be a number of pixels >= 1, or [rows, columns], got {radius}")
    return int(radii[0]), int(radii[1])


class ShiftPath(nn.Module):
    def __init__(self, radius: int | list[int] = 12, scale: float = SHIFT_LOGIT_SCALE, prior: float = SHIFT_PRIOR,
                 target: float = 0.0, hard: float | None = None, stay: float = 0.0) -> None:
        super().__init__()
        if hard is not None and not 0.0 <= float(hard) <= 1.0:
            raise ValueError(f"hard is a probability (0-1) at which a frame's likeliest shift is taken alone, got {hard}")
        if not float(stay) >= 0.0:
            raise ValueError(f"stay is a number of logits added to 'no move' (>= 0), got {stay}")
        self.hard, self.stay = None if hard is None else float(hard), float(stay)
        self.radii = shift_radii(radius)
        self.sizes = tuple(2 * r + 1 for r in self.radii)  # candidate shifts per axis (rows, columns)
        self.channels = sum(self.sizes)  # output channels the network gives this path
        self.scale, self.prior, self.target = float(scale), float(prior), target
        no_move = torch.zeros(self.channels)  # not saved (nor the prior): derived from the options
        no_move[self.radii[0]] = no_move[self.sizes[0] + self.radii[1]] = 1.0  # the zero shift of each axis
        self.register_buffer("no_move", no_move, persistent=False)
        self.register_buffer("logit_prior", (no_move - 1.0) * self.prior, persistent=False)

    def options(self) -> dict[str, Any]:
        """What rebuilds this path (its training target aside)."""
        return {"radius": list(self.radii), "scale": self.scale, "prior": self.prior, "hard": self.hard,
                "stay": self.stay}

    def forward(self, last: torch.Tensor, channels: torch.Tensor, extras: dict) -> torch.Tensor:
        """``last`` ``(B, C, H, W)`` moved by the distributions that ``channels`` ``(B, self.channels, T,
        H', W')`` give: ``(B, C, T, H, W)``; the logits ``(B, T, Dy + Dx)`` go to ``extras["shift_logits"]``."""
        d = self.sizes[0]
        logits = channels.float().mean(dim=(-2, -1)).transpose(1, 2) * self.scale + self.logit_prior.float()
        extras["shift_logits"] = logits
        if self.stay and not self.training:
            logits = logits + self.stay * self.no_move.float()
        p_y, p_x = logits[..., :d].softmax(-1), logits[..., d:].softmax(-1)
        if self.hard is not None and not self.training:
            p_y, p_x = _commit(p_y, self.hard), _commit(p_x, self.hard)
        return shift_frame(last, p_y, p_x)

    def loss(self, extras: dict, batch) -> torch.Tensor | None:
        """``target > 0``: its weight times the cross-entropy of the distributions against the whole-frame
        shift of the last conditioning frame that best matches each clean target frame."""
        if not self.target or "shift_logits" not in extras:
            return None
        best = best_shifts(batch.first[:, :, -1], batch.x0, self.radii)  # (B, T, 2)
        d, logits = self.sizes[0], extras["shift_logits"]
        ce = (nn.functional.cross_entropy(logits[..., :d].flatten(0, 1), best[..., 0].flatten())
              + nn.functional.cross_entropy(logits[..., d:].flatten(0, 1), best[..., 1].flatten()))
        return self.target * ce


def _commit(p: torch.Tensor, at: float) -> torch.Tensor:
    """Distributions ``p`` ``(..., D)`` whose likeliest value has probability ``>= at`` replaced by that
    value alone (one-hot): a confident frame is an exact copy of the moved frame, not a blend."""
    top = p.max(-1, keepdim=True)
    one = nn.functional.one_hot(top.indices[..., 0], p.shape[-1]).to(p.dtype)
    return torch.where(top.values >= at, one, p)


class ResidualOutput(nn.Module):
    """A residual network's output ``(B, out_channels, T, H, W)``: the change (``channels``), the shift
    logits (``shifts.channels``, if any) and the gate logit (one, with ``gate``), in that order."""

    def __init__(self, channels: int, shifts: ShiftPath | None = None, gate: bool = False, snap: float = 0.0,
                 param: str = "x0", change: str = "param") -> None:
        super().__init__()
        check_change_space(change)
        if snap < 0:
            raise ValueError(f"snap is a size of change (>= 0), got {snap}")
        if snap and param != "x0":
            raise ValueError(f"snap drops changes smaller than it from the clean video: it needs the x0 "
                             f"parameterisation, got {param!r}")
        self.c, self.shifts, self.gate, self.snap, self.change = channels, shifts, gate, float(snap), change
        self.out_channels = channels + (shifts.channels if shifts else 0) + int(gate)

    def forward(self, out: torch.Tensor, first: torch.Tensor, x_i: torch.Tensor, i: torch.Tensor,
                from_x0: FromX0) -> tuple[torch.Tensor, dict]:
        """The prediction, in the parameterisation ``from_x0`` expresses an x0 estimate in, and extras."""
        if out.shape[1] != self.out_channels:
            raise ValueError(f"a residual output with {self.out_channels} channels, got {out.shape[1]}")
        c, extras = self.c, {}
        change = out[:, :c] * torch.sigmoid(out[:, -1:]) if self.gate else out[:, :c]
        if self.snap and not self.training:
            change = change * (change.abs().amax(dim=1, keepdim=True) > self.snap)
        last = first[:, :, -1]
        held = (self.shifts(last, out[:, c:c + self.shifts.channels], extras) if self.shifts
                else last[:, :, None].expand_as(x_i))
        return add_change(change, held, x_i, i, from_x0, self.change), extras

    def options(self) -> dict[str, Any]:
        """What a base model's config records to rebuild this output (``from_config``)."""
        return {"shift": self.shifts.options() if self.shifts else None, "gate": self.gate, "snap": self.snap,
                "change": self.change}

    @classmethod
    def from_config(cls, cfg: dict, channels: int) -> "ResidualOutput | None":
        """The output of a base model's config: ``None`` unless ``residual``; ``residual_output`` (absent in
        bases exported before it existed: the plain change) gives the shift path, the gate, the snap and
        where the change is added (absent: ``"param"``, as every base exported before it was recorded)."""
        if not cfg.get("residual"):
            return None
        extra = cfg.get("residual_output") or {}
        shift, snap = extra.get("shift"), float(extra.get("snap", 0.0))
        return cls(channels, ShiftPath(**shift) if shift else None, bool(extra.get("gate", False)), snap,
                   (cfg.get("diffusion") or {}).get("param", "x0"), extra.get("change", "param")).eval()
