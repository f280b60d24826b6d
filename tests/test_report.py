"""The report: Markdown and self-contained HTML from tiny real run directories (standard, fix, hinge × two
seeds), its figures, and the ``robustft report`` command."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from robustft.api import fine_tune
from robustft.cli import main
from robustft.config import load_config
from robustft.report.render import render_report

from helpers import TINY

pytestmark = pytest.mark.integration  # six real runs, then the whole report with its figures

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("robustness_curves", "training_curves", "clean_vs_eps", "schedules")
SETTINGS = {"standard": ["objective.name=standard", "schedule.kind=fix", "schedule.t1=null", "schedule.t2=null"],
            "fix": ["schedule.kind=fix", "schedule.t1=null", "schedule.t2=null"],
            "hinge": []}  # TINY's hinge, t1 = 1 and t2 = 2 epochs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six finished run directories (about 1 s each): ``runs/SETTING-sSEED``, two epochs."""
    out = tmp_path_factory.mktemp("report") / "runs"
    for setting, overrides in SETTINGS.items():
        for seed in (0, 1):
            cfg = load_config(None, TINY + overrides + ["train.epochs=2", f"train.seed={seed}", "eval.checks=true",
                                                         f"train.out_dir={out}", f"train.run_name={setting}-s{seed}"])
            fine_tune(cfg)
    return sorted(out.iterdir())


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return render_report(runs, out, title="tiny report"), out


def _png_ok(data: bytes) -> None:
    assert data[:8] == PNG
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _table_rows(section: str) -> list[list[str]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]  # without the header


def test_markdown_sections_and_tables(runs, report):
    files, out = report
    assert [r.name for r in runs] == ["fix-s0", "fix-s1", "hinge-s0", "hinge-s1", "standard-s0", "standard-s1"]
    assert files.markdown == out / "report.md" and files.html == out / "report.html"
    assert files.markdown.is_file() and files.html.is_file()
    md = files.markdown.read_text()
    assert md.startswith("# tiny report\n")
    sections = _sections(md)
    assert list(sections) == ["Results", "Fix vs schedules: paired t-tests", "Sanity checks",
                              "Suboptimal-transfer diagnosis", "Figures", "All runs"]

    results = _table_rows(sections["Results"])
    assert [r[3] for r in results] == ["standard", "fix", "hinge"]  # one row per setting, seeds pooled
    for row in results:
        assert row[:3] == ["test_efficientnet", "digits", "8/255"]
        assert all("± " in cell and cell.endswith("(n=2)") for cell in row[4:7]), row
    assert "(n = 2)" in sections["Results"]

    tests = _table_rows(sections["Fix vs schedules: paired t-tests"])
    assert [(r[0], r[1], r[2]) for r in tests] == [("hinge", "fix", "Clean"), ("hinge", "fix", "Adv."),
                                                   ("hinge", "fix", "E.adv")]
    assert all(r[3] == "2" and r[5].endswith("/2") for r in tests)  # two (configuration, seed) pairs

    diagnosis = _table_rows(sections["Suboptimal-transfer diagnosis"])
    # each robust run against the standard run of its seed
    assert [(r[0], r[1]) for r in diagnosis] == [("fix-s0", "standard-s0"), ("fix-s1", "standard-s1"),
                                                 ("hinge-s0", "standard-s0"), ("hinge-s1", "standard-s1")]
    all_runs = _table_rows(sections["All runs"])
    assert [(r[0], r[1], r[2], r[4]) for r in all_runs] == [(p.name, "done", p.name.split("-")[0], p.name[-1]) for p in runs]
    assert all(r[8] == "32" and r[9] == "apgd-ce" for r in all_runs)  # eval.n and the evaluation attack


def test_figures_are_written_and_referenced(report):
    files, out = report
    md = files.markdown.read_text()
    assert files.figures == [out / "figures" / f"{name}.png" for name in FIGURES]
    for name in FIGURES:
        assert f"](figures/{name}.png)" in md
        _png_ok((out / "figures" / f"{name}.png").read_bytes())


def test_html_is_self_contained(report):
    files, out = report
    page = files.html.read_text()
    md = files.markdown.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>tiny report</title>" in page
    assert page.count("<section>") == 6
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert page.count("<img") == len(srcs) == 4
    for src, name in zip(srcs, FIGURES):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        _png_ok(data)
        assert data == (out / "figures" / f"{name}.png").read_bytes()  # the same figure as the Markdown's
    md_tables = sum(1 for ln in md.splitlines() if ln.startswith("|---"))
    assert md_tables == 4 and page.count("<table") == md_tables
    assert "figures/" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, flags=re.I)
    assert "<script" not in page and "<link" not in page
    assert "± " in page and "(n=2)" in page and "<td>hinge</td>" in page


def test_cli_report_of_a_folder_of_runs(runs, tmp_path, capsys):
    parent = runs[0].parent
    out = tmp_path / "rep"
    assert main(["-q", "report", str(parent), "--out", str(out), "--title", "folder"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert md.startswith("# folder\n")
    all_runs = _sections(md)["All runs"]
    assert all(f"| {r.name} |" in all_runs for r in runs)  # the folder stands for its six run directories
    assert all((out / "figures" / f"{name}.png").is_file() for name in FIGURES)

    # one run directory given directly is a run, not a folder of runs
    assert main(["-q", "report", str(runs[0]), "--out", str(tmp_path / "one")]) == 0
    assert _table_rows(_sections((tmp_path / "one" / "report.md").read_text())["All runs"])[0][0] == runs[0].name


def test_cli_report_errors(runs, tmp_path, capsys):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "readme.txt").write_text("hello")
    assert main(["-q", "report", str(runs[0]), str(not_a_run), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(not_a_run) in err and "not a run directory" in err
    assert not (tmp_path / "r" / "report.md").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "report", str(empty), "--out", str(tmp_path / "r")]) == 2  # no run directories in it
    assert str(empty) in capsys.readouterr().err
    assert main(["-q", "report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one run directory"):
        render_report([], tmp_path / "r")


def test_unfinished_runs_are_marked_or_left_out(runs, tmp_path):
    import shutil

    from robustft.runs import RunDir

    in_progress = tmp_path / "hinge-s9"
    shutil.copytree(runs[2], in_progress)
    (in_progress / "DONE").unlink()
    just_started = tmp_path / "fix-s9"
    RunDir(just_started).create(load_config(runs[0] / "config.yaml"))  # config, no epoch yet
    files = render_report([*runs, in_progress, just_started], tmp_path / "out")
    md = files.markdown.read_text()
    assert "still training or evaluating, reported as they stand: hinge-s9" in md
    assert "left out, no epoch finished yet: fix-s9" in md
    assert "| hinge-s9 | in progress |" in md and "| fix-s9 |" not in md
    with pytest.raises(ValueError, match="none of the runs has finished an epoch"):
        render_report([just_started], tmp_path / "out2")
