"""The documentation site: the configuration reference lists every field of every config section with its
docstring, the CLI page every subcommand, the Python API page's examples run as written, the site builds with
``mkdocs build --strict``, and the files a user looks for (LICENSE, CITATION.cff, CHANGELOG.md, py.typed, one
version) are there."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from test_readme import command_lines, robustft_argv

import robustft
from robustft.cli import _parser
from robustft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hooks():
    """docs/hooks.py, the MkDocs hooks that generate the reference pages, imported as a module."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def test_every_config_field_has_a_docstring_and_a_row_in_the_configuration_reference():
    hooks = _hooks()
    reference = hooks.config_reference()
    sections = hooks.sections()
    assert {"data", "model", "attack", "objective", "schedule", "optim", "train", "eval"} <= {n for n, _ in sections}
    assert [name for name, _ in sections] == [f.name for f in dataclasses.fields(robustft.Config)]
    for name, cls in sections:
        docs = hooks.field_docs(cls)
        for field in dataclasses.fields(cls):
            assert docs[field.name], f"{cls.__name__}.{field.name} has no docstring: the reference needs one"
            row = next((line for line in reference.splitlines() if line.startswith(f"| `{name}.{field.name}` |")), None)
            assert row, f"{name}.{field.name} is missing from the configuration reference"
            assert hooks._markdown(docs[field.name]) in row
    assert hooks.CONFIG_MARKER in _page("configuration.md")


def test_field_docs_reads_the_string_under_each_field():
    hooks = _hooks()

    @dataclasses.dataclass
    class Example:
        documented: int = 1
        """Units, in examples."""
        bare: float = 0.5

    assert hooks.field_docs(Example) == {"documented": "Units, in examples.", "bare": ""}


def test_the_cli_page_shows_every_subcommand():
    text = _hooks().cli_help()
    for sub in ("train", "eval", "table", "diagnose", "sweep", "report", "tune", "demo", "export"):
        assert f"### `robustft {sub} --help`" in text, sub
    page = _page("cli.md")
    assert _hooks().CLI_MARKER in page and "--debug" in page
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert code in page


def test_every_page_is_in_the_navigation_and_the_hooks_are_registered():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["hooks"] == ["docs/hooks.py"] and config["theme"]["name"] == "material"

    def pages(nav):
        for entry in nav:
            value = entry if isinstance(entry, str) else next(iter(entry.values()))
            yield from (pages(value) if isinstance(value, list) else [value])

    listed = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert listed == on_disk
    for page in ("install.md", "python-api.md", "cli.md", "configuration.md", "schedules.md", "training.md",
                 "evaluation.md", "diagnosis.md", "experiments.md", "paper-scale.md", "reproducibility.md",
                 "run-directory.md", "extending.md", "benchmarks.md", "reference.md", "research/index.md"):
        assert page in listed, page


def test_the_evaluation_page_gives_every_sanity_flag_a_remedy():
    from robustft.eval import checks

    flags = set(re.findall(r"^- ``(\w+)``", checks.__doc__ or "", re.M))
    assert len(flags) >= 11
    table = _page("evaluation.md").split("## Sanity flags and what to do", 1)[1]
    for flag in flags:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{flag}` |")), None)
        assert row and row.count("|") == 4 and row.rstrip(" |").split("|")[-1].strip(), flag


def test_benchmarks_hold_current_numbers_each_with_its_command_and_commit():
    text = (ROOT / "BENCHMARKS.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 5
    for section in sections:
        title = section.splitlines()[0]
        assert re.search(r"commits? [0-9a-f]{7}", section), f"no commit: {title}"
        assert "```bash" in section or "`robustft " in section, f"no command: {title}"
    for heading in re.findall(r"^#+ .*$", text, re.M):
        assert "earlier" not in heading and "before the" not in heading, heading
    record = DOCS / "research" / "benchmarks_2026-12-08.md"
    assert record.is_file() and "2026-12-08" in record.read_text().splitlines()[0]
    assert _page("benchmarks.md").strip() == '--8<-- "BENCHMARKS.md"'  # the site shows the same file


def test_every_robustft_command_on_the_pages_parses_and_names_real_files():
    parser, seen = _parser(), 0
    for page in sorted(DOCS.glob("*.md")):  # the research records keep the commands of their time
        text = page.read_text()
        for line in command_lines(text):
            argv = robustft_argv(line)
            if argv is None or "--help" in argv:
                continue
            try:
                parser.parse_args(argv)
            except SystemExit as stop:
                raise AssertionError(f"{page.name}: robustft refuses {line}") from stop
            seen += 1
        for name in re.findall(r"\b((?:configs|sweeps)/[\w/.-]+\.yaml)", text):
            assert (ROOT / name).is_file() or "BACKBONE" in name, f"{page.name}: {name}"
    assert seen >= 15


def _python_api_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _page("python-api.md"), re.S)


@pytest.mark.integration
def test_the_python_api_pages_own_model_example_runs_as_written(monkeypatch, capsys, tmp_path):
    """A CNN defined in the example, a torch DataLoader, Epsilon-Scheduling, then robustft.evaluate."""
    block = next(b for b in _python_api_blocks() if "robustft.fit(" in b)
    assert "class SmallCNN(nn.Module)" in block and "DataLoader(" in block and "robustft.evaluate(" in block
    monkeypatch.chdir(tmp_path)  # it writes nothing; if it did, not into the repository
    exec(compile(block, "docs/python-api.md", "exec"), {"__name__": "python_api_example"})
    out = capsys.readouterr().out
    found = re.search(r"clean (\d+\.\d)%  adv (\d+\.\d)%  expected robustness (\d+\.\d)%", out)
    assert found, out
    clean, adv, expected = map(float, found.groups())
    assert clean > 70 and 10 < adv < expected < clean  # measured: 88.9, 40.6, 69.4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_the_python_api_pages_config_example_runs(tiny_overrides, monkeypatch, capsys):
    block = next(b for b in _python_api_blocks() if "fine_tune(cfg" in b)
    monkeypatch.chdir(ROOT)
    # same code, tiny data and model: the page's overrides come first, the tiny ones win
    monkeypatch.setattr(robustft, "load_config", lambda path, overrides=(): load_config(path, [*overrides, *tiny_overrides]))
    exec(compile(block, "docs/python-api.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"clean \d\.\d{3}  adv \d\.\d{3}  E\.adv \d\.\d{3}", out)
    assert "(3, 32)" in out


def test_every_python_block_of_the_python_api_page_is_run_by_a_test():
    assert len(_python_api_blocks()) == 2


@pytest.mark.integration
def test_the_site_builds_strictly(tmp_path):
    """No broken link, anchor or API reference (what .ci/run runs)."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("the docs extra is not installed: pip install -e '.[docs]' -c constraints.txt")
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-4000:]
    configuration = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "attack.eps" in configuration and "eval.eps_grid" in configuration
    assert (tmp_path / "site" / "figures" / "demo_3seeds_robustness_curves.png").is_file()


def test_one_version_and_the_files_a_user_looks_for():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert len(re.findall(r'^version = "', pyproject, re.M)) == 1
    assert robustft.__version__ == metadata.version("robustft")
    assert not re.search(r'__version__ = "', (ROOT / "robustft" / "__init__.py").read_text())
    assert (ROOT / "robustft" / "py.typed").is_file() and 'robustft = ["py.typed"]' in pyproject
    assert "Apache License" in (ROOT / "LICENSE").read_text() and 'license = "Apache-2.0"' in pyproject
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == robustft.__version__ and citation["license"] == "Apache-2.0"
    assert "2509.23325" in str(citation["preferred-citation"])
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
