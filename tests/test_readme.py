"""Every code block of the README runs or names what exists: the Python quick start runs as written, each command
line parses with robustft's own parser, and every file, config, script, extra and link it names is there."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from robustft.cli import _parser
from robustft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def command_lines(text: str) -> list[str]:
    """The commands of the bash blocks: continued lines joined, comments dropped."""
    lines = []
    for block in blocks(text, "bash"):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def robustft_argv(line: str) -> list[str] | None:
    """The arguments after ``robustft`` (or ``torchrun … -m robustft``) in a command line, or None."""
    words = shlex.split(line.split("&&")[-1])
    if words[:1] == ["robustft"]:
        return words[1:]
    if words[:1] == ["torchrun"] and "robustft" in words:
        return words[words.index("robustft") + 1:]
    return None


def test_the_readme_is_a_short_product_page_with_the_demos_figure():
    lines = README.count("\n")
    assert lines <= 250, lines
    figure = "docs/figures/demo_3seeds_robustness_curves.png"
    assert f"]({figure})" in README and (ROOT / figure).is_file()
    for section in ("## Install", "## Python quick start", "## Command-line quick start", "## The method in brief",
                    "## Which evaluation to report", "## The demo's result", "## Scaling up", "## Citation",
                    "## License"):
        assert section in README, section
    assert "+2.3 points on average" in README  # the demo's clean gain, said as it is


@pytest.mark.integration
def test_the_python_quick_start_runs_as_written(monkeypatch, capsys, tmp_path):
    """Your model, your DataLoader, Epsilon-Scheduling, then robustft.evaluate: run exactly as the README shows it."""
    (block,) = blocks(README, "python")
    assert "robustft.fit(model, train" in block and "robustft.evaluate(model, test" in block
    assert len(block.strip().splitlines()) <= 25
    monkeypatch.chdir(tmp_path)  # it writes nothing; if it did, not into the repository
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_quick_start"})
    out = capsys.readouterr().out
    found = re.search(r"clean (\d+\.\d)%  adv (\d+\.\d)%  expected robustness (\d+\.\d)%  flags \[\]", out)
    assert found, out
    clean, adv, expected = map(float, found.groups())
    assert clean > 70 and 10 < adv < expected < clean  # measured: 88.9, 49.9, 72.4
    assert list(tmp_path.iterdir()) == []


def test_every_robustft_command_in_the_readme_parses():
    parser = _parser()
    subcommands = set()
    for line in command_lines(README):
        argv = robustft_argv(line)
        if argv is None:
            continue
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # argparse refuses: a flag or subcommand the CLI does not have
            raise AssertionError(f"robustft refuses the README's command: {line}") from stop
        subcommands.add(args.command)
    assert {"train", "eval", "table", "diagnose", "report", "demo", "tune", "sweep"} <= subcommands


def test_the_files_configs_scripts_and_extras_the_readme_names_exist():
    names = re.findall(r"((?:configs|sweeps|scripts|docs)/[\w/.-]+\.(?:yaml|sh|md|png))", README)
    assert names
    for name in names:
        assert (ROOT / name).is_file(), name
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / link).exists(), link
    pyproject = (ROOT / "pyproject.toml").read_text()
    optional = pyproject.split("[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+) = \[", optional, re.M))
    assert {"test", "tune", "cluster", "clip", "docs"} <= extras
    for line in command_lines(README):
        for group in re.findall(r"\.\[([\w,]+)\]", line):
            assert set(group.split(",")) <= set(extras), line
    for extra in re.findall(r"^\| `(\w+)` \|", README.split("## Install", 1)[1].split("\n## ", 1)[0], re.M):
        assert extra in extras, extra
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in README and "bash scripts/main.sh" in README
    assert "robustft demo" in (ROOT / "scripts" / "main.sh").read_text()


@pytest.mark.integration  # subprocesses of the command line, each importing robustft
def test_the_cheap_commands_run():
    """`robustft --help`-level commands: the program starts and lists what the README uses."""
    out = subprocess.run([sys.executable, "-m", "robustft", "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("train", "eval", "table", "diagnose", "sweep", "report", "tune", "demo", "export"):
        assert sub in out
    demo = subprocess.run([sys.executable, "-m", "robustft", "demo", "--help"], capture_output=True, text=True,
                          check=True).stdout
    assert "--seeds" in demo


def test_shipped_configs_load_and_validate():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert path.read_text().startswith(f"# robustft train configs/{path.name}")
        assert cfg.data.name == "fashion_mnist"
