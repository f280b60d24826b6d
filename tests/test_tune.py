"""Hyper-parameter search: ASHA on Ray Tune with two tiny trials on CPU writes a ready-to-run best config."""

from __future__ import annotations

import json

import pytest

from robustft.config import ConfigError, load_config
from robustft.experiments.tune import SearchSettings, tune_hparams, tuning_config

from helpers import LOOPBACK, assert_on_loopback

ray = pytest.importorskip("ray", reason="Ray Tune is the optional extra robustft[tune]")


@pytest.fixture(scope="module")
def ray_local(ray_on_loopback):
    """Ray on this machine, on 127.0.0.1 only (conftest's ``ray_on_loopback``)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == [LOOPBACK]
    ray_on_loopback()
    yield
    ray.shutdown()


@pytest.mark.integration
def test_paper_preset_tunes_fix_and_reuses_the_result(ray_local, tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides + ["train.epochs=2"])  # a hinge schedule
    out = tmp_path / "search"
    result = tune_hparams(cfg, out, SearchSettings(num_samples=2, lr=(1e-4, 1e-2), weight_decay=(1e-4, 1e-2),
                                                   cpus_per_trial=1, seed=3), preset="paper")
    assert len(result.trials) == 2 and all(t["error"] is None for t in result.trials)
    assert all(1e-4 <= t["lr"] <= 1e-2 and 1e-4 <= t["weight_decay"] <= 1e-2 for t in result.trials)
    assert result.best_score == max(t["val_clean_acc"] for t in result.trials if t["epochs"] == 2)
    # the best config is the input (scheduled) config with the best LR and WD, ready to train
    best = load_config(result.best_config)
    assert (best.optim.lr, best.optim.weight_decay) == (result.best["lr"], result.best["weight_decay"])
    assert best.schedule == cfg.schedule and best.train.evaluate and best.train.run_name == "tuned"
    # trials trained fix, and each is an ordinary run directory with its epoch rows
    tuned = load_config(out / "best_tuned.yaml")
    assert tuned.schedule.kind == "fix" and tuned.optim.lr == result.best["lr"] and tuned.train.run_name == "tuned_fix"
    runs = sorted((out / "trials").iterdir())
    assert len(runs) == 2 and all(load_config(r / "config.yaml").schedule.kind == "fix" for r in runs)
    assert all((r / "checkpoints" / "last.pt").exists() and not (r / "eval").exists() for r in runs)
    record = json.loads((out / "tune.json").read_text())
    assert record["preset"] == "paper" and record["best"]["lr"] == result.best["lr"] and len(record["trials"]) == 2
    assert_on_loopback()  # the trials' workers too


def test_tuning_config_and_settings_checks(tiny_config):
    assert tuning_config(tiny_config, "none").schedule == tiny_config.schedule
    assert not tuning_config(tiny_config, "none").train.evaluate
    fix = tuning_config(tiny_config, "paper")
    assert fix.schedule.kind == "fix" and fix.objective.name == "adversarial"
    with pytest.raises(ConfigError, match="preset 'grid'"):
        tuning_config(tiny_config, "grid")
    with pytest.raises(ConfigError) as err:
        SearchSettings(lr=(1e-1, 1e-5), num_samples=0, reduction_factor=1).check()
    assert all(k in str(err.value) for k in ("lr", "num_samples", "reduction_factor"))
