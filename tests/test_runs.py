"""The run directory: atomic writes (mode, temporary files), taking over an abandoned start, resume records."""

from __future__ import annotations

import json
import os
import stat

import pytest

from robustft.config import load_config, save_config
from robustft.runs import RESUMABLE_KEYS, RunDir, StepRow, atomic_write_text, remove_temp_files


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_uses_the_umask_like_any_other_file(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "atomic.json", "{}\n")
    (tmp_path / "plain.json").write_text("{}\n")
    assert _mode(tmp_path / "atomic.json") == _mode(tmp_path / "plain.json") == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_only_our_stale_temporary_files_are_removed(tmp_path):
    ours = [".last.pt.k2x_9ab0.tmp", ".metrics.jsonl.abcdefgh.tmp"]
    others = [".last.pt.tmp", "last.pt.abcdefgh.tmp", ".notes.TOOLONG99.tmp", ".x.abcdefg.tmp", "keep.pt",
              ".last.pt.abcdefgh.tmp.bak"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x" * 10)
    assert sorted(p.name for p in remove_temp_files(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert remove_temp_files(tmp_path / "missing") == []


def _started(tmp_path, **extra_files) -> RunDir:
    """What a start that failed in its first epoch leaves (config.yaml, env.json, step rows)."""
    run = RunDir(tmp_path / "run")
    run.create(load_config(None, ["data.name=digits"]))
    run.log(StepRow(epoch=0, step=2, eps=0.0, lr=1e-3, loss=2.3))
    (run.path / "checkpoints" / ".last.pt.abcdefgh.tmp").write_bytes(b"partial")
    for name, text in extra_files.items():
        (run.path / name).parent.mkdir(parents=True, exist_ok=True)
        (run.path / name).write_text(text)
    return run


def test_a_start_without_checkpoint_is_abandoned(tmp_path):
    assert _started(tmp_path).abandoned()
    assert RunDir(tmp_path / "empty").abandoned() is False  # not there
    (tmp_path / "empty").mkdir()
    assert RunDir(tmp_path / "empty").abandoned()


@pytest.mark.parametrize("name", ["checkpoints/last.pt", "checkpoints/best.pt", "DONE", "summary.json",
                                  "eval/apgd-ce/robustness.json", "notes.txt", "resumes.jsonl"])
def test_a_folder_with_results_or_anything_else_is_not_abandoned(tmp_path, name):
    assert not _started(tmp_path, **{name: "x"}).abandoned()


def test_resume_changes_names_each_refused_key(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = load_config(None, ["data.name=digits", "optim.lr=1e8"])
    run.create(cfg)
    fixed = load_config(None, ["data.name=digits", "optim.lr=0.001", "optim.grad_clip=1.0"])
    assert run.resume_changes(fixed) == {"optim.lr": (1e8, 0.001), "optim.grad_clip": (None, 1.0)}
    other = load_config(None, ["data.name=fashion_mnist", "optim.lr=0.001", "optim.beta2=0.99"])
    with pytest.raises(ValueError) as err:
        run.resume_changes(other)
    assert str(err.value) == (
        f"invalid configuration: cannot resume {run.path} with a different config: data.name: 'digits' -> 'fashion_mnist'; optim.beta2: "
        f"0.999 -> 0.99 (a resume may change only {', '.join(sorted(RESUMABLE_KEYS))}; for a new run choose "
        "another train.run_name or train.out_dir)")
    with pytest.raises(ValueError, match=r"optim.lr: 100000000.0 -> 0.001 \(a resume may change nothing;"):
        run.resume_changes(fixed.replace("optim", grad_clip=None), frozenset())
    assert run.config() == cfg


def test_record_resume_keeps_the_original_config_and_each_change(tmp_path):
    run = RunDir(tmp_path / "run")
    start = load_config(None, ["data.name=digits", "optim.lr=1e8"])
    run.create(start)
    original = run.config_path.read_text()
    assert run.record_resume(start, 1, 4) == {}
    assert not run.resumes_path.exists() and not run.original_config_path.exists()
    first = start.replace("optim", lr=0.001)
    second = first.replace("optim", grad_clip=1.0).replace("train", precision="bf16")
    run.record_resume(first, 1, 4)
    run.record_resume(second, 2, 8)
    assert run.original_config_path.read_text() == original and run.config() == second
    rows = [json.loads(line) for line in run.resumes_path.read_text().splitlines()]
    assert [(r["epochs_done"], r["step"], r["changes"]) for r in rows] == [
        (1, 4, {"optim.lr": {"from": 1e8, "to": 0.001}}),
        (2, 8, {"optim.grad_clip": {"from": None, "to": 1.0}, "train.precision": {"from": "fp32", "to": "bf16"}})]
    save_config(second, tmp_path / "saved.yaml")
    assert run.config_path.read_text() == (tmp_path / "saved.yaml").read_text()
    with pytest.raises(ValueError, match="model.name"):
        run.record_resume(second.replace("model", name="resnet18"), 3, 12)
    assert run.config() == second and len(run.resumes_path.read_text().splitlines()) == 2
