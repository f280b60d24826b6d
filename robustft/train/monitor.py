"""The catastrophic-overfitting / gradient-masking monitor, and the choice of the checkpoint to evaluate.

Every epoch trained at ε > 0, on a fixed subset of the validation split (its first ``train.monitor_n``
examples, attacks seeded per batch so epochs are comparable), the trainer measures accuracy

- under the **training attack** at the epoch's ε (``mon_attack_acc``), and
- under a **reference attack**, APGD-CE with ``train.monitor_steps`` (≥ 10) iterations in evaluation mode
  (any misclassified iterate counts), at the same ε (``mon_ref_acc``).

A model that learnt to defeat its own training attack rather than to be robust shows a gap between the
two: FGSM-trained models overfit catastrophically (Wong et al., 2020; their accuracy under FGSM stays high
while PGD takes it to 0 within an epoch), and short multi-step training can end up masking gradients.
``mon_gap = mon_attack_acc − mon_ref_acc``. Early in adversarial training, while the model is not robust
yet, a weak training attack trails a strong one anyway; what matters is the model that comes out, and the
moment robustness collapses:

- the run raises ``catastrophic_overfitting`` (summary, table, report, diagnosis) when the gap of the **last
  monitored epoch it keeps** is above ``train.overfit_gap`` (default 10 points), or when it was stopped for
  overfitting; every epoch above the threshold is listed;
- an epoch **collapses** when its gap is above the threshold and its APGD-CE accuracy fell by more than half
  the threshold from the previous monitored epoch (the strong attack gains while the training attack does
  not: Wong et al.'s signature). ``train.on_overfit: stop`` ends training at a collapse, before
  checkpointing that epoch, so the run keeps and evaluates the last good checkpoint; ``warn`` trains on.

The reference attack is deliberately modest (it runs every epoch): it catches a model that beats its
training attack, not every form of masking. The evaluation's sanity checks (``converged``, ``black_box``)
and AutoAttack remain the judges of the final model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from robustft.attacks import APGD, Attack, build_threat_model
from robustft.runs import EpochRow

log = logging.getLogger(__name__)

MONITOR_KEYS = ("mon_eps", "mon_attack_acc", "mon_ref_acc", "mon_gap")
"""The fields the monitor fills in an epoch row (:class:`robustft.runs.EpochRow`; None while ε = 0 or the monitor
is off)."""


def reference_attack(num_steps: int, norm: str) -> Attack:
    """The monitor's reference: APGD-CE in evaluation mode (any misclassified iterate counts)."""
    return APGD(num_steps=num_steps, loss="ce", select="misclassified", threat=build_threat_model(norm))


@dataclass(frozen=True)
class OverfitVerdict:
    """The monitor's finding over a run's epoch rows."""

    raised: bool
    epochs: list[int]
    """Epochs (0-based) whose gap exceeded the threshold."""
    max_gap: float | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"raised": self.raised, "epochs": self.epochs, "max_gap": self.max_gap, "threshold": self.threshold}

    @property
    def message(self) -> str:
        if self.max_gap is None:
            return "not monitored (train.monitor_n = 0, or ε stayed 0)"
        head = (f"the largest gap between accuracy under the training attack and under APGD-CE on the monitor "
                f"subset was {100 * self.max_gap:.1f} points (threshold {100 * self.threshold:.0f})")
        over = f"; above it in epoch(s) {', '.join(str(e + 1) for e in self.epochs)}" if self.epochs else ""
        if not self.raised:
            return head + over + ("" if not self.epochs else ", but not in the last kept epoch")
        return (head + over + ", and in the weights the run ends with: the model learnt to defeat its "
                "training attack rather than to be robust (catastrophic overfitting); use attack.name=nfgsm or a "
                "multi-step attack, a smaller ε_g, or train.on_overfit=stop")


def overfit_verdict(rows: Sequence[EpochRow], threshold: float, stopped: int | None = None) -> OverfitVerdict:
    """The verdict on a run's epoch rows (with the row of the epoch it ``stopped`` at, if any): raised when
    the last monitored kept epoch's gap is above ``threshold`` or the run stopped for overfitting."""
    gaps = [(r.epoch, r.mon_gap) for r in rows if r.mon_gap is not None]
    kept = [g for e, g in gaps if stopped is None or e < stopped]
    raised = stopped is not None or bool(kept and kept[-1] > threshold)
    return OverfitVerdict(raised, [e for e, g in gaps if g > threshold], max(g for _, g in gaps) if gaps else None,
                          threshold)


def collapsed(previous: Sequence[EpochRow], row: EpochRow, threshold: float) -> bool:
    """Whether ``row`` is a collapse after the epoch rows ``previous``: its gap is above ``threshold`` and its
    reference accuracy fell by more than ``threshold / 2`` from the last monitored epoch before it."""
    before = [r.mon_ref_acc for r in previous if r.mon_ref_acc is not None]
    if row.mon_gap is None or row.mon_gap <= threshold or row.mon_ref_acc is None or not before:
        return False
    return before[-1] - row.mon_ref_acc > threshold / 2


def best_robust_epoch(rows: Sequence[EpochRow], eps_target: float) -> EpochRow | None:
    """The epoch row with the highest ``mon_ref_acc`` among epochs trained entirely at ε_g (the earliest on a
    tie), or None when there is none; validation data only, and only after the ramp has ended."""
    full = [r for r in rows if r.mon_ref_acc is not None and eps_target > 0
            and abs(r.eps_mean - eps_target) <= 1e-9 * eps_target]
    return max(full, key=lambda r: (r.mon_ref_acc, -r.epoch)) if full else None
