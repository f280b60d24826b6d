"""The README's Python example runs as written (on a tiny setting) and its configs and commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import robustft
from robustft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs(tiny_overrides, monkeypatch, capsys):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(ROOT)
    # same code, tiny data and model: the README's overrides come first, the tiny ones win
    monkeypatch.setattr(robustft, "load_config", lambda path, overrides=(): load_config(path, [*overrides, *tiny_overrides]))
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"clean \d\.\d{3}  adv \d\.\d{3}  E\.adv \d\.\d{3}", out)
    assert "(3, 32)" in out


def test_readme_commands_point_at_real_files():
    for path in re.findall(r"(configs/\w+\.yaml|scripts/\w+\.sh)", README):
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
