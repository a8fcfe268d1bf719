"""Product of experts (paper section 4.1, after Yang et al., 2024b): a small action-conditioned
model ``adapt`` (Scratch's network and input layout) trained alone with its own denoising loss,
combined with the black-box base model only at sampling time:

    final = lambda_p * out_adapt + (1 - lambda_p) * out_pre

``residual``, ``motion``, the shift options and ``gate`` give ``adapt`` Scratch's output path
(``avid.nn.residual``), so it can be compared with a shift-path AVID at equal size.

``lambda_p`` (paper sweep {0.2, 0.4, 0.6}) is an attribute, not a weight: a sweep samples one
trained model with several values (``avid.methods.sweeps.set_sampling_options``).
"""

from __future__ import annotations

from avid.methods.base import Context
from avid.methods.scratch import Scratch
from avid.nn import SHIFT_LOGIT_SCALE, SHIFT_PRIOR


class PoE(Scratch):
    name = "poe"
    size_entry = "poe"
    uses_base = True
    sampling_options = ("lambda_p",)

    def __init__(self, ctx: Context, unet: dict | None = None, lambda_p: float = 0.4, residual: bool = False,
                 motion: bool | str = False, shift_radius: int | list[int] = 12, shift_scale: float = SHIFT_LOGIT_SCALE,
                 shift_prior: float = SHIFT_PRIOR, shift_target: float = 0.0, gate: bool = False) -> None:
        super().__init__(ctx, unet, use_actions=True, residual=residual, motion=motion, shift_radius=shift_radius,
                         shift_scale=shift_scale, shift_prior=shift_prior, shift_target=shift_target, gate=gate)
        self.lambda_p = float(lambda_p)

    # training: Scratch.train_predict, i.e. the small model's own prediction (no base call)

    def predict(self, x_i, i, first, actions):
        out_adapt, _ = super().predict(x_i, i, first, actions)
        out_pre = self.base(x_i, i, first)
        # section 4.1, PoE: eps_final = lambda_p eps_adapt + (1 - lambda_p) eps_pre. The weights sum
        # to 1 and every parameterisation is affine in eps at fixed x_i, so it holds in any of them.
        return self.lambda_p * out_adapt + (1 - self.lambda_p) * out_pre, {}
