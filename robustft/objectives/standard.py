"""Standard fine-tuning: cross-entropy on clean inputs (ε is ignored)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustft.objectives.base import ObjectiveOutput


class StandardObjective:
    """CE(f(x), y)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> ObjectiveOutput:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return ObjectiveOutput(loss=loss, logits_clean=logits, parts={"ce_clean": loss.item()})
