"""Diagnosis of suboptimal transfer from a run's per-epoch validation curve and final clean accuracy.

Robust fine-tuning at the full ε from the first step often ends with clean accuracy far below plain
fine-tuning (*suboptimal transfer*), in the extreme near chance (*transfer failure*), because validation
clean accuracy stays low for many epochs before the task is learnt (*delayed task adaptation*). The flags,
each a :class:`~robustft.eval.checks.Flag` (raised True, False, or None when it cannot be judged):

- ``transfer_failure``: the final clean accuracy is below ``chance + FAILURE_FRACTION · (1 − chance)``
  (10 % of the way from chance to perfect; chance = 1/classes): e.g. 19 % for 10 classes, 10.9 % for 100.
- ``suboptimal_transfer``: the final clean accuracy is more than ``gap`` (default 10 points) below that
  of a standard fine-tuning reference run of the same config with ε = 0. Needs the reference.
- ``delayed_adaptation``: the delay time (epochs until validation clean accuracy first exceeds the run's
  ``train.delay_threshold``) is longer than the reference's, or than 1 epoch without a reference, or the
  threshold was never crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from robustft.eval.metrics import delay_time
from robustft.eval.result import Flag
from robustft.runs import EpochRow

FAILURE_FRACTION = 0.10
"""Transfer failure: clean accuracy within this fraction of the way from chance to 100 %."""
DEFAULT_GAP = 0.10
"""Suboptimal transfer: clean accuracy more than this (accuracy, 0.10 = 10 points) below the reference."""


def failure_threshold(num_classes: int) -> float:
    """Clean accuracy below which a run counts as a transfer failure, for ``num_classes`` classes."""
    chance = 1.0 / num_classes
    return chance + FAILURE_FRACTION * (1.0 - chance)


@dataclass
class Curve:
    """What the diagnosis needs of one run: its epoch rows, final clean accuracy and settings."""

    name: str
    rows: list[EpochRow]
    clean: float | None
    clean_source: str
    num_classes: int | None
    delay_threshold: float
    schedule: dict[str, Any] = field(default_factory=dict)

    @property
    def delay(self) -> int | None:
        return delay_time([r.val_clean_acc for r in self.rows], self.delay_threshold)


@dataclass
class Diagnosis:
    """Delay time, clean-accuracy gap to the reference and the three flags of one run."""

    run: Curve
    reference: Curve | None
    gap: float | None
    flags: list[Flag]
    notes: list[str]

    def flag(self, name: str) -> Flag:
        return next(f for f in self.flags if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        def curve(c: Curve) -> dict[str, Any]:
            return {"run": c.name, "clean": c.clean, "clean_source": c.clean_source, "delay_epochs": c.delay,
                    "delay_threshold": c.delay_threshold, "num_classes": c.num_classes, "schedule": c.schedule}
        reference = None if self.reference is None else curve(self.reference)
        return {**curve(self.run), "reference": reference, "gap": self.gap,
                "flags": [f.to_dict() for f in self.flags], "notes": self.notes,
                "epochs": epoch_table(self.run, self.reference)}


def epoch_table(run: Curve, reference: Curve | None = None) -> list[dict[str, Any]]:
    """Per epoch: ε (the epoch's mean, for per-step schedules), validation clean and adversarial loss and
    accuracy, the overfitting monitor's accuracies and gap (and the reference's clean accuracy)."""
    ref = {r.epoch: r.val_clean_acc for r in reference.rows} if reference else {}
    return [{"epoch": r.epoch, "eps": r.eps_mean, "val_clean_acc": r.val_clean_acc, "val_clean_loss": r.val_clean_loss,
             "val_adv_acc": r.val_adv_acc, "val_adv_loss": r.val_adv_loss, "mon_attack_acc": r.mon_attack_acc,
             "mon_ref_acc": r.mon_ref_acc, "mon_gap": r.mon_gap,
             **({"ref_val_clean_acc": ref.get(r.epoch)} if reference else {})} for r in run.rows]


def _failure(run: Curve) -> Flag:
    if run.clean is None or run.num_classes is None:
        return Flag("transfer_failure", None, "no final clean accuracy or number of classes to judge by")
    bar = failure_threshold(run.num_classes)
    msg = (f"{run.clean_source} clean accuracy {100 * run.clean:.1f} % vs chance {100 / run.num_classes:.1f} % "
           f"({run.num_classes} classes); failure below {100 * bar:.1f} %")
    return Flag("transfer_failure", run.clean < bar, msg, run.clean)


def _suboptimal(run: Curve, reference: Curve | None, gap: float | None, max_gap: float) -> Flag:
    if gap is None or reference is None or reference.clean is None:
        return Flag("suboptimal_transfer", None, "needs a standard fine-tuning reference run (--reference)")
    return Flag("suboptimal_transfer", gap > max_gap,
                f"{100 * gap:.1f} points below the reference's {100 * reference.clean:.1f} % "
                f"({run.clean_source} clean accuracy); suboptimal beyond {100 * max_gap:.0f} points", gap)


def _delayed(run: Curve, reference: Curve | None) -> Flag:
    if not run.rows:
        return Flag("delayed_adaptation", None, "no epoch rows")
    ref_delay = reference.delay if reference else None
    allowed = ref_delay if ref_delay is not None else 1
    threshold = f"validation clean accuracy > {100 * run.delay_threshold:.0f} %"
    if run.delay is None:
        return Flag("delayed_adaptation", True, f"never reached {threshold} in {len(run.rows)} epochs")
    against = f"the reference's {ref_delay}" if ref_delay is not None else "1"
    return Flag("delayed_adaptation", run.delay > allowed,
                f"{threshold} after {run.delay} epoch(s), against {against}", float(run.delay))


def diagnose(run: Curve, reference: Curve | None = None, max_gap: float = DEFAULT_GAP) -> Diagnosis:
    """Diagnose ``run`` against an optional standard fine-tuning ``reference``.

    The gap compares like with like: test clean accuracy when both runs have it, else the last
    validation clean accuracy of both (``Curve.clean_source`` says which).
    """
    notes: list[str] = []
    gap = None
    if reference is not None:
        if reference.clean_source != run.clean_source:
            notes.append("clean accuracies of run and reference come from different splits")
        if reference.clean is not None and run.clean is not None:
            gap = reference.clean - run.clean
    flags = [_failure(run), _suboptimal(run, reference, gap, max_gap), _delayed(run, reference)]
    return Diagnosis(run=run, reference=reference, gap=gap, flags=flags, notes=notes)


def sparkline(values: Sequence[float | None]) -> str:
    """Accuracies in [0, 1] as a row of block characters, one per epoch (blank where missing)."""
    blocks = "▁▂▃▄▅▆▇█"
    return "".join(" " if v is None else blocks[min(int(v * len(blocks)), len(blocks) - 1)] for v in values)
