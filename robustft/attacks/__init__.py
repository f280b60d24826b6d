"""Attacks: the threat-model algebra, PGD, APGD-CE, and a factory from config."""

from __future__ import annotations

from robustft.attacks.apgd import APGD
from robustft.attacks.base import Attack, crafting
from robustft.attacks.pgd import PGD
from robustft.attacks.threat import L2, Linf, ThreatModel, build_threat_model
from robustft.config import AttackConfig, EvalConfig


def build_attack(cfg: AttackConfig) -> Attack:
    """The training attack of a config (APGD keeps the highest-loss point, as the paper does)."""
    threat = build_threat_model(cfg.norm)
    if cfg.name == "apgd":
        return APGD(num_steps=cfg.num_steps, random_start=cfg.random_start, restarts=cfg.restarts, threat=threat)
    if cfg.name == "pgd":
        return PGD(num_steps=cfg.num_steps, rel_step_size=cfg.rel_step_size, random_start=cfg.random_start,
                   restarts=cfg.restarts, threat=threat)
    raise ValueError(f"unknown attack {cfg.name!r}; choose apgd or pgd")


def build_eval_attack(cfg: EvalConfig, norm: str, rel_step_size: float = 0.25) -> Attack:
    """The evaluation attack of a config; any misclassified iterate counts as a success."""
    threat = build_threat_model(norm)
    if cfg.attack == "apgd-ce":
        return APGD(num_steps=cfg.num_steps, restarts=cfg.restarts, select="misclassified", threat=threat)
    if cfg.attack == "pgd":
        return PGD(num_steps=cfg.num_steps, rel_step_size=rel_step_size, restarts=cfg.restarts, threat=threat)
    raise ValueError(f"unknown evaluation attack {cfg.attack!r}; choose apgd-ce or pgd")


__all__ = ["APGD", "PGD", "Attack", "L2", "Linf", "ThreatModel", "build_attack", "build_eval_attack",
           "build_threat_model", "crafting"]
