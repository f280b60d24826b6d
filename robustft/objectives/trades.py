"""TRADES (Zhang et al., 2019): clean cross-entropy plus β times the KL divergence between the clean and
the adversarial prediction::

    loss = CE(f(x), y) + β · KL(softmax f(x) ‖ softmax f(x_adv)),   x_adv = argmax_{x' ∈ B_ε(x)} KL(f(x) ‖ f(x'))

β trades clean accuracy for robustness (the original uses 6 on CIFAR-10, our default; 1 weighs both
terms alike). The inner maximisation is the original's PGD on the KL divergence
(:func:`robustft.attacks.build_trades_attack`), or, as a variant, the training attack on cross-entropy.
While ε = 0, or with β = 0, the KL term is 0, so the loss is the clean cross-entropy and no attack runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import Attack
from robustft.distributed import unwrap
from robustft.errors import ConfigError
from robustft.objectives.base import ObjectiveOutput
from robustft.objectives.standard import StandardObjective


def kl_divergence(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) averaged over the batch (gradients flow through both)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.log_softmax(logits_clean, dim=1), reduction="batchmean",
                    log_target=True)


class TradesObjective:
    """CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)); x_adv crafted by ``attack`` with the model in eval mode."""

    def __init__(self, attack: Attack, beta: float = 6.0):
        if beta < 0:
            raise ConfigError(f"TRADES beta must be >= 0, got {beta}")
        self.attack, self.beta = attack, beta
        self.clean = StandardObjective()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> ObjectiveOutput:
        if eps == 0 or self.beta == 0:
            out = self.clean(model, x, y, eps)
            return ObjectiveOutput(loss=out.loss, logits_clean=out.logits_clean, parts={**out.parts, "kl": 0.0})
        x_adv = self.attack(unwrap(model), x, y, eps)  # outside DDP's gradient sync
        logits_clean, logits_adv = model(x), model(x_adv)
        ce = F.cross_entropy(logits_clean, y)
        kl = kl_divergence(logits_clean, logits_adv)
        return ObjectiveOutput(loss=ce + self.beta * kl, logits_clean=logits_clean, logits_adv=logits_adv,
                               parts={"ce_clean": ce.item(), "kl": kl.item()})
