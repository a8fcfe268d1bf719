"""Training: the Lightning module and run set-up (EMA, checkpoints, resume, logging, export)."""

from avid.train.module import MethodModule, NonFiniteLoss
from avid.train.run import build_context, load_method, train, with_method_defaults

__all__ = ["MethodModule", "NonFiniteLoss", "build_context", "load_method", "train", "with_method_defaults"]
