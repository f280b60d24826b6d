"""What every epoch measures on validation examples: clean accuracy, accuracy under the training attack at
ε_g, and the catastrophic-overfitting monitor (robustft/train/monitor.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustft import distributed as ddp
from robustft.attacks import Attack, build_attack
from robustft.attacks.base import FoldedBatchNorm
from robustft.config import Config
from robustft.data import DataSplits, ImageSource, eval_batches
from robustft.eval.metrics import accuracy
from robustft.train.monitor import reference_attack


@dataclass
class Validation:
    """The validation examples and what is measured on them after every epoch.

    Attributes:
        source: the validation examples.
        image_size: side of the images the model takes (``source`` is resized to it when it differs).
        batch_size: examples per forward pass.
        seed: seeds the attacks per batch, so every epoch attacks alike (comparable numbers).
        attack: the training attack, for ``val_adv_*`` and the monitor's first number (None: neither).
        adv_eps: ε of ``val_adv_*``.
        adv_n: examples (the first ones) attacked at ``adv_eps`` every epoch; 0 turns it off.
        monitor_n: examples (the first ones) of the monitor; 0 turns it off.
        monitor_steps: iterations of the monitor's reference attack, APGD-CE.
        norm: threat model of the reference attack.
        fold_bn: run the monitor's attacks on a BatchNorm-folded copy of the model (``attack.fold_bn``;
            accuracy is the model's own).
    """

    source: ImageSource
    image_size: int
    batch_size: int = 256
    seed: int = 0
    attack: Attack | None = None
    adv_eps: float = 0.0
    adv_n: int = 0
    monitor_n: int = 128
    monitor_steps: int = 10
    norm: str = "linf"
    fold_bn: bool = False

    @classmethod
    def from_config(cls, cfg: Config, data: DataSplits) -> "Validation":
        """The validation of a configured run (its training attack, ``train.val_adv_n`` at ``attack.eps``)."""
        return cls(data.val, cfg.data.image_size, cfg.data.eval_batch_size, cfg.train.seed, build_attack(cfg.attack),
                   cfg.attack.eps, cfg.train.val_adv_n, cfg.train.monitor_n, cfg.train.monitor_steps, cfg.attack.norm,
                   cfg.attack.fold_bn)

    def first(self, n: int) -> ImageSource:
        """The first ``n`` validation examples (all of them when there are fewer)."""
        return self.source.subset(torch.arange(min(n, len(self.source))))


def validate(model: nn.Module, val: Validation, device: torch.device) -> dict[str, float]:
    """Clean accuracy and loss on the validation examples; adversarial ones at ``adv_eps`` on the first
    ``adv_n``, with the training attack seeded per batch (comparable across epochs). Under torchrun every
    process takes its share of the batches and the counts are summed."""
    model.eval()
    out = dict(zip(("val_clean_acc", "val_clean_loss"), sharded_accuracy(model, val.source, val, device)))
    if min(val.adv_n, len(val.source)) > 0 and val.adv_eps > 0 and val.attack is not None:
        acc, loss = sharded_accuracy(model, val.first(val.adv_n), val, device, val.attack, val.adv_eps)
        out.update(val_adv_acc=acc, val_adv_loss=loss)
    return out


def monitor(model: nn.Module, val: Validation, device: torch.device, eps: float) -> dict[str, float]:
    """The catastrophic-overfitting monitor's numbers at the epoch's ``eps`` (robustft/train/monitor.py):
    accuracy on the first ``monitor_n`` validation examples under the training attack and under APGD-CE;
    nothing while ε = 0, without a training attack, or with the monitor off."""
    subset = val.first(val.monitor_n)
    if len(subset) == 0 or eps == 0 or val.attack is None:
        return {}
    model.eval()
    attack, reference = val.attack, reference_attack(val.monitor_steps, val.norm)
    if val.fold_bn:
        attack, reference = FoldedBatchNorm(attack), FoldedBatchNorm(reference)
    train_acc = sharded_accuracy(model, subset, val, device, attack, eps)[0]
    ref_acc = sharded_accuracy(model, subset, val, device, reference, eps)[0]
    return {"mon_eps": eps, "mon_attack_acc": train_acc, "mon_ref_acc": ref_acc, "mon_gap": train_acc - ref_acc}


def sharded_accuracy(model: nn.Module, source: ImageSource, val: Validation, device: torch.device,
                     attack: Attack | None = None, eps: float = 0.0) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over this process's batches of ``source``, summed over processes; the
    attack's randomness is seeded per batch and the caller's random state is left as it was."""
    shard, bs = ddp.current(), val.batch_size
    correct = loss = n = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b in range(shard.rank, -(-len(source) // bs), shard.world):  # every world-th batch, from rank
            part = source.subset(torch.arange(b * bs, min((b + 1) * bs, len(source))))
            torch.manual_seed(val.seed * 1_000_003 + b)
            acc_b, loss_b = accuracy(model, eval_batches(part, val.image_size, bs), device, attack, eps)
            correct, loss, n = correct + acc_b * len(part), loss + loss_b * len(part), n + len(part)
    correct, loss, n = ddp.all_reduce_sum([correct, loss, n])
    return correct / max(n, 1), loss / max(n, 1)
