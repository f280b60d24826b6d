"""Sweeps: expansion of a sweep file into named points, its errors, run_sweep's skip/continue/record
behaviour with a fake trainer, and one tiny real sweep through the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from robustft.cli import main
from robustft.config import ConfigError, load_config, save_config
from robustft.experiments.demo import DEMO_VARIANTS
from robustft.experiments.pipeline import sweep_status
from robustft.experiments.sweep import SweepOutcome, SweepSpec, expand, load_sweep, run_sweep

from helpers import TINY, train_in_sweep_worker


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj, sort_keys=False))
    return path


def _tiny_set() -> dict:
    """helpers.TINY as a sweep's ``set:`` mapping (values parsed as YAML, like --set)."""
    return {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in TINY)}


@pytest.fixture
def sweep_file(tmp_path) -> Path:
    """A sweep in tmp/sweeps/ whose base is ../configs/base.yaml (relative to the sweep file)."""
    _write(tmp_path / "configs" / "base.yaml", {"data": {"name": "digits"}, "model": {"name": "test_efficientnet"},
                                                "train": {"epochs": 4}})
    return _write(tmp_path / "sweeps" / "s.yaml", {
        "base": "../configs/base.yaml",
        "out_dir": "runs/sw",
        "set": {"data.n_train": 300, "optim.lr": 0.01},
        # the demo's variants, with hinges as fractions (the demo's are epochs of its 30; this base trains 4)
        "variants": {**DEMO_VARIANTS, "scheduled": {**DEMO_VARIANTS["scheduled"], "schedule.t1": 0.25,
                                                    "schedule.t2": 0.75}},
        "grid": {"train.seed": [0, 1], "attack.eps": ["4/255", "8/255"], "data.image_size": [16]},
    })


# ------------------------------------------------------------------------------------------- expansion
def test_expand_names_and_configs(sweep_file):
    spec = load_sweep(sweep_file)
    assert spec.base == sweep_file.parent / "../configs/base.yaml" and spec.out_dir == Path("runs/sw")
    points = expand(spec)
    assert len(points) == 3 * 2 * 2
    # variants outermost, then the grid in key order; every grid key is named, single-valued ones too, so
    # adding a value later keeps the names of the runs already made
    assert [p.name for p in points] == [f"{v}-seed{s}-eps{e}_255-image_size16" for v in ("standard", "fix", "scheduled")
                                        for s in (0, 1) for e in (4, 8)]
    by_name = {p.name: p for p in points}

    std = by_name["standard-seed1-eps8_255-image_size16"]
    assert std.variant == "standard"
    assert std.values == {"train.seed": 1, "attack.eps": "8/255", "data.image_size": 16}
    c = std.config
    assert (c.objective.name, c.schedule.kind, c.schedule.t1, c.schedule.t2) == ("standard", "fix", None, None)
    assert c.train.seed == 1 and c.attack.eps == 8 / 255 and c.data.image_size == 16
    assert c.data.n_train == 300 and c.optim.lr == 0.01  # set
    assert c.data.name == "digits" and c.model.name == "test_efficientnet" and c.train.epochs == 4  # base
    assert c.train.out_dir == "runs/sw" and c.train.run_name == "standard-seed1-eps8_255-image_size16"

    fix = by_name["fix-seed0-eps4_255-image_size16"].config
    assert (fix.objective.name, fix.schedule.kind, fix.schedule.t1) == ("adversarial", "fix", None)
    assert fix.train.seed == 0 and fix.attack.eps == 4 / 255
    sch = by_name["scheduled-seed0-eps4_255-image_size16"].config
    assert (sch.objective.name, sch.schedule.kind, sch.schedule.t1, sch.schedule.t2) == ("adversarial", "hinge", 0.25, 0.75)
    assert len({p.config.train.run_name for p in points}) == len(points)


def test_expand_precedence_and_unnamed_points(tmp_path):
    """set < variant < grid; without variants the name is the grid part alone, or ``run``."""
    spec = SweepSpec(base=None, out_dir=tmp_path / "o", fixed={"train.epochs": 3, "data.n_val": 50},
                     variants={"long": {"train.epochs": 5, "data.n_val": 60}, "plain": {}},
                     grid={"data.n_val": [70]})
    points = expand(spec)
    assert [p.name for p in points] == ["long-n_val70", "plain-n_val70"]
    assert [(p.config.train.epochs, p.config.data.n_val) for p in points] == [(5, 70), (3, 70)]

    points = expand(SweepSpec(base=None, out_dir=tmp_path, grid={"attack.eps": [4 / 255, 0.1]}))
    assert [p.name for p in points] == ["eps4_255", "eps0.1"]  # floats that are k/255 are written so
    assert [p.variant for p in points] == [None, None]
    points = expand(SweepSpec(base=None, out_dir=tmp_path))
    assert [p.name for p in points] == ["run"] and points[0].config.train.out_dir == str(tmp_path)


def test_base_with_an_empty_section(tmp_path):
    """``eval:`` left empty in the base config is YAML null; a sweep still sets keys in it."""
    _write(tmp_path / "base.yaml", "eval:\nattack:\n  eps: 4/255\n")
    _write(tmp_path / "s.yaml", {"base": "base.yaml", "out_dir": "o", "set": {"eval.n": 7}})
    (point,) = expand(load_sweep(tmp_path / "s.yaml"))
    assert point.config.eval.n == 7 and point.config.attack.eps == 4 / 255


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text, words", [
    ("out_dir: o\nsets: {train.epochs: 2}\n", ["unknown key 'sets'", "known:"]),
    ("set: {train.epochs: 2}\n", ["out_dir is required"]),
    ("out_dir: o\ngrid: {train.seed: 0}\n", ["grid must map dotted keys to non-empty lists"]),
    ("out_dir: o\ngrid: {train.seed: []}\n", ["grid must map dotted keys to non-empty lists"]),
    ("out_dir: o\nset: [1, 2]\n", ["set must map dotted keys"]),
    ("out_dir: o\nvariants: {fix: 3}\n", ["variants must map names to settings"]),
    ("- out_dir\n- o\n", ["a sweep file is a mapping", "list"]),
])
def test_load_sweep_errors(tmp_path, text, words):
    path = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_sweep(path)
    assert all(w in str(exc.value) for w in words), str(exc.value)
    assert str(path) in str(exc.value)


def test_load_sweep_lists_every_problem(tmp_path):
    path = _write(tmp_path / "bad.yaml", "sets: {}\ngrid: {train.seed: 0}\n")
    with pytest.raises(ConfigError) as exc:
        load_sweep(path)
    assert len(exc.value.problems) == 3  # unknown key, no out_dir, bad grid


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")
    path = _write(tmp_path / "sweeps" / "s.yaml", {"base": "../configs/missing.yaml", "out_dir": "o"})
    with pytest.raises(FileNotFoundError) as exc:
        load_sweep(path)
    assert "missing.yaml" in str(exc.value) and "relative to the sweep file" in str(exc.value)


def test_invalid_point_configs_are_named(tmp_path):
    spec = SweepSpec(base=None, out_dir=tmp_path, variants={"good": {}, "bad": {"schedule.kind": "nope"}},
                     grid={"train.seed": [0, 1], "train.epoch": [3]})
    with pytest.raises(ConfigError) as exc:
        expand(spec)
    problems = exc.value.problems
    # every point has the typo'd train.epoch; only the bad variant has the unknown schedule
    assert sum("unknown key 'train.epoch'" in p and "'epochs'" in p for p in problems) == 4
    assert [p.split(":")[0] for p in problems if "'nope'" in p] == ["bad-seed0-epoch3", "bad-seed1-epoch3"]
    assert all(p.startswith(("good-seed", "bad-seed")) for p in problems)

    with pytest.raises(ConfigError, match="sweep keys are section.key"):
        expand(SweepSpec(base=None, out_dir=tmp_path, fixed={"epochs": 3}))


def test_two_points_with_one_name(tmp_path):
    """8/255 written as a fraction and as a float slug alike: they would share a run directory."""
    spec = SweepSpec(base=None, out_dir=tmp_path, variants={"fix": {}}, grid={"attack.eps": ["8/255", 8 / 255]})
    with pytest.raises(ConfigError) as exc:
        expand(spec)
    assert exc.value.problems == ["two points are both named 'fix-eps8_255'"]


# ------------------------------------------------------------------------------------------- run_sweep
@pytest.fixture
def points(tmp_path):
    spec = SweepSpec(base=None, out_dir=tmp_path / "sw", variants={"a": {}, "b": {}, "c": {}, "d": {}})
    return expand(spec)


class FakeTrain:
    """Records the run names it is called with; marks them DONE, or raises for the names in ``fail``."""

    def __init__(self, fail=(), error=None):
        self.error = error if error is not None else RuntimeError("boom: out of memory")
        self.calls, self.fail, self.seen_json = [], set(fail), {}

    def __call__(self, cfg):
        name = cfg.train.run_name
        self.calls.append(name)
        sweep_json = Path(cfg.train.out_dir) / "sweep.json"
        self.seen_json[name] = json.loads(sweep_json.read_text()) if sweep_json.exists() else None
        run = Path(cfg.train.out_dir) / name
        run.mkdir(parents=True, exist_ok=True)
        if name in self.fail:
            raise self.error
        save_config(cfg, run / "config.yaml")
        (run / "DONE").write_text("done\n")


def test_run_sweep_continues_after_a_failure_and_skips_done(points, tmp_path):
    out = tmp_path / "sw"
    fake = FakeTrain(fail={"b"})
    outcome = run_sweep(points, out, train=fake)
    assert fake.calls == ["a", "b", "c", "d"]  # c and d ran after b failed
    assert outcome.status == {"a": "ran", "b": "failed", "c": "ran", "d": "ran"}
    assert outcome.errors == {"b": "RuntimeError: boom: out of memory"}
    assert "Traceback" in outcome.tracebacks["b"] and "RuntimeError: boom" in outcome.tracebacks["b"]
    assert set(outcome.seconds) == {"a", "b", "c", "d"} and all(s >= 0 for s in outcome.seconds.values())
    assert outcome.names("failed") == ["b"]
    assert outcome.summary().splitlines() == ["ran: 3 (a, c, d)", "skipped: 0", "failed: 1 (b)",
                                              "  b failed: RuntimeError: boom: out of memory"]

    # sweep.json is written after each point: when c started, a and b were recorded and c, d pending
    assert fake.seen_json["a"] is None
    assert [p["status"] for p in fake.seen_json["c"]["points"]] == ["ran", "failed", "pending", "pending"]
    record = json.loads((out / "sweep.json").read_text())["points"]
    assert [(p["name"], p["variant"], p["status"]) for p in record] == [
        ("a", "a", "ran"), ("b", "b", "failed"), ("c", "c", "ran"), ("d", "d", "ran")]
    assert record[1]["error"] == "RuntimeError: boom: out of memory" and "Traceback" in record[1]["traceback"]
    assert record[0]["error"] is None and record[0]["traceback"] is None and record[0]["values"] == {}
    assert all(isinstance(p["seconds"], float) for p in record)

    # again: the DONE runs are skipped, the failed one is retried (and now succeeds)
    again = FakeTrain()
    outcome = run_sweep(points, out, train=again)
    assert again.calls == ["b"]
    assert outcome.status == {"a": "skipped", "b": "ran", "c": "skipped", "d": "skipped"}
    assert outcome.errors == {} and set(outcome.seconds) == {"b"}
    assert outcome.summary().splitlines()[:3] == ["ran: 1 (b)", "skipped: 3 (a, c, d)", "failed: 0"]
    record = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["status"] for p in record] == ["skipped", "ran", "skipped", "skipped"]
    assert record[1]["error"] is None and record[0]["seconds"] is None


def test_run_sweep_resumes_a_killed_run(points, tmp_path):
    """A run directory without DONE (a killed run) is run again, not skipped."""
    (tmp_path / "sw" / "a").mkdir(parents=True)
    fake = FakeTrain()
    assert run_sweep(points[:1], tmp_path / "sw", train=fake).status == {"a": "ran"} and fake.calls == ["a"]


def test_a_done_run_made_with_another_config_is_not_skipped(points, tmp_path):
    out = tmp_path / "sw"
    run_sweep(points, out, train=FakeTrain())
    changed = load_config(out / "a" / "config.yaml", ["train.epochs=99"])
    save_config(changed, out / "a" / "config.yaml")
    fake = FakeTrain()
    outcome = run_sweep(points, out, train=fake)
    assert fake.calls == ["a"] and outcome.status["a"] == "ran" and outcome.names("skipped") == ["b", "c", "d"]


@pytest.mark.integration
def test_jobs_run_the_points_in_worker_processes_with_a_share_of_the_threads(points, tmp_path):
    out = tmp_path / "sw"
    run_sweep(points[:1], out, train=FakeTrain())  # a is DONE before the parallel sweep starts
    outcome = run_sweep(points, out, train=train_in_sweep_worker, jobs=2)
    assert outcome.status == {"a": "skipped", "b": "ran", "c": "failed", "d": "ran"}
    assert outcome.errors == {"c": "RuntimeError: boom in a worker"} and "Traceback" in outcome.tracebacks["c"]
    assert set(outcome.seconds) == {"b", "c", "d"}
    workers = {n: json.loads((out / n / "worker.json").read_text()) for n in "bcd"}
    assert all(w["pid"] != os.getpid() for w in workers.values())
    assert {w["threads"] for w in workers.values()} == {max(1, torch.get_num_threads() // 2)}
    assert {w["tqdm_disabled"] for w in workers.values()} == {"1"}
    record = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["status"] for p in record] == ["skipped", "ran", "failed", "ran"]
    assert record[2]["error"] == "RuntimeError: boom in a worker"
    again = run_sweep(points, out, train=train_in_sweep_worker, jobs=2)  # only c is left, and fails again
    assert again.status == {"a": "skipped", "b": "skipped", "c": "failed", "d": "skipped"}


def test_status_names_every_points_state_without_running_anything(tmp_path):
    spec = SweepSpec(base=None, out_dir=tmp_path / "sw", variants={"a": {}, "b": {}, "c": {}, "d": {}})
    points = expand(spec)
    run_sweep(points[:2], spec.out_dir, train=FakeTrain(fail={"b"}))  # a DONE, b failed
    (spec.out_dir / "c").mkdir()  # started, killed before it ended; d never started
    text = sweep_status(spec)
    assert "| a | DONE | 0/" in text and "| b | failed |" in text and "RuntimeError: boom: out of memory" in text
    assert "| c | killed |" in text and "| d | not started |" in text
    assert text.rstrip().endswith("DONE: 1, failed: 1, killed: 1, not started: 1")
    assert sorted(p.name for p in spec.out_dir.iterdir()) == ["a", "b", "c", "sweep.json"]  # nothing new


def test_status_calls_a_point_running_once_its_ray_task_started_though_the_driver_has_not_looked_yet(tmp_path):
    from robustft.experiments.cluster import STATE_DIR

    spec = SweepSpec(base=None, out_dir=tmp_path / "sw", variants={"a": {}, "b": {}})
    state = spec.out_dir / STATE_DIR
    state.mkdir(parents=True)
    points = [{"name": n, "status": "queued"} for n in "ab"]  # what the driver wrote when it submitted them
    (spec.out_dir / "sweep.json").write_text(json.dumps({"points": points}))
    (state / "a.json").write_text(json.dumps({"attempt": 1, "host": "node-1", "pid": 123}))  # a's task began
    text = sweep_status(spec)
    assert "| a | running | 0/" in text and "| 1 | node-1 |" in text and "| b | queued |" in text


def test_jobs_must_be_positive(points, tmp_path):
    with pytest.raises(ValueError, match="jobs: at least 1, got 0"):
        run_sweep(points, tmp_path / "sw", train=FakeTrain(), jobs=0)


def test_keyboard_interrupt_propagates(points, tmp_path):
    fake = FakeTrain(fail={"b"}, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, tmp_path / "sw", train=fake)
    assert fake.calls == ["a", "b"]  # the sweep stopped at b
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())["points"]
    assert [p["status"] for p in record] == ["ran", "pending", "pending", "pending"]


# ------------------------------------------------------------------------------------ end to end (CLI)
def test_cli_sweep_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # out_dir is relative to the working directory
    fixed = {**_tiny_set(), "train.epochs": 1}
    variants = {k: DEMO_VARIANTS[k] for k in ("standard", "fix")}
    sweep = _write(tmp_path / "tiny_sweep.yaml", {"out_dir": "runs/sw", "set": fixed, "variants": variants})
    out = Path("runs/sw")

    assert main(["-q", "sweep", str(sweep), "--dry-run"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "standard"), str(out / "fix")]
    assert not out.exists()  # nothing trained

    assert main(["-q", "sweep", str(sweep)]) == 0
    stdout = capsys.readouterr().out
    assert (out / "standard" / "DONE").exists() and (out / "fix" / "DONE").exists()
    assert "ran: 2 (standard, fix)" in stdout and "skipped: 0" in stdout and "failed: 0" in stdout
    assert "| standard | standard | 8/255 |" in stdout and "| fix | fix | 8/255 |" in stdout  # results table
    assert yaml.safe_load((out / "fix" / "config.yaml").read_text())["train"]["epochs"] == 1
    assert (out / "fix" / "eval" / "apgd-ce" / "robustness.json").exists()  # fine_tune evaluated it

    assert main(["-q", "sweep", str(sweep), "--report"]) == 0
    stdout = capsys.readouterr().out
    assert "skipped: 2 (standard, fix)" in stdout and "ran: 0" in stdout
    assert (out / "report" / "report.html").exists() and str(out / "report" / "report.html") in stdout

    # a point that passes validation but fails at train time (imagefolder without its folder)
    broken = {"objective.name": "adversarial", "schedule.kind": "fix", "schedule.t1": None, "schedule.t2": None,
              "data.name": "imagefolder", "data.root": str(tmp_path / "no_such_data")}
    _write(sweep, {"out_dir": "runs/sw", "set": fixed, "variants": {**variants, "broken": broken}})
    assert main(["-q", "sweep", str(sweep)]) == 1
    captured = capsys.readouterr()
    assert "skipped: 2 (standard, fix)" in captured.out and "failed: 1 (broken)" in captured.out
    assert "broken failed: MissingFileError" in captured.out and "no_such_data" in captured.out
    assert (out / "standard" / "DONE").exists() and (out / "fix" / "DONE").exists()
    assert not (out / "broken" / "DONE").exists()
    record = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert {n: p["status"] for n, p in record.items()} == {"standard": "skipped", "fix": "skipped", "broken": "failed"}
    assert "no_such_data" in record["broken"]["error"] and "load_imagefolder" in record["broken"]["traceback"]


@pytest.mark.integration
def test_cli_sweep_jobs_trains_the_points_side_by_side(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    variants = {k: DEMO_VARIANTS[k] for k in ("standard", "fix")}
    sweep = _write(tmp_path / "tiny_sweep.yaml", {"out_dir": "runs/sw", "set": {**_tiny_set(), "train.epochs": 1},
                                                  "variants": variants})
    assert main(["-q", "sweep", str(sweep), "--jobs", "2"]) == 0
    stdout = capsys.readouterr().out
    assert "ran: 2 (standard, fix)" in stdout and "| fix | fix | 8/255 |" in stdout
    assert all((Path("runs/sw") / n / "eval" / "apgd-ce" / "robustness.json").exists() for n in ("standard", "fix"))
    with pytest.raises(SystemExit):
        main(["-q", "sweep", str(sweep), "--jobs", "0"])
    assert "--jobs: must be at least 1, got 0" in capsys.readouterr().err


def test_cli_sweep_bad_file(tmp_path, capsys):
    path = _write(tmp_path / "s.yaml", {"out_dir": "o", "variants": {"bad": {"schedule.kind": "nope"}}})
    assert main(["-q", "sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad: schedule.kind" in err and "'nope'" in err
    assert main(["-q", "sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


def test_shipped_sweeps_expand():
    root = Path(__file__).resolve().parents[1]
    sweeps = sorted((root / "sweeps").glob("*.yaml"))
    assert sweeps
    for path in sweeps:
        assert path.read_text().startswith(f"# robustft sweep sweeps/{path.name}")
        spec = load_sweep(path)
        points = expand(spec)
        bases = [b for b in spec.bases or [spec.base] if b is not None]
        datasets = {yaml.safe_load(b.read_text())["data"]["name"] for b in bases} or {spec.fixed["data.name"]}
        assert len(points) >= 2 and {p.config.data.name for p in points} == datasets


def test_the_remedies_sweep_reuses_the_demos_runs_and_adds_the_remedies():
    """Its standard, fix and scheduled points are the demo's, name and config alike (so a finished demo is reused);
    the others differ from fix or Epsilon-Scheduling only in what they train and how the head starts."""
    from robustft.experiments.demo import demo_spec

    remedies = {p.name: p.config for p in expand(load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "remedies.yaml"))}
    demo = {p.name: p.config for p in expand(demo_spec(seeds=3))}
    assert all(remedies[name] == config for name, config in demo.items())
    for seed in range(3):
        fix, scheduled = remedies[f"fix-seed{seed}"], remedies[f"scheduled-seed{seed}"]
        for name, base in (("lpft-fix", fix), ("roli-fix", fix), ("lora-fix", fix), ("lora-scheduled", scheduled)):
            cfg = remedies[f"{name}-seed{seed}"]
            same = cfg.replace("finetune", **vars(base.finetune)).replace("train", run_name=base.train.run_name)
            assert same == base and cfg.finetune != base.finetune, name
    assert remedies["roli-fix-seed0"].finetune.head == "robust_linear_probe"
    assert remedies["lora-scheduled-seed0"].finetune.mode == "lora"


def test_outcome_lists_points_in_sweep_order_whatever_order_they_end_in():
    outcome = SweepOutcome(order=["standard", "fix", "scheduled"])
    outcome.status.update(scheduled="ran", fix="failed", standard="ran")  # parallel runs end in any order
    outcome.errors["fix"] = "ValueError: boom"
    assert outcome.names("ran") == ["standard", "scheduled"]
    assert outcome.summary() == "ran: 2 (standard, scheduled)\nskipped: 0\nfailed: 1 (fix)\n  fix failed: ValueError: boom"
