"""research/scripts/evaluation_gap.py: two evaluations of one run compared on exactly the test examples they share."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from robustft.config import save_config
from robustft.data import build_data, stratified_subset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluation_gap.py"


def _module():
    spec = importlib.util.spec_from_file_location("evaluation_gap", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evidence(run: Path, name: str, correct: np.ndarray) -> None:
    (run / "eval" / name).mkdir(parents=True)
    np.savez(run / "eval" / name / "correct.npz", correct=correct)


def test_gap_is_measured_on_the_shared_examples(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(tiny_config, run / "config.yaml")
    labels = build_data(tiny_config.data).test.labels
    seed = tiny_config.data.split_seed
    big, small = stratified_subset(labels, 40, seed).tolist(), stratified_subset(labels, 20, seed).tolist()
    # the big evaluation: every example correct when clean; at ε_g correct exactly on the even test indices
    ours = np.stack([np.ones(40, bool), np.array([j % 2 == 0 for j in big])])
    # the reference: correct at ε_g only on test indices divisible by 4
    ref = np.stack([np.ones(20, bool), np.array([j % 4 == 0 for j in small])])
    _evidence(run, "apgd-ce", ours)
    _evidence(run, "autoattack", ref)
    shared = [j for j in small if j in big]
    line = _module().gap(run, "apgd-ce", "autoattack")
    expected = (100 * np.mean([j % 2 == 0 for j in shared]), 100 * np.mean([j % 4 == 0 for j in shared]))
    assert f"{len(shared)} shared examples" in line
    assert f"apgd-ce {expected[0]:.1f} %, autoattack {expected[1]:.1f} %" in line
    assert f"gap {expected[0] - expected[1]:+.1f} points" in line


def test_missing_evidence_is_an_error_that_names_it(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert f"{tmp_path}/eval/apgd-ce+apgd-t" in done.stderr and "autoattack" in done.stderr
