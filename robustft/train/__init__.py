"""Training: optimiser groups, checkpoints and the fit loop."""

from robustft.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from robustft.train.optim import build_optimizer, param_groups
from robustft.train.trainer import NonFiniteLossError, fit, resolve_device

__all__ = ["NonFiniteLossError", "build_optimizer", "fit", "load_checkpoint", "load_model_weights", "param_groups",
           "resolve_device", "save_checkpoint"]
