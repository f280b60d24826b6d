"""Hyper-parameter search with ASHA on Ray Tune: learning rate and weight decay, log-uniform, maximising
validation clean accuracy, within a trial and/or time budget; the best config written as ready-to-run YAML.

The paper's protocol (``preset="paper"``): tune on **fix** (adversarial training at ε_g from the start)
and reuse the result for the scheduled run, so the schedule gets no extra tuning. Ray is an optional extra
(``pip install 'robustft[tune]'``); it runs locally by default, or on a cluster given its address.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustft.analysis.stats import baseline_name
from robustft.api import fine_tune
from robustft.config import (
    Config,
    ConfigError,
    ObjectiveConfig,
    config_from_dict,
    config_to_dict,
    is_clean_objective,
    save_config,
)
from robustft.errors import MissingDependencyError, TuneError
from robustft.experiments.cluster import join_ray
from robustft.runs import write_json

if TYPE_CHECKING:  # Ray is optional and slow to import
    from ray.tune import Result

log = logging.getLogger(__name__)
METRIC = "val_clean_acc"
"""The name under which trials report their epoch row's ``val_clean_acc`` to Ray Tune (maximised)."""
PRESETS = ("none", "paper")


@dataclass(frozen=True)
class SearchSettings:
    """What to search and for how long."""

    lr: tuple[float, float] = (1e-5, 1e-1)
    """Log-uniform range of optim.lr."""
    weight_decay: tuple[float, float] = (1e-5, 1e-1)
    """Log-uniform range of optim.weight_decay."""
    num_samples: int = 8
    """Trials (configurations sampled); with ``time_budget_s`` the search stops at whichever comes first."""
    time_budget_s: float | None = None
    """Wall-clock budget of the whole search, seconds (the paper: 30 minutes)."""
    grace_period: int = 1
    """Epochs every trial trains before ASHA may stop it."""
    reduction_factor: int = 2
    """ASHA keeps 1/reduction_factor of the trials at each rung."""
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    seed: int = 0
    """Seed of the sampled configurations."""

    def check(self) -> None:
        problems = [f"{name}: expected 0 < low < high, got {rng}" for name, rng in
                    (("lr", self.lr), ("weight_decay", self.weight_decay)) if not 0 < rng[0] < rng[1]]
        if self.num_samples < 1:
            problems.append(f"num_samples: at least 1, got {self.num_samples}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time_budget_s: must be positive, got {self.time_budget_s}")
        if self.reduction_factor < 2:
            problems.append(f"reduction_factor: at least 2, got {self.reduction_factor}")
        if problems:
            raise ConfigError(problems)


def tuning_config(cfg: Config, preset: str) -> Config:
    """The config trials train: ``cfg`` itself, or its fix variant under the paper's preset; never evaluated."""
    raw = config_to_dict(cfg)
    if preset == "paper":
        if is_clean_objective(raw["objective"]["name"]):  # the robust default objective
            raw["objective"]["name"] = ObjectiveConfig().name
        raw["schedule"] = {"kind": baseline_name(), "granularity": raw["schedule"]["granularity"]}
    elif preset != "none":
        raise ConfigError([f"preset {preset!r}: expected one of {', '.join(PRESETS)}"])
    raw["train"]["evaluate"] = False
    return config_from_dict(raw)


def _trial(params: dict[str, float], base: dict[str, Any], trials_dir: str, threads: int) -> None:
    """One Ray Tune trial: train the base config with the sampled LR and WD, reporting each epoch."""
    from ray import tune  # optional (pip install 'robustft[tune]') and slow to import: only searches load it

    torch.set_num_threads(max(1, threads))
    raw = {k: dict(v) for k, v in base.items()}
    raw["optim"].update(lr=params["lr"], weight_decay=params["weight_decay"])
    raw["train"].update(out_dir=trials_dir, run_name=f"trial_{tune.get_context().get_trial_id()}")
    fine_tune(config_from_dict(raw), resume=True,
              on_epoch=lambda row: tune.report({METRIC: row.val_clean_acc, "epoch": row.epoch + 1}))


@dataclass(frozen=True)
class TuneResult:
    best: dict[str, float]
    """Best optim.lr and optim.weight_decay."""
    best_score: float
    """Its final validation clean accuracy."""
    best_config: Path
    """Ready-to-run YAML: the input config with the best LR and WD."""
    trials: list[dict[str, Any]]


def tune_hparams(cfg: Config, out_dir: str | Path, settings: SearchSettings = SearchSettings(),
                 preset: str = "none", address: str | None = None, name: str = "tuned") -> TuneResult:
    """Search LR and WD with ASHA; write ``OUT/best.yaml`` (``cfg`` with the best values: under the paper's
    preset, the scheduled config reuses what fix found; it trains into run ``NAME``),
    ``OUT/best_tuned.yaml`` (the config trials trained, run ``NAME_fix`` under the paper's preset),
    ``OUT/tune.json`` (every trial) and the trials' run directories under ``OUT/trials``.

    Raises:
        MissingDependencyError: Ray Tune is not installed (with the pip command that installs it).
        ConfigError: bad settings or preset.
        TuneError: no trial finished without an error.
    """
    try:  # optional and slow to import, see _trial
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator
    except ImportError as err:
        raise MissingDependencyError("hyper-parameter search needs Ray Tune: pip install 'robustft[tune]' "
                                     "(or pip install 'ray[tune]')") from err
    settings.check()
    tuned = tuning_config(cfg, preset)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative paths in the config mean what they say
    if not ray.is_initialized():
        join_ray(address)  # a cluster that cannot be reached or joined is a ClusterError naming the address
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=config_to_dict(tuned), trials_dir=str(out / "trials"),
                             threads=math.ceil(settings.cpus_per_trial)),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    space = {"lr": tune.loguniform(*settings.lr), "weight_decay": tune.loguniform(*settings.weight_decay)}
    scheduler = ASHAScheduler(max_t=tuned.train.epochs, grace_period=min(settings.grace_period, tuned.train.epochs),
                              reduction_factor=settings.reduction_factor)
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(
        metric=METRIC, mode="max", scheduler=scheduler, num_samples=settings.num_samples,
        time_budget_s=settings.time_budget_s, search_alg=BasicVariantGenerator(random_state=settings.seed)),
        run_config=tune.RunConfig(name="ray", storage_path=str(out), verbose=0))
    log.info("ASHA search: %d trials of up to %d epochs, LR in %s, WD in %s%s", settings.num_samples,
             tuned.train.epochs, settings.lr, settings.weight_decay,
             f", budget {settings.time_budget_s:.0f} s" if settings.time_budget_s else "")
    grid = tuner.fit()
    trials = [_trial_row(grid[i]) for i in range(len(grid))]  # a ResultGrid is indexed (its annotations lack __iter__)
    scored = [t for t in trials if t[METRIC] is not None and t["error"] is None]
    if not scored:
        write_json(out / "tune.json", {"metric": METRIC, "preset": preset, "settings": settings.__dict__,
                                        "best": None, "trials": trials})
        errors = "; ".join(sorted({t["error"].splitlines()[-1] for t in trials if t["error"]})) or "none reported"
        raise TuneError(f"no trial finished without an error (errors: {errors}); every trial is in "
                        f"{out / 'tune.json'} and its run directory under {out / 'trials'}")
    best = max(scored, key=lambda t: (t["epochs"] or 0, t[METRIC]))
    return _write_results(cfg, tuned, out, best, trials, preset, settings, name)


def _trial_row(result: Result) -> dict[str, Any]:
    """What tune.json keeps of one trial."""
    metrics, config = result.metrics or {}, result.config or {}
    return {"trial": metrics.get("trial_id"), "lr": config["lr"], "weight_decay": config["weight_decay"],
            METRIC: metrics.get(METRIC), "epochs": metrics.get("epoch"),
            "error": None if result.error is None else str(result.error)}


def _write_results(cfg: Config, tuned: Config, out: Path, best: dict, trials: list[dict], preset: str,
                   settings: SearchSettings, name: str) -> TuneResult:
    """best.yaml, best_tuned.yaml and tune.json."""
    def with_best(c: Config, evaluate: bool, run_name: str) -> Config:
        raw = config_to_dict(c)
        raw["optim"].update(lr=best["lr"], weight_decay=best["weight_decay"])
        raw["train"].update(evaluate=evaluate, run_name=run_name)
        return config_from_dict(raw)

    save_config(with_best(cfg, cfg.train.evaluate, name), out / "best.yaml")
    save_config(with_best(tuned, True, f"{name}_fix" if preset == "paper" else name), out / "best_tuned.yaml")
    write_json(out / "tune.json", {"metric": METRIC, "preset": preset, "settings": settings.__dict__,
                                    "best": best, "trials": trials})
    log.info("best: lr=%.3g weight_decay=%.3g (%s %.4f after %s epochs); config: %s", best["lr"],
             best["weight_decay"], METRIC, best[METRIC], best["epochs"], out / "best.yaml")
    return TuneResult({"lr": best["lr"], "weight_decay": best["weight_decay"]}, best[METRIC], out / "best.yaml", trials)


def trials_table(result: TuneResult) -> str:
    """The trials as a Markdown table, best first."""
    rows = sorted(result.trials, key=lambda t: (-(t["epochs"] or 0), -(t[METRIC] or 0)))
    lines = ["| trial | lr | weight decay | epochs trained | val clean acc |", "|---|---|---|---|---|"]
    lines += [f"| {t['trial']} | {t['lr']:.3g} | {t['weight_decay']:.3g} | {t['epochs'] or '—'} | "
              f"{'—' if t[METRIC] is None else f'{100 * t[METRIC]:.1f} %'} |" for t in rows]
    return "\n".join(lines)
