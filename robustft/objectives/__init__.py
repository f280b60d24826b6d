"""Objectives: standard fine-tuning and adversarial training behind one contract."""

from __future__ import annotations

from robustft.attacks import Attack, build_attack, build_trades_attack
from robustft.attacks.base import FoldedBatchNorm, FullPrecision
from robustft.config import OBJECTIVES, Config
from robustft.objectives.adversarial import AdversarialObjective
from robustft.objectives.base import Objective, ObjectiveOutput
from robustft.objectives.standard import StandardObjective
from robustft.objectives.trades import TradesObjective


def build_objective(cfg: Config) -> Objective:
    """The objective of a config (``objective.name``, registered in ``OBJECTIVES``), with its training attack."""
    return OBJECTIVES[cfg.objective.name].build(cfg)


def training_attack(cfg: Config, attack: Attack | None = None) -> Attack:
    """The configured training attack (or ``attack``), on the BatchNorm-folded model if ``attack.fold_bn``,
    in fp32 under autocast if ``train.attack_fp32``."""
    attack = attack if attack is not None else build_attack(cfg.attack)
    attack = FoldedBatchNorm(attack) if cfg.attack.fold_bn else attack
    return FullPrecision(attack) if cfg.train.attack_fp32 else attack  # under bf16 the attack's gradients stay fp32


def _trades(cfg: Config) -> Objective:
    inner = build_trades_attack(cfg.attack) if cfg.objective.trades_inner == "kl" else None
    return TradesObjective(training_attack(cfg, inner), beta=cfg.objective.beta)


OBJECTIVES.register("standard", lambda cfg: StandardObjective(), clean=True, color="#7f7f7f",
                    extra={"type": StandardObjective},
                    summary="cross-entropy on clean inputs (standard fine-tuning, the clean reference)")
OBJECTIVES.register("adversarial", lambda cfg: AdversarialObjective(training_attack(cfg)),
                    extra={"type": AdversarialObjective, "carry": True},
                    summary="cross-entropy on the training attack's examples (Madry)")
OBJECTIVES.register("trades", _trades, keys=("beta", "trades_inner"),
                    extra={"type": TradesObjective, "record": lambda o: {"beta": o.beta},
                           "label": lambda c: f"TRADES β={c.beta:g}{', CE inner' if c.trades_inner == 'ce' else ''}"},
                    summary="clean cross-entropy + beta · KL(clean ‖ attacked) (TRADES)")
"""Each entry's ``extra``: ``type``, the class its builder returns (a run of ``robustft.fit`` with an objective
object records the entry's name); ``record``, what else of such an object the run records; ``label``, what reports
add to the schedule's name (from the ``objective`` section); ``carry``, whether ``attack.carry`` applies."""


__all__ = ["AdversarialObjective", "Objective", "ObjectiveOutput", "StandardObjective", "TradesObjective",
           "build_objective", "training_attack"]
