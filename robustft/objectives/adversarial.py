"""Classical adversarial training (Madry et al.): cross-entropy on attacked inputs only.

While ε = 0 the attack is the identity, so the batch is trained on clean inputs and no attack runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import Attack
from robustft.distributed import unwrap
from robustft.objectives.base import ObjectiveOutput
from robustft.objectives.standard import StandardObjective


class AdversarialObjective:
    """CE(f(x_adv), y) with x_adv = attack(f, x, y, ε), crafted with the model in eval mode."""

    def __init__(self, attack: Attack):
        self.attack = attack
        self.clean = StandardObjective()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                 x_init: torch.Tensor | None = None) -> ObjectiveOutput:
        """``x_init``: where the attack starts (carried perturbations, ``attack.carry``); None: its own start."""
        if eps == 0:
            return self.clean(model, x, y, eps)
        start = {} if x_init is None else {"x_init": x_init}
        x_adv = self.attack(unwrap(model), x, y, eps, **start)  # outside DDP's gradient sync
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return ObjectiveOutput(loss=loss, logits_adv=logits_adv, parts={"ce_adv": loss.item()}, x_adv=x_adv.detach())
