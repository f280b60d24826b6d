"""Weight averaging: an exponential moving average (EMA) of the model's parameters.

After every optimiser step ``ema ← d·ema + (1 − d)·θ`` with ``d = min(decay, (1 + s)/(10 + s))`` at update
``s`` (the warm-up of timm's ``ModelEmaV2``/``V3``, so that in a short run the average is not dominated by
the starting weights). Averaged weights of adversarial training are smoother and usually more robust than
the last iterate, and they damp the oscillations of a short, high-LR fine-tuning.

**BatchNorm buffers are taken from the live model**, not averaged and not recomputed: the running
statistics are already an exponential average (momentum 0.1, i.e. the last ~10 batches) of the activations
the live weights produced on the training inputs, clean or attacked as the objective decided; averaging
them once more would make them lag further behind, and recomputing them would need an extra pass over
the training data with some choice of clean or attacked inputs that the objective, not the EMA, owns.
The average is a plain state dict (no second module), saved in the checkpoint beside the live weights,
so a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustft.errors import ConfigError


class EMA:
    """The EMA of ``model``'s floating-point parameters (see the module docstring).

    Args:
        model: the live model (the average starts as a copy of its parameters).
        decay: the target decay d in (0, 1); 0.999 averages over ~1,000 steps, 0.99 over ~100.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ConfigError(f"train.ema_decay: must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.params = {k: p.detach().clone() for k, p in model.named_parameters()}

    def current_decay(self) -> float:
        """The decay of the next update (warm-up: small at first, reaching ``decay``)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the live parameters in after an optimiser step."""
        d = self.current_decay()
        for k, p in model.named_parameters():
            self.params[k].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A full state dict of ``model`` with the averaged parameters and the live buffers."""
        live = model.state_dict()
        return {k: (self.params[k].clone() if k in self.params else v.detach().clone()) for k, v in live.items()}

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the average (to continue it exactly)."""
        return {"params": self.params, "updates": self.updates, "decay": self.decay}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_state`."""
        params = state["params"]
        assert isinstance(params, dict)
        missing = set(self.params) - set(params)
        if missing:
            raise ValueError(f"the checkpoint's EMA lacks {len(missing)} parameter(s), e.g. {sorted(missing)[:3]}")
        self.params = {k: params[k].to(self.params[k].device).clone() for k in self.params}
        self.updates = int(state["updates"])


class Swapped:
    """Context manager: ``model`` runs with the EMA weights inside, its live weights restored on exit.

    With ``ema`` None it changes nothing. Used to validate (and monitor) the weights that will be
    evaluated without keeping a second copy of the model.
    """

    def __init__(self, model: nn.Module, ema: EMA | None):
        self.model, self.ema = model, ema
        self.live: dict[str, torch.Tensor] = {}

    def __enter__(self) -> nn.Module:
        if self.ema is not None:
            with torch.no_grad():
                for k, p in self.model.named_parameters():
                    self.live[k] = p.detach().clone()
                    p.copy_(self.ema.params[k])
        return self.model

    def __exit__(self, *exc: object) -> None:
        if self.ema is not None:
            with torch.no_grad():
                for k, p in self.model.named_parameters():
                    p.copy_(self.live[k])
            self.live = {}
