"""Statistics across runs: mean ± std over seeds, paired t-tests, matched pairs, and setting labels."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from scipy import stats as sps

from robustft.analysis.rows import RunRow
from robustft.analysis.stats import (
    RunResult,
    aggregate,
    compare_to_fix,
    load_results,
    matched_pairs,
    mean_std,
    paired_ttest,
)
from robustft.config import config_from_dict, config_to_dict, load_config, save_config

BASE = config_to_dict(load_config(None))


def _config(setting: str, seed: int = 0, **changes) -> dict:
    """A config dict of one setting (standard, fix, hinge, warmup); ``changes``: ``section__key=value``."""
    cfg = copy.deepcopy(BASE)
    cfg["objective"]["name"] = "standard" if setting == "standard" else "adversarial"
    cfg["schedule"]["kind"] = "fix" if setting == "standard" else setting
    cfg["schedule"]["t1"], cfg["schedule"]["t2"] = (0.25, 0.75) if setting == "hinge" else (None, None)
    cfg["train"]["seed"], cfg["train"]["run_name"] = seed, f"{setting}-{seed}"
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    config_from_dict(cfg)  # a valid config
    return cfg


def _run(setting: str, seed: int, clean=None, adv=None, e_adv=None, flags=None, **changes) -> RunResult:
    row = RunRow(run=f"{setting}-{seed}", schedule=setting, eps="8/255", clean=clean, adv=adv, e_adv=e_adv,
                 flags=None if flags is None else tuple(flags))
    return RunResult(Path(f"runs/{setting}-{seed}"), row, _config(setting, seed, **changes), setting=setting)


# ---------------------------------------------------------------------------------- mean ± std over seeds
def test_aggregate_mean_std_over_seeds():
    runs = [_run("fix", 0, 0.40, 0.20, 0.30, ["gradient_masking"]),
            _run("fix", 1, 0.55, None, 0.31, []),
            _run("fix", 2, 0.70, 0.30, 0.35, ["gradient_masking"]),
            _run("hinge", 0, 0.80, 0.10, 0.40, None),
            _run("fix", 0, 0.90, 0.50, 0.50, None, data__n_train=300)]  # another setting: more data
    groups = aggregate(runs)
    assert [(g.setting, len(g.runs)) for g in groups] == [("fix", 3), ("hinge", 1), ("fix", 1)]
    fix = groups[0]
    assert (fix.backbone, fix.dataset, fix.eps) == ("efficientnet_lite0", "fashion_mnist", "8/255")
    # by hand: mean 0.55, deviations ±0.15 and 0, sample variance 0.045 / 2
    assert fix.mean("clean") == pytest.approx(0.55) and fix.std("clean") == pytest.approx(0.15)
    assert fix.n("clean") == 3 and fix.n() == 3
    assert fix.values("adv") == [0.20, 0.30] and fix.n("adv") == 2  # a missing value is left out
    assert fix.mean("adv") == pytest.approx(0.25) and fix.std("adv") == pytest.approx(math.sqrt(0.005))
    assert fix.mean("e_adv") == pytest.approx(0.32)
    assert fix.std("e_adv") == pytest.approx(math.sqrt(((0.30 - 0.32) ** 2 + 0.01 ** 2 + 0.03 ** 2) / 2))
    assert fix.flags() == ["gradient_masking (2/3)"]
    hinge = groups[1]
    assert hinge.mean("clean") == pytest.approx(0.80) and hinge.std("clean") is None and hinge.n() == 1
    assert hinge.flags() == []
    assert groups[2].mean("clean") == pytest.approx(0.90)
    empty = aggregate([_run("fix", 0)])[0]
    assert empty.mean("clean") is None and empty.std("clean") is None and empty.n() == 0


def test_mean_std_format():
    assert mean_std(0.5, 0.1, 3) == "50.0 ± 10.0 (n=3)"
    assert mean_std(0.123, 0.0, 2) == "12.3 ± 0.0 (n=2)"
    assert mean_std(0.5, None, 1) == "50.0"
    assert mean_std(None, None, 0) == "—"
    g = aggregate([_run("fix", s, c) for s, c in enumerate((0.40, 0.55, 0.70))])[0]
    assert mean_std(g.mean("clean"), g.std("clean"), g.n("clean")) == "55.0 ± 15.0 (n=3)"


# ------------------------------------------------------------------------------------------- t-test
def test_paired_ttest_by_hand_and_against_scipy():
    base, treat = [0.1, 0.2, 0.3], [0.2, 0.4, 0.6]
    t, p = paired_ttest(base, treat)
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, n 3 → t = 0.2 / (0.1 / √3); with 2 degrees of freedom
    # the two-sided p has the closed form 1 − t / √(2 + t²)
    assert t == pytest.approx(0.2 / (0.1 / math.sqrt(3)))
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert paired_ttest(treat, base) == pytest.approx((-t, p))

    base = [0.50, 0.62, 0.55, 0.70, 0.41]
    treat = [0.55, 0.61, 0.60, 0.74, 0.50]
    t, p = paired_ttest(base, treat)
    ref = sps.ttest_rel(treat, base)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    d = [b - a for a, b in zip(base, treat)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    assert t == pytest.approx(m / (sd / math.sqrt(len(d))))
    assert 0 < p < 1 and isinstance(t, float) and isinstance(p, float)


def test_paired_ttest_undefined_and_errors():
    assert paired_ttest([0.5], [0.6]) == (None, None)
    assert paired_ttest([], []) == (None, None)
    assert paired_ttest([0.5, 0.25, 0.75], [0.625, 0.375, 0.875]) == (None, None)  # identical differences
    assert paired_ttest([0.5, 0.5], [0.5, 0.5]) == (None, None)
    # identical up to float rounding (0.3 - 0.2 != 0.2 - 0.1): still undefined, not t ~ 1e16
    assert paired_ttest([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]) == (None, None)
    assert paired_ttest([0.812, 0.805], [0.842, 0.835]) == (None, None)
    with pytest.raises(ValueError, match="pairs"):
        paired_ttest([0.1, 0.2], [0.1, 0.2, 0.3])


# ------------------------------------------------------------------------------------- matched pairs
def test_matched_pairs_share_everything_but_the_schedule():
    fix0, fix1 = _run("fix", 0, 0.5), _run("fix", 1, 0.6)
    hinge0, hinge1 = _run("hinge", 0, 0.7), _run("hinge", 1, 0.8)
    hinge2 = _run("hinge", 2, 0.9)  # no fix run with seed 2
    hinge_data = _run("hinge", 0, 0.9, data__n_train=300)  # another data.n_train than every fix run
    hinge_lr = _run("hinge", 1, 0.9, optim__lr=0.01)
    hinge_t2 = _run("hinge", 0, 0.75, schedule__t2=0.5)  # a schedule key: still paired with fix
    warm1 = _run("warmup", 1, 0.65)
    std0 = _run("standard", 0, 0.95)
    results = [fix0, fix1, hinge0, hinge1, hinge2, hinge_data, hinge_lr, hinge_t2, warm1, std0]
    pairs = matched_pairs(results, "hinge")
    assert [(a.seed, b.seed) for a, b in pairs] == [(0, 0), (1, 1), (0, 0)]
    assert pairs[0] == (fix0, hinge0) and pairs[1] == (fix1, hinge1) and pairs[2] == (fix0, hinge_t2)
    assert matched_pairs(results, "warmup") == [(fix1, warm1)]
    assert matched_pairs(results, "standard") == []  # the objective must match: standard has none to pair with
    assert matched_pairs(results, "linear") == []
    # TRADES pairs with TRADES fix, never with Madry fix
    trades_fix = _run("fix", 0, 0.4, objective__name="trades")
    trades_hinge = _run("hinge", 0, 0.6, objective__name="trades")
    assert matched_pairs([fix0, trades_fix, trades_hinge], "hinge") == [(trades_fix, trades_hinge)]
    # the seed-free key ignores the run's name, folder and incidental keys, not other train keys
    assert fix0.key() == fix1.key() and fix0.key() != _run("fix", 0, train__epochs=3).key()
    assert fix0.key() == _run("fix", 1, train__log_every=7, data__eval_batch_size=8).key()
    assert fix0.key(drop_schedule=True) == hinge0.key(drop_schedule=True) != hinge0.key()
    # keys a method does not use do not split it: patience on fix, the schedule of standard fine-tuning
    assert fix0.key() == _run("fix", 1, schedule__patience=2).key()
    assert std0.key() == _run("standard", 1, schedule__kind="hinge", schedule__t1=0.25, schedule__t2=0.75).key()


def test_compare_to_one_test_per_metric_per_schedule():
    results = [
        _run("standard", 0, 0.9, 0.0, 0.1),
        _run("fix", 0, 0.50, 0.20, 0.30), _run("fix", 1, 0.60, 0.25, 0.32), _run("fix", 2, 0.55, 0.22, None),
        _run("hinge", 0, 0.70, 0.18, 0.35), _run("hinge", 1, 0.72, 0.27, 0.33), _run("hinge", 2, 0.65, 0.21, 0.30),
        _run("warmup", 0, 0.52, None, None),
    ]
    tests = compare_to_fix(results)
    # standard is never compared; warmup has one pair and only its clean metric has values
    assert [(t.treatment, t.metric) for t in tests] == [("hinge", "clean"), ("hinge", "adv"), ("hinge", "e_adv"),
                                                        ("warmup", "clean")]
    assert all(t.baseline == "fix" for t in tests)
    clean, adv, e_adv, warm = tests
    assert clean.n == 3 and clean.mean_diff == pytest.approx((0.20 + 0.12 + 0.10) / 3) and clean.wins == 3
    assert (clean.t, clean.p) == pytest.approx(paired_ttest([0.50, 0.60, 0.55], [0.70, 0.72, 0.65]))
    assert adv.n == 3 and adv.mean_diff == pytest.approx((-0.02 + 0.02 - 0.01) / 3) and adv.wins == 1
    ref = sps.ttest_rel([0.18, 0.27, 0.21], [0.20, 0.25, 0.22])
    assert (adv.t, adv.p) == pytest.approx((ref.statistic, ref.pvalue))
    assert e_adv.n == 2 and e_adv.mean_diff == pytest.approx((0.05 + 0.01) / 2) and e_adv.wins == 2  # seed 2 lacks fix's
    assert warm.n == 1 and warm.mean_diff == pytest.approx(0.02) and warm.wins == 1 and (warm.t, warm.p) == (None, None)
    assert compare_to_fix([_run("fix", 0, 0.5)]) == []


# ---------------------------------------------------------------------------- load_results and labels
def _run_dir(parent: Path, name: str, **changes) -> Path:
    """A run directory with only config.yaml (run_row tolerates missing summary and evaluation)."""
    cfg = config_from_dict(_config("auto", **changes))
    path = parent / name
    path.mkdir(parents=True)
    save_config(cfg, path / "config.yaml")
    return path


def test_load_results_labels(tmp_path):
    paths = [_run_dir(tmp_path / "a", "auto0"),
             _run_dir(tmp_path / "a", "capped", schedule__latest_t1=0.5),
             _run_dir(tmp_path / "b", "auto0", train__seed=1),  # a repeat of the first setting
             _run_dir(tmp_path / "b", "capped_later", schedule__latest_t1=0.5, schedule__patience=2)]
    results = load_results(paths)
    assert [r.path for r in results] == paths
    assert len(load_results(paths + paths[:1])) == 4  # a directory given twice counts once
    # settings of one kind name the keys that differ, whatever the order of the runs
    assert [r.setting for r in results] == ["auto (latest_t1=None, patience=5)", "auto (latest_t1=0.5, patience=5)",
                                            "auto (latest_t1=None, patience=5)", "auto (latest_t1=0.5, patience=2)"]
    assert [r.setting for r in load_results(paths[::-1])] == [r.setting for r in results][::-1]
    assert [r.name for r in results] == ["a/auto0", "capped", "b/auto0", "capped_later"]  # folder names clash
    assert results[0].row.clean is None and results[0].row.flags is None
    assert results[0].config["schedule"]["latest_t1"] is None and results[1].config["schedule"]["latest_t1"] == 0.5
    assert [len(g.runs) for g in aggregate(results)] == [2, 1, 1]

    only_one_kind = load_results(paths[:1] + paths[2:3])
    assert [r.setting for r in only_one_kind] == ["auto", "auto"]
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_results([tmp_path / "a"])


def test_remedies_are_compared_with_fix_and_each_schedule_of_the_papers_fine_tuning():
    from robustft.analysis.stats import compare_remedies

    runs = []
    for seed, (fix, hinge, lpft, lora_fix, lora_hinge) in enumerate([(0.60, 0.70, 0.66, 0.61, 0.72),
                                                                     (0.62, 0.69, 0.70, 0.60, 0.70),
                                                                     (0.58, 0.71, 0.61, 0.63, 0.69)]):
        runs += [_run("fix", seed, clean=fix), _run("hinge", seed, clean=hinge), _run("standard", seed, clean=0.9),
                 _run("fix", seed, clean=lpft, finetune__head="linear_probe", finetune__probe_epochs=5),
                 _run("fix", seed, clean=lora_fix, finetune__mode="lora"),
                 _run("hinge", seed, clean=lora_hinge, finetune__mode="lora")]
    runs.append(_run("fix", 0, clean=0.5, finetune__mode="lora", data__n_train=300))  # another setting: unpaired
    for r in runs:
        f = r.config["finetune"]
        r.setting += "".join(f" + {v}" for v, d in ((f["mode"], "full"), (f["head"], "random")) if v != d)
        if r.config["data"]["n_train"] == 300:
            r.setting += " (n_train=300)"
    assert [r.is_remedy for r in runs[:6]] == [False, False, False, True, True, True]
    tests = {(t.treatment, t.baseline): t for t in compare_remedies(runs) if t.metric == "clean"}
    # the run of another setting (more data) has no pair; standard fine-tuning is no reference
    assert set(tests) == {(remedy, reference) for remedy in ("fix + linear_probe", "fix + lora", "hinge + lora")
                          for reference in ("fix", "hinge")}
    lpft = tests[("fix + linear_probe", "fix")]
    assert lpft.n == 3 and lpft.mean_diff == pytest.approx((0.06 + 0.08 + 0.03) / 3) and lpft.wins == 3
    t, p = sps.ttest_rel([0.66, 0.70, 0.61], [0.60, 0.62, 0.58])
    assert lpft.t == pytest.approx(t) and lpft.p == pytest.approx(p)
    assert tests[("hinge + lora", "hinge")].mean_diff == pytest.approx((0.02 + 0.01 - 0.02) / 3)
    assert tests[("fix + lora", "hinge")].wins == 0
