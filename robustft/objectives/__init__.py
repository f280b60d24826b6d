"""Objectives: standard fine-tuning and adversarial training behind one contract."""

from __future__ import annotations

from robustft.attacks import build_attack
from robustft.config import Config
from robustft.objectives.adversarial import AdversarialObjective
from robustft.objectives.base import Objective, ObjectiveOutput
from robustft.objectives.standard import StandardObjective


def build_objective(cfg: Config) -> Objective:
    """The objective of a config, with its training attack."""
    if cfg.objective.name == "standard":
        return StandardObjective()
    if cfg.objective.name == "adversarial":
        return AdversarialObjective(build_attack(cfg.attack))
    raise ValueError(f"objective.name: unknown objective {cfg.objective.name!r}; choose standard or adversarial")


__all__ = ["AdversarialObjective", "Objective", "ObjectiveOutput", "StandardObjective", "build_objective"]
