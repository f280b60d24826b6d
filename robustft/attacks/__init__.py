"""Attacks: the threat-model algebra, PGD, APGD (CE, DLR, targeted DLR), the reference AutoAttack, and
factories from config."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from robustft.attacks.apgd import APGD
from robustft.attacks.autoattack import AutoAttack
from robustft.attacks.base import Attack, crafting
from robustft.attacks.fgsm import FGSM, NFGSM
from robustft.attacks.fmn import FMN
from robustft.attacks.pgd import PGD
from robustft.attacks.threat import L2, Linf, ThreatModel, build_threat_model
from robustft.config import EVAL_ATTACKS, TRAIN_ATTACKS, AttackConfig, EvalConfig, expand_attacks
from robustft.errors import ConfigError


def rel_step(cfg: AttackConfig, name: str | None = None) -> float:
    """``attack.rel_step_size``, or the default of attack ``name`` (the configured one) when it is null."""
    return cfg.rel_step_size if cfg.rel_step_size is not None else TRAIN_ATTACKS[name or cfg.name].extra["rel_step"]


TRAIN_ATTACKS.register("apgd", lambda cfg, threat: APGD(num_steps=cfg.num_steps, random_start=cfg.random_start,
                                                        restarts=cfg.restarts, threat=threat),
                       summary="APGD-CE, attack.num_steps iterations, step-size free, highest-loss point")
TRAIN_ATTACKS.register("pgd", lambda cfg, threat: PGD(num_steps=cfg.num_steps, rel_step_size=rel_step(cfg),
                                                      random_start=cfg.random_start, restarts=cfg.restarts,
                                                      threat=threat),
                       extra={"rel_step": 0.25}, summary="PGD, attack.num_steps sign steps of rel_step_size · ε")
TRAIN_ATTACKS.register("fgsm", lambda cfg, threat: FGSM(rel_step_size=rel_step(cfg), random_start=cfg.random_start,
                                                        threat=threat),
                       extra={"rel_step": 1.25}, summary="FGSM with a random start (FGSM-RS), one step of 1.25 ε")
TRAIN_ATTACKS.register("nfgsm", lambda cfg, threat: NFGSM(noise_mult=cfg.noise_mult, rel_step_size=rel_step(cfg)),
                       extra={"rel_step": 1.0, "in_ball": False},
                       check=lambda a, config: [] if a.norm == "linf" else
                       ["attack.name: nfgsm is defined for attack.norm=linf only"],
                       summary="N-FGSM: noise in [−kε, kε], one step of ε, not projected to the ball")


TRAIN_ATTACK_EXTRAS = {"rel_step": "the default attack.rel_step_size (null takes it)",
                       "in_ball": "False for an attack that leaves the ε-ball by design (N-FGSM's noise)"}
"""What a ``TRAIN_ATTACKS`` entry's ``extra`` may say."""


def build_attack(cfg: AttackConfig) -> Attack:
    """The training attack of a config (APGD keeps the highest-loss point, as the paper does)."""
    return TRAIN_ATTACKS[cfg.name].build(cfg, build_threat_model(cfg.norm))


def build_trades_attack(cfg: AttackConfig) -> Attack:
    """TRADES' inner maximisation: PGD on KL(f(x) ‖ f(x')) from x plus N(0, 0.001²) noise, sign steps of
    ``rel_step_size`` × ε (the original: 10 steps of 0.007 at ε = 0.031, i.e. 0.23 ε), last iterate kept.
    One run: restarts from a start this close to x would be near copies."""
    return PGD(num_steps=cfg.num_steps, rel_step_size=rel_step(cfg, "pgd"), random_start=False, start_noise=0.001,
               loss="kl", threat=build_threat_model(cfg.norm))


def _apgd(loss: str) -> Callable[[EvalConfig, str], Attack]:
    """Builder of robustft's APGD in evaluation mode (any misclassified iterate counts)."""
    return lambda cfg, norm: APGD(num_steps=eval_steps(cfg), restarts=cfg.restarts, select="misclassified",
                                  threat=build_threat_model(norm), loss=loss,
                                  targets=cfg.targets if loss == "dlr-targeted" else APGD.targets,
                                  warm_steps=cfg.settings.warm_steps)


def eval_steps(cfg: EvalConfig) -> int:
    """``eval.num_steps``, or where it is null the preset's (curve: 100), else 10."""
    return cfg.settings.num_steps


EVAL_ATTACKS.register("apgd-ce", _apgd(loss="ce"), summary="APGD on cross-entropy (eval.num_steps, eval.restarts)")
EVAL_ATTACKS.register("apgd-dlr", _apgd(loss="dlr"), summary="APGD on the DLR loss")
EVAL_ATTACKS.register("apgd-t", _apgd(loss="dlr-targeted"),
                      summary="targeted APGD-DLR on the eval.targets most likely wrong classes in turn")
EVAL_ATTACKS.register("fmn", lambda cfg, norm: FMN(steps=cfg.fmn_steps, threat=build_threat_model(norm)),
                      summary="FMN, minimum-norm (eval.fmn_steps): once per example, broken at every ε ≥ its radius")
EVAL_ATTACKS.register("pgd", lambda cfg, norm: PGD(num_steps=eval_steps(cfg), rel_step_size=0.25, restarts=cfg.restarts,
                                                   select="misclassified", threat=build_threat_model(norm)),
                      summary="PGD with steps of ε/4")
EVAL_ATTACKS.register("square", lambda cfg, norm: AutoAttack(components=("square",), square_queries=cfg.square_queries,
                                                             norm=norm),
                      summary="Square, black-box (pyautoattack), eval.square_queries queries")
EVAL_ATTACKS.register("fab-t", lambda cfg, norm: AutoAttack(components=("fab-t",), norm=norm),
                      summary="targeted FAB (pyautoattack), AutoAttack's: 100 iterations, 9 target classes")
EVAL_ATTACKS.register("autoattack", lambda cfg, norm: AutoAttack(norm=norm),
                      summary="the reference AutoAttack, standard version (pyautoattack)")
EVAL_ATTACKS.register("aa-apgd-ce", lambda cfg, norm: AutoAttack(components=("apgd-ce",), num_steps=eval_steps(cfg),
                                                                 restarts=cfg.restarts, norm=norm),
                      summary="the reference implementation's APGD-CE (pyautoattack)")


def build_eval_attacks(cfg: EvalConfig, norm: str) -> dict[str, Attack]:
    """The evaluation attacks of a config, by name, in the order they run (presets expanded)."""
    names = expand_attacks(list(cfg.attacks))
    unknown = [n for n in names if n not in EVAL_ATTACKS]
    if unknown:
        raise ConfigError(f"unknown evaluation attack(s) {unknown}; choose from {', '.join(EVAL_ATTACKS)}")
    return {name: EVAL_ATTACKS[name].build(cfg, norm) for name in names}


def describe_attack(name: str, attack: Attack) -> dict[str, Any]:
    """A JSON-ready description of an attack for the evaluation protocol."""
    out: dict[str, Any] = {"name": name}
    if isinstance(attack, AutoAttack):
        out["implementation"] = "pyautoattack " + ("standard" if not attack.components else "custom")
    elif dataclasses.is_dataclass(attack):
        out["implementation"] = "robustft " + type(attack).__name__
    if dataclasses.is_dataclass(attack):
        for f in dataclasses.fields(attack):
            value = getattr(attack, f.name)
            out[f.name] = getattr(value, "name", value) if f.name == "threat" else value
    return out


__all__ = ["APGD", "EVAL_ATTACKS", "FGSM", "FMN", "NFGSM", "PGD", "TRAIN_ATTACKS", "Attack", "AutoAttack", "L2", "Linf", "ThreatModel", "build_attack",
           "build_eval_attacks", "build_trades_attack", "rel_step", "build_threat_model", "crafting", "describe_attack"]
