"""Per-example losses an attack maximises: cross-entropy and the DLR losses of Croce & Hein (2020).

DLR (difference of logits ratio) is invariant to shifting and rescaling the logits, so it keeps a useful
gradient where a saturated softmax gives cross-entropy none. Every loss has the signature
``loss(logits, y, target) -> [B]``; ``target`` is the loss's reference where it needs one: the target
classes of targeted DLR, the clean logits of the KL divergence (TRADES).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the true class."""
    return F.cross_entropy(logits, y, reduction="none")


def dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3): positive once the example is misclassified."""
    z, _ = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None])[:, 0]
    top_is_y = logits.argmax(1) == y
    best_other = torch.where(top_is_y, z[:, 1], z[:, 0])
    return -(z_y - best_other) / (z[:, 0] - z[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2): pushes the target class t above the true class."""
    if target is None:
        raise ValueError("the targeted DLR loss needs target classes")
    z, _ = logits.sort(dim=1, descending=True)
    z_y, z_t = logits.gather(1, y[:, None])[:, 0], logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


def kl(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_target ‖ p_logits) with p = softmax: how far the prediction moved from the reference logits
    ``target`` (TRADES' inner maximisation, with the clean logits as reference; ``y`` is not used)."""
    if target is None:
        raise ValueError("the KL loss needs the reference (clean) logits")
    ref = F.log_softmax(target, dim=1)
    return (ref.exp() * (ref - F.log_softmax(logits, dim=1))).sum(1)


LOSSES: dict[str, Loss] = {"ce": ce, "dlr": dlr, "dlr-targeted": dlr_targeted, "kl": kl}
MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr-targeted": 4, "kl": 2}
"""Classes each loss needs (DLR reads the third, targeted DLR the fourth largest logit)."""
