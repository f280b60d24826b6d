"""Objectives: standard fine-tuning and adversarial training behind one contract."""

from __future__ import annotations

from robustft.attacks import build_attack, build_trades_attack
from robustft.attacks.base import FullPrecision
from robustft.config import Config
from robustft.objectives.adversarial import AdversarialObjective
from robustft.objectives.base import Objective, ObjectiveOutput
from robustft.objectives.standard import StandardObjective
from robustft.objectives.trades import TradesObjective


def build_objective(cfg: Config) -> Objective:
    """The objective of a config, with its training attack (in fp32 under autocast if ``train.attack_fp32``)."""
    attack = build_attack(cfg.attack)
    if cfg.objective.name == "trades" and cfg.objective.trades_inner == "kl":
        attack = build_trades_attack(cfg.attack)
    if cfg.train.attack_fp32:  # under bf16 autocast the attack still computes its gradients in fp32
        attack = FullPrecision(attack)
    if cfg.objective.name == "standard":
        return StandardObjective()
    if cfg.objective.name == "adversarial":
        return AdversarialObjective(attack)
    if cfg.objective.name == "trades":
        return TradesObjective(attack, beta=cfg.objective.beta)
    raise ValueError(f"objective.name: unknown objective {cfg.objective.name!r}; choose standard, adversarial "
                     "or trades")


__all__ = ["AdversarialObjective", "Objective", "ObjectiveOutput", "StandardObjective", "TradesObjective",
           "build_objective"]
