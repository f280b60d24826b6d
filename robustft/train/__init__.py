"""Training: optimiser groups, checkpoints and the fit loop."""

from robustft.train.api import eps_schedule, fit
from robustft.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from robustft.train.optim import build_optimizer, param_groups
from robustft.train.trainer import Loop, NonFiniteLossError, fit_config, resolve_device, train_loop
from robustft.train.validation import Validation

__all__ = ["Loop", "NonFiniteLossError", "Validation", "build_optimizer", "eps_schedule", "fit", "fit_config", "train_loop",
           "load_checkpoint", "load_model_weights", "param_groups",
           "resolve_device", "save_checkpoint"]
