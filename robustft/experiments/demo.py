"""``robustft demo``: the finding on real data in one command.

On the embedded default (ImageNet EfficientNet-Lite0 → Fashion-MNIST at its native 28×28, both offline) it runs
standard fine-tuning, fix (adversarial training at ε_g from the first step) and Epsilon-Scheduling (ε = 0,
then a linear ramp, then ε_g), evaluates them with every attack AutoAttack runs along the ε grid (the
``aa-curve`` preset, with its AutoAttack check), and renders the report. The regime is Fashion-MNIST's own
radius, ε_g = 32/255 (its literature evaluates at 0.1–0.3), where fix falls well below standard fine-tuning;
smooth activations, a 7-step training attack, weight averaging and 30 epochs make the robustness real
(docs/research/recipe_search/README.md has the search, the hinge rule and its measurements).
Finished runs are reused and a killed run resumes, so running it again continues where it stopped.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from robustft.config import SCHEDULES, Config, ConfigError, is_clean_objective
from robustft.eval.metrics import adaptation_epoch
from robustft.experiments.pipeline import SweepResult, sweep_and_report
from robustft.experiments.sweep import SweepSpec, expand
from robustft.runs import RunDir

DEMO_SETTINGS = {
    "data.name": "fashion_mnist", "data.image_size": 28, "data.n_train": 1000, "data.n_val": 500,
    "data.n_test": 1000, "data.batch_size": 64, "data.flip": True, "data.pad_crop": 2,
    "model.name": "efficientnet_lite0", "model.pretrained": True, "model.activation": "silu",
    "attack.eps": "32/255", "attack.name": "apgd", "attack.num_steps": 7,
    "optim.lr": 1.0e-3, "optim.weight_decay": 0.05, "optim.warmup_epochs": 1,
    "train.epochs": 30, "train.val_adv_n": 0, "train.monitor_n": 128, "train.ema_decay": 0.99,
    "train.delay_threshold": 0.5,
    "eval.attacks": ["aa-curve"], "eval.n": 500, "eval.eps_step": "8/255",
}
"""The demo's regime (see the module docstring); every run of the demo shares it."""
DEMO_HINGES = (4, 9)
"""Epsilon-Scheduling's hinges (T1, T2) in epochs of the 30: T1 when standard fine-tuning first reaches 90 % of its
final validation accuracy, T2 when fix does (:func:`rule_hinges`; seeds 0, 1, 2 gave (4, 10), (4, 9), (5, 6), and
the hinges are their medians: docs/research/recipe_search/README.md, section 12)."""
NO_HINGES = {"schedule.t1": None, "schedule.t2": None}
DEMO_VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {"objective.name": "standard", "schedule.kind": "fix", **NO_HINGES},
    "fix": {"objective.name": "adversarial", "schedule.kind": "fix", **NO_HINGES},
    "scheduled": {"objective.name": "adversarial", "schedule.kind": "hinge", "schedule.t1": DEMO_HINGES[0],
                  "schedule.t2": DEMO_HINGES[1]},
}


def rule_hinges(run_dirs: Sequence[str | Path], fraction: float = 0.9) -> dict[int, tuple[int | None, int | None]]:
    """The hinge rule applied to a demo's own runs, per seed: (T1, T2) = the epochs after which standard
    fine-tuning and fix first reach ``fraction`` of their final validation clean accuracy
    (:func:`robustft.eval.metrics.adaptation_epoch`); None where the seed's run is missing. ``DEMO_HINGES`` was
    set by this rule (docs/demo.md)."""
    found: dict[int, dict[str, int | None]] = {}
    for path in map(RunDir, map(Path, run_dirs)):
        cfg = path.config()
        variant = "standard" if is_clean_objective(cfg.objective.name) else \
            "fix" if SCHEDULES[cfg.schedule.kind].baseline else None
        if variant is not None:
            accs = [r.val_clean_acc for r in path.epoch_rows()]
            found.setdefault(cfg.train.seed, {})[variant] = adaptation_epoch(accs, fraction)
    return {seed: (v.get("standard"), v.get("fix")) for seed, v in sorted(found.items())}


def demo_config(overrides: Sequence[str] = (), variant: str = "fix", seed: int = 0) -> Config:
    """The config of one demo run (``variant`` of seed ``seed``), with ``overrides`` (``section.key=value``,
    values parsed as YAML) on top: what benchmarks and experiments on the demo's regime start from."""
    extra = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in overrides)}
    spec = demo_spec()
    spec = replace(spec, fixed={**spec.fixed, **extra}, variants={variant: spec.variants[variant]},
                   grid={"train.seed": [seed]})
    return expand(spec)[0].config


def demo_spec(out_dir: str | Path = "runs/demo", seeds: int = 1) -> SweepSpec:
    """The demo as a sweep: standard, fix and scheduled, over ``seeds`` seeds (0, 1, …)."""
    if seeds < 1:
        raise ConfigError(f"seeds: at least 1, got {seeds}")
    return SweepSpec(base=None, out_dir=Path(out_dir), fixed=dict(DEMO_SETTINGS), variants=DEMO_VARIANTS,
                     grid={"train.seed": list(range(seeds))})


def run_demo(out_dir: str | Path = "runs/demo", seeds: int = 1, jobs: int = 1) -> SweepResult:
    """Train and evaluate the demo's runs (skipping finished ones), ``jobs`` at a time, then write the report
    to ``OUT_DIR/report`` (:func:`robustft.experiments.pipeline.sweep_and_report`)."""
    return sweep_and_report(demo_spec(out_dir, seeds), jobs, title="robustft demo: standard vs fix vs "
                            "Epsilon-Scheduling", label="demo")
