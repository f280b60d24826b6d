"""The README's Python example runs as written (on a tiny setting) and its configs and commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import robustft
from robustft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    """The Python code blocks of the README's "Python API" section, in order."""
    section = README.split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.integration
def test_object_api_example_runs_as_written(monkeypatch, capsys, tmp_path):
    """A CNN defined in the example, a torch DataLoader, Epsilon-Scheduling, then robustft.evaluate: run exactly
    as the README shows it, it trains a model that is accurate and robust at ε_g."""
    block = next(b for b in python_blocks() if "robustft.fit(" in b)
    assert "class SmallCNN(nn.Module)" in block and "DataLoader(" in block and "robustft.evaluate(" in block
    monkeypatch.chdir(tmp_path)  # it writes nothing; if it did, not into the repository
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    found = re.search(r"clean (\d+\.\d)%  adv (\d+\.\d)%  expected robustness (\d+\.\d)%", out)
    assert found, out
    clean, adv, expected = map(float, found.groups())
    assert clean > 70 and 10 < adv < expected < clean  # measured: 88.9, 40.6, 69.4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_python_example_runs(tiny_overrides, monkeypatch, capsys):
    block = next(b for b in python_blocks() if "fine_tune(cfg" in b)
    monkeypatch.chdir(ROOT)
    # same code, tiny data and model: the README's overrides come first, the tiny ones win
    monkeypatch.setattr(robustft, "load_config", lambda path, overrides=(): load_config(path, [*overrides, *tiny_overrides]))
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"clean \d\.\d{3}  adv \d\.\d{3}  E\.adv \d\.\d{3}", out)
    assert "(3, 32)" in out


def test_readme_commands_point_at_real_files():
    for path in re.findall(r"(configs/\w+\.yaml|(?:research/)?scripts/\w+\.sh)", README):
        assert (ROOT / path).is_file(), path
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci and "bash scripts/test.sh" in README


def test_shipped_configs_load_and_validate():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert path.read_text().startswith(f"# robustft train configs/{path.name}")
        assert cfg.data.name == "fashion_mnist"
