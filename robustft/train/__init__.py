"""Training: optimiser groups, checkpoints and the fit loop."""

from robustft.train.api import eps_schedule, fit, tuning
from robustft.train.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from robustft.train.optim import build_optimizer, param_groups
from robustft.train.trainer import Loop, NonFiniteLossError, fit_config, resolve_device, train_loop
from robustft.train.tune import Tuning, build_tuned_model
from robustft.train.validation import Validation

__all__ = ["Loop", "NonFiniteLossError", "Tuning", "Validation", "build_tuned_model", "tuning", "build_optimizer", "eps_schedule", "fit", "fit_config", "train_loop",
           "load_checkpoint", "load_model_weights", "param_groups",
           "resolve_device", "save_checkpoint"]
