"""`robustft demo`: its regime is the embedded default, and on tiny settings it runs, reports and resumes."""

from __future__ import annotations

import pytest
import yaml

from robustft.api import fine_tune
from robustft.cli import main
from robustft.config import config_from_dict, config_to_dict
from robustft.eval.metrics import adaptation_epoch
from robustft.experiments import demo
from robustft.experiments.sweep import expand
from robustft.runs import RunDir

from helpers import TINY


def test_demo_runs_standard_fix_and_scheduled_on_the_embedded_default():
    points = expand(demo.demo_spec("runs/x", seeds=2))
    assert [p.name for p in points] == ["standard-seed0", "standard-seed1", "fix-seed0", "fix-seed1",
                                        "scheduled-seed0", "scheduled-seed1"]
    for p in points:
        c = p.config
        assert (c.model.name, c.model.pretrained, c.data.name) == ("efficientnet_lite0", True, "fashion_mnist")
        assert c.train.out_dir == "runs/x" and c.train.run_name == p.name
    kinds = {p.variant: (p.config.objective.name, p.config.schedule.kind) for p in points}
    assert kinds == {"standard": ("standard", "fix"), "fix": ("adversarial", "fix"), "scheduled": ("adversarial", "hinge")}
    assert all((p.config.attack, p.config.data, p.config.optim, p.config.eval) == (c.attack, c.data, c.optim, c.eval)
               for p in points)


@pytest.mark.integration
def test_demo_end_to_end_on_tiny_settings(monkeypatch, tmp_path, capsys):
    tiny = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}
    monkeypatch.setattr(demo, "DEMO_SETTINGS", {**tiny, "train.epochs": 2, "schedule.granularity": "epoch"})
    # the demo's hinges are epochs of its 30; two epochs take them as fractions
    monkeypatch.setitem(demo.DEMO_VARIANTS, "scheduled", {**demo.DEMO_VARIANTS["scheduled"], "schedule.t1": 0.5,
                                                         "schedule.t2": 1.0})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("standard-seed0", "fix-seed0", "scheduled-seed0"):
        assert (out / name / "DONE").exists() and f"| {name} |" in printed
    assert "| standard |" in printed and "Suboptimal-transfer diagnosis" in printed
    assert (out / "report" / "report.html").exists() and f"report: {out / 'report' / 'report.html'}" in printed
    # a second call reuses every finished run; a run killed mid-way (DONE missing) is resumed
    (out / "fix-seed0" / "DONE").unlink()
    mtime = (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime
    assert main(["-q", "demo", "--out", str(out)]) == 0
    assert (out / "fix-seed0" / "DONE").exists()
    assert (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime == mtime
    # more seeds later: seed 0's runs keep their names and are reused
    assert main(["-q", "demo", "--out", str(out), "--seeds", "2"]) == 0
    assert (out / "standard-seed0" / "checkpoints" / "last.pt").stat().st_mtime == mtime
    assert all((out / f"{v}-seed1" / "DONE").exists() for v in ("standard", "fix", "scheduled"))
    assert "(n=2)" in (out / "report" / "report.md").read_text()


def test_the_demo_regime_is_what_the_docs_say():
    s = demo.DEMO_SETTINGS
    assert (s["data.name"], s["data.image_size"], s["data.n_train"], s["model.activation"]) == \
        ("fashion_mnist", 28, 1000, "silu")
    assert (s["attack.eps"], s["attack.name"], s["attack.num_steps"], s["train.epochs"]) == ("32/255", "apgd", 7, 30)
    assert (s["eval.attacks"], s["eval.n"], s["eval.eps_step"]) == (["aa-curve"], 500, "8/255")
    scheduled = demo.DEMO_VARIANTS["scheduled"]
    assert (scheduled["schedule.t1"], scheduled["schedule.t2"]) == demo.DEMO_HINGES == (4, 9)
    cfg = demo.demo_config(variant="scheduled", seed=2)
    assert (cfg.schedule.t1, cfg.schedule.t2, cfg.train.seed, cfg.attack.eps) == (4, 9, 2, 32 / 255)
    assert cfg.attack.fold_bn and not cfg.attack.carry


def test_adaptation_epoch_is_the_first_epoch_at_a_fraction_of_the_final_accuracy():
    assert adaptation_epoch([0.25, 0.65, 0.74, 0.76, 0.83]) == 4  # 0.9 · 0.83 = 0.747
    assert adaptation_epoch([0.5, None, 0.9, 1.0], fraction=0.85) == 3
    assert adaptation_epoch([0.2, 0.5], fraction=1.0) == 2 and adaptation_epoch([]) is None
    assert adaptation_epoch([0.3, None]) is None


def test_the_hinge_rule_reads_a_demos_standard_and_fix_runs(tiny_config):
    runs = []
    fix = {"kind": "fix", "t1": None, "t2": None}
    for name, extra in (("standard", {"objective": {"name": "standard"}, "schedule": fix}),
                        ("fix", {"schedule": fix})):
        cfg = config_from_dict(merge(config_to_dict(tiny_config), {**extra, "train": {"evaluate": False}}))
        runs.append(fine_tune(cfg, name=name).path)
    got = demo.rule_hinges(runs)
    want = tuple(adaptation_epoch([r.val_clean_acc for r in RunDir(p).epoch_rows()]) for p in runs)
    assert got == {0: want} and all(isinstance(t, int) and 1 <= t <= 3 for t in want)


def merge(base: dict, extra: dict) -> dict:
    """``base`` with each section of ``extra`` updated into it."""
    return {k: {**v, **extra.get(k, {})} if isinstance(v, dict) else v for k, v in base.items()}
