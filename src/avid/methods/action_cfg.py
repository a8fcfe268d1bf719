"""Action classifier-free guidance (paper section 4.1, after Ho & Salimans, 2021): a small
action-conditioned model ``adapt`` (Scratch's network) trained alone with its actions replaced by
the learned "no action" with probability ``action_dropout`` (p = 0.2), combined with the black-box
base model at sampling time:

    final = out_pre + lambda_a * (adapt(a) - adapt(no action))

``residual``, ``motion``, the shift options and ``gate``: Scratch's output path (``avid.nn.residual``),
applied to both predictions before their difference.

``lambda_a`` (paper sweep {0.3, 1, 3, 10}) is an attribute that a sweep may change without
retraining (``avid.methods.sweeps.set_sampling_options``).
"""

from __future__ import annotations

from avid.methods.base import Context
from avid.methods.scratch import Scratch
from avid.nn import SHIFT_LOGIT_SCALE, SHIFT_PRIOR


class ActionCFG(Scratch):
    name = "action-cfg"
    size_entry = "action-cfg"
    uses_base = True
    sampling_options = ("lambda_a",)

    def __init__(self, ctx: Context, unet: dict | None = None, lambda_a: float = 1.0,
                 action_dropout: float = 0.2, residual: bool = False, motion: bool | str = False,
                 shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0, gate: bool = False) -> None:
        super().__init__(ctx, unet, use_actions=True, action_dropout=action_dropout, residual=residual, motion=motion,
                         shift_radius=shift_radius, shift_scale=shift_scale, shift_prior=shift_prior,
                         shift_target=shift_target, gate=gate)
        self.lambda_a = float(lambda_a)

    # training: Scratch.train_predict with action dropout (no base call)

    def predict(self, x_i, i, first, actions):
        if actions is None:
            raise ValueError("action-cfg guides towards given actions; got actions=None")
        out_a, out_null = self._predict(x_i, i, first, actions)[0], self._predict(x_i, i, first, None)[0]
        out_pre = self.base(x_i, i, first)
        # section 4.1, action CFG: eps_final = eps_pre + lambda_a (eps_adapt(a) - eps_adapt(no action)).
        # A difference of two predictions at the same x_i maps linearly between parameterisations,
        # so the same combination holds in x0 and v.
        return out_pre + self.lambda_a * (out_a - out_null), {}
