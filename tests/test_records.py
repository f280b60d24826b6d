"""Typed run records: a run directory read as one RunRecord (config, training summary, an evaluation's numbers),
the table row built from it, the sweep's state (sweep.json) with its one writer and one reader, and no module
reading summary.json, robustness.json or sweep.json but their readers."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

import robustft
from robustft.analysis.rows import RunRow, run_row
from robustft.api import fine_tune
from robustft.config import format_eps, load_config, save_config
from robustft.eval import RobustnessResult
from robustft.experiments.state import SWEEP_FILE, PointState, SweepRecorder, SweepState
from robustft.experiments.sweep import SweepSpec, expand
from robustft.runs import MetricsFormatError, RobustnessSummary, RunDir, RunRecord, TrainSummary, write_json

from helpers import TINY

READERS = {"runs/summary.py", "runs/robustness.py", "experiments/state.py", "eval/result.py"}
"""The modules that read summary.json, robustness.json and sweep.json (eval/result.py: RobustnessResult.load)."""
FILES = ("summary.json", "robustness.json", "sweep.json", "SWEEP_FILE", "ROBUSTNESS_FILE", "summary_path",
         "robustness_path", "robustness_file")
"""How code names one of those files."""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """A finished, evaluated tiny run (two epochs)."""
    out = tmp_path_factory.mktemp("records")
    return fine_tune(load_config(None, TINY + ["train.epochs=2", f"train.out_dir={out}", "train.run_name=tiny",
                                                      "eval.checks=true"]))


# ------------------------------------------------------------------------------------ RunRecord and RunRow
def test_the_record_of_a_run_holds_its_config_summary_and_evaluation(run):
    record = run.record()
    assert isinstance(record, RunRecord) and record.path == run.path and record.name == "tiny"
    assert record.config == run.config() and record.evaluation is None
    assert record.summary == TrainSummary.read(run.summary_path) and record.summary.epochs == 2
    assert run.evaluations() == ["apgd-ce"] and run.robustness_path() == run.evaluation_dir("apgd-ce") / "robustness.json"
    result, evidence = record.result, RobustnessResult.load(run.evaluation_dir("apgd-ce"))
    assert isinstance(result, RobustnessSummary) and run.record("apgd-ce").result == result
    assert (result.clean, result.adv, result.expected_robustness) == (evidence.clean, evidence.adv, evidence.expected)
    assert [c.eps_value for c in result.curve] == evidence.eps and [c.accuracy for c in result.curve] == evidence.accuracy
    assert [c.eps for c in result.curve] == [format_eps(e) for e in evidence.eps]
    assert result.checks and \
        [(c.name, c.raised, c.message) for c in result.checks] == [(f.name, f.raised, f.message) for f in evidence.checks]
    assert result.attack_order == ("apgd-ce",) and result.n == 32 and result.min_norm is None
    assert result.protocol == evidence.protocol and result.costs == evidence.costs
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.summary = None  # type: ignore[misc]


def test_the_row_of_a_run_is_built_from_its_record_and_writes_the_keys_of_the_table(run):
    row = run_row(run.path)
    assert row == RunRow.from_record(run.record()) == dataclasses.replace(run_row(run.path, "apgd-ce"), evaluation=None)
    raw = json.loads(run.robustness_path().read_text())
    summary = json.loads(run.summary_path.read_text())
    assert row.to_dict() == {
        "run": "tiny", "schedule": "hinge", "eps": "8/255", "clean": raw["clean"], "adv": raw["adv"],
        "e_adv": raw["expected_robustness"], "e_adv_exact": None, "n": 32, "delay": summary["delay_epochs"],
        "train_s": summary["train_time_s"], "evaluation": None, "attacks": "apgd-ce",
        "flags": [f["name"] for f in raw["flags"] if f["raised"]]}
    assert [row.metric(m) for m in ("clean", "adv", "e_adv")] == [row.clean, row.adv, row.e_adv]
    with pytest.raises(ValueError, match="unknown metric 'E_adv'"):
        row.metric("E_adv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.clean = 1.0  # type: ignore[misc]
    assert run_row(run.path, "apgd-ce").evaluation == "apgd-ce"


def test_a_run_without_summary_or_evaluation_has_a_record_and_a_row_of_nones(tmp_path):
    run = RunDir(tmp_path / "fresh")
    run.path.mkdir()
    save_config(load_config(None, TINY), run.config_path)
    record = run.record()
    assert record.summary is None and record.result is None and run.evaluations() == []
    row = run_row(run.path)
    assert (row.clean, row.adv, row.e_adv, row.n, row.delay, row.train_s, row.attacks, row.flags) == (None,) * 8


def test_an_evaluation_written_before_evaluations_had_names_is_read_from_eval(run, tmp_path):
    legacy = RunDir(tmp_path / "legacy")
    shutil.copytree(run.path, legacy.path)
    (legacy.evaluation_dir("apgd-ce") / "robustness.json").rename(legacy.eval_dir / "robustness.json")
    assert legacy.robustness_path() == legacy.eval_dir / "robustness.json"
    assert legacy.record().result == run.record().result
    assert legacy.robustness("apgd-ce") is None  # a named evaluation is looked for under its name only


def test_robustness_json_with_few_keys_reads_with_defaults_and_a_broken_one_is_refused(tmp_path):
    path = tmp_path / "robustness.json"
    write_json(path, {"clean": 0.5, "adv": 0.1, "expected_robustness": 0.2, "n": 100, "flags": [], "extra": 1})
    result = RobustnessSummary.read(path)
    assert (result.clean, result.adv, result.expected_robustness, result.n) == (0.5, 0.1, 0.2, 100)
    assert result.checks == () and result.curve == () and result.attack_order == () and result.expected_exact is None
    path.write_text("[1, 2]")
    with pytest.raises(MetricsFormatError, match=f"{path} holds a list"):
        RobustnessSummary.read(path)
    path.write_text('{"clean": 0.5')
    with pytest.raises(MetricsFormatError, match="not valid JSON.*evaluate the run again"):
        RobustnessSummary.read(path)


# ------------------------------------------------------------------------------------ SweepState
@pytest.fixture
def points(tmp_path):
    return expand(SweepSpec(base=None, out_dir=tmp_path / "sw", variants={"a": {}, "b": {}, "c": {}},
                            grid={"train.seed": [0]}))


def test_the_recorder_writes_the_state_that_read_gives_back(points, tmp_path):
    out = tmp_path / "sw"
    record = SweepRecorder(points, out)
    assert SweepState.read(out) == SweepState()  # no sweep.json yet
    record.finished(1, points[0], ("failed", "RuntimeError: boom", "Traceback ...", 1.5))
    record.queued(points[1])
    record.running(points[2], epoch=1, attempt=2, host="node-1", pid=42)
    state = SweepState.read(out)
    assert state == record.state()
    assert [(p.name, p.status) for p in state.points] == [("a-seed0", "failed"), ("b-seed0", "queued"),
                                                          ("c-seed0", "running")]
    assert state.point("a-seed0") == PointState("a-seed0", "a", {"train.seed": 0}, "failed", "RuntimeError: boom",
                                                "Traceback ...", 1.5)
    running = state.point("c-seed0")
    assert (running.epoch, running.epochs, running.attempt, running.host, running.pid) == (
        1, points[2].config.train.epochs, 2, "node-1", 42)
    assert json.loads((out / SWEEP_FILE).read_text()) == state.to_dict()
    assert list(state.to_dict()["points"][2]) == ["name", "variant", "values", "status", "error", "traceback",
                                                  "seconds", "epoch", "epochs", "attempt", "host", "pid"]
    record.finished(3, points[2], ("ran", None, None, 2.0))  # an ended point keeps no Ray keys
    assert list(SweepState.read(out).to_dict()["points"][2]) == ["name", "variant", "values", "status", "error",
                                                                 "traceback", "seconds"]
    assert record.outcome.names("failed") == ["a-seed0"] and record.outcome.names("ran") == ["c-seed0"]


def test_an_old_sweep_json_reads_with_defaults_and_a_broken_one_is_refused(tmp_path):
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"points": [
        {"name": "a", "status": "queued"},
        {"name": "b", "variant": "b", "values": {"train.seed": 1}, "status": "failed", "error": "E", "traceback": None,
         "seconds": math.nan, "note": "a key this version does not know"}]}))
    state = SweepState.read(tmp_path)
    assert state.point("a") == PointState("a", status="queued") and state.point("zz") is None
    b = state.point("b")
    assert (b.variant, b.values, b.status, b.error, math.isnan(b.seconds)) == ("b", {"train.seed": 1}, "failed", "E",
                                                                                True)
    (tmp_path / SWEEP_FILE).write_text('{"runs": []}')
    with pytest.raises(MetricsFormatError, match=f"{tmp_path / SWEEP_FILE} is not a sweep's state"):
        SweepState.read(tmp_path)


# ------------------------------------------------------------------------------------ one reader per file
def _names(tree: ast.AST) -> set[str]:
    """The string constants, names and attribute names in a function's code (its docstring left out)."""
    body = getattr(tree, "body", [])
    doc = body[0].value if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else None
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node is not doc:
            out.add(node.value)
        elif isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
    return out


def _parses_json(tree: ast.AST) -> bool:
    """Whether the code calls ``json.load`` or ``json.loads``."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "loads")
               and isinstance(node.func.value, ast.Name) and node.func.value.id == "json" for node in ast.walk(tree))


def test_no_module_but_the_readers_parses_summary_robustness_or_sweep_json():
    """A function that parses JSON and names one of the files (its path, its constant or its locator) is a reader
    of that file; only the readers' modules may hold one."""
    package = Path(robustft.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        functions = [f for f in ast.walk(ast.parse(path.read_text()))
                     if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parses_json(f)]
        offenders += [f"{name}: {f.name} ({', '.join(sorted(set(FILES) & _names(f)))})" for f in functions
                      if name not in READERS and any(file in s for s in _names(f) for file in FILES)]
    assert offenders == [], "read these files through RunDir.summary/robustness/record or SweepState.read"
    for reader in READERS:  # the readers are there and parse JSON, themselves or through the shared JSON-object
        tree = ast.parse((package / reader).read_text())  # reader (a moved one would make this test pass vacuously)
        assert _parses_json(tree) or "read_json_object" in _names(tree), reader
    assert _parses_json(ast.parse((package / "runs/metrics.py").read_text()))
