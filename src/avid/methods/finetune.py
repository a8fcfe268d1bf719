"""Action-conditioned fine-tuning (paper section 4.1). Requires the base model's parameters.

Every parameter of a copy of the base network is trained; action conditioning is added as in the
paper's Procgen setting: a per-frame action embedding concatenated to the diffusion-step embedding
(zero-initialised, so the model starts as the base exactly). The paper fine-tunes with a learning
rate of 2e-5 (Tables 8 and 9; other methods 1e-4): its ``default_lr``, used when ``train.lr`` is not given.
"""

from __future__ import annotations

from avid.methods._parameter_access import action_conditioned_copy, load_frozen_base
from avid.methods.base import Context, Method
from avid.nn import with_first_frames


class Finetune(Method):
    name = "finetune"
    needs_parameters = True
    uses_base = False  # reads the base's weights once, never calls the black box
    default_lr = 2e-5  # Tables 8 and 9

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        base_net, self.output = load_frozen_base(ctx, "finetune")
        self.net = action_conditioned_copy(base_net, ctx)

    def predict(self, x_i, i, first, actions):
        out = self.net(with_first_frames(x_i, first=first), i, actions)
        return self.output(out, first, x_i, i, self.diffusion.from_x0) if self.output else (out, {})
