"""``robustft report``: Markdown and a self-contained HTML page (figures embedded) from run directories.

The report is built once as a list of sections of blocks (text, bullet lists, tables, figures) and
rendered twice, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import base64
import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from robustft.analysis.diagnosis import SAME_KEYS, diagnose_run, training_verdict
from robustft.analysis.stats import (
    METRICS,
    Aggregate,
    RunResult,
    aggregate,
    baseline_name,
    compare_remedies,
    compare_to_fix,
    load_results,
    mean_std,
    method_rank,
)
from robustft.config import parse_eps
from robustft.errors import ConfigError, DataError, MissingFileError
from robustft.eval.diagnostics import DEFAULT_GAP
from robustft.report import plots
from robustft.report.table import percent
from robustft.runs import RunDir, atomic_write_bytes, atomic_write_text, versions

log = logging.getLogger(__name__)
LABELS = {"clean": "Clean", "adv": "Adv.", "e_adv": "E.adv"}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes


Block = Union[str, list, Table, Figure]
"""A paragraph, a bullet list (list of str), a table or a figure."""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    finding: bool = False
    """Part of the findings a terminal shows (:attr:`ReportFiles.findings`)."""


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    figures: list[Path]
    findings: str
    """The paired t-tests, sanity checks and diagnosis in Markdown, for a terminal (the report has them too)."""


def results_section(groups: list[Aggregate]) -> Section:
    """The paper's table: Clean / Adv. / E.adv per backbone × dataset × ε_g × setting, mean ± std over seeds;
    sorted by backbone, dataset and ε_g, then standard, fix and the schedules."""
    groups = sorted(groups, key=lambda g: (g.backbone, g.dataset, parse_eps(g.eps),
                                           method_rank(g.setting), g.setting))
    rows = [[g.backbone, g.dataset, str(g.eps), g.setting] + [mean_std(g.mean(m), g.std(m), g.n(m)) for m in METRICS]
            + [", ".join(g.flags()) or ("none" if any(r.row.flags is not None for r in g.runs) else "not run")]
            for g in groups]
    n = sorted({g.n() for g in groups if g.n()}) or [0]
    return Section("Results", [
        "Accuracy (%) on the test subset: clean, under attack at ε_g (Adv.) and averaged over ε ∈ [0, ε_g] "
        f"(E.adv, expected robustness). Mean ± sample standard deviation over seeds (n = {'/'.join(map(str, n))}); "
        "flags: sanity checks raised against false robustness (a raised flag means Adv. and E.adv may overstate).",
        Table(["backbone", "dataset", "ε_g", "setting", "Clean", "Adv.", "E.adv", "sanity flags"], rows)])


def stats_section(results: list[RunResult]) -> Section:
    """Paired t-tests of each schedule against fix over matched (configuration, seed) pairs."""
    tests = compare_to_fix(results)
    if not tests:
        return Section("Fix vs schedules: paired t-tests", [
            "No matched pairs: a paired test needs a fix run and a scheduled run that differ only in the schedule."],
            finding=True)
    rows = [[t.treatment, baseline_name(), LABELS[t.metric], str(t.n), f"{100 * t.mean_diff:+.1f}", f"{t.wins}/{t.n}",
             "—" if t.t is None else f"{t.t:.2f}", "—" if t.p is None else f"{t.p:.2g}"] for t in tests]
    return Section("Fix vs schedules: paired t-tests", [
        "Two-sided paired t-test over runs that share everything but the schedule (configuration and seed); "
        "difference = schedule − fix in accuracy points. '—': undefined (fewer than 2 pairs or identical differences).",
        Table(["schedule", "vs", "metric", "pairs", "mean diff (points)", "schedule higher", "t", "p"], rows)],
        finding=True)


def remedies_section(results: list[RunResult]) -> list[Section]:
    """Paired t-tests of each remedy (LP-FT, RoLI, LoRA, ...) against fix and the schedules of the paper's
    fine-tuning, and the parameters each trained; none where no run is a remedy."""
    if not any(r.is_remedy for r in results):
        return []
    tests = compare_remedies(results)
    rows = [[t.treatment, t.baseline, LABELS[t.metric], str(t.n), f"{100 * t.mean_diff:+.1f}", f"{t.wins}/{t.n}",
             "—" if t.t is None else f"{t.t:.2f}", "—" if t.p is None else f"{t.p:.2g}"] for t in tests]
    trained = {r.setting: RunDir(r.path).summary() for r in results}
    sizes = [[setting, f"{s.tuning['trained_parameters']:,} of {s.tuning['parameters']:,}"]
             for setting, s in trained.items() if s is not None and "trained_parameters" in s.tuning]
    return [Section("Remedies vs the paper's fine-tuning: paired t-tests", [
        "Two-sided paired t-test over runs that share everything but the schedule and what fine-tuning trains or how "
        "its head starts (configuration and seed); difference = remedy − reference in accuracy points. '—': "
        "undefined (fewer than 2 pairs or identical differences).",
        Table(["remedy", "vs", "metric", "pairs", "mean diff (points)", "remedy higher", "t", "p"], rows)
        if rows else "No matched pairs: a remedy run needs a run of fix or a schedule with the same seed.",
        Table(["setting", "trained parameters"], sizes)], finding=True)]


def checks_section(results: list[RunResult]) -> Section:
    """Every sanity flag raised, with its message; runs whose checks did not run are named."""
    items, unchecked = [], []
    for r in results:
        result = RunDir(r.path).robustness(r.row.evaluation)
        if result is None or not result.checks:
            unchecked.append(r.name)
        items += [f"**{r.name}** — {c.name}: {c.message}" for c in (result.raised if result is not None else ())]
        verdict = training_verdict(r.path)
        if verdict is not None and verdict.raised:
            items.append(f"**{r.name}** — catastrophic_overfitting (training monitor): {verdict.message}")
    blocks: list[Block] = [items if items else "No sanity flag was raised."]
    if unchecked:
        blocks.append("Checks not run (no evaluation, or evaluated with checks off): " + ", ".join(unchecked) + ".")
    return Section("Sanity checks", blocks, finding=True)


def find_reference(r: RunResult, results: list[RunResult]) -> RunResult | None:
    """The standard fine-tuning run that shares ``r``'s data, model, optimiser, epochs and seed."""
    def same(a: RunResult) -> bool:
        return all(a.config[s][k] == r.config[s][k] for s, keys in SAME_KEYS.items() for k in (keys or r.config[s]))
    return next((a for a in results if a.is_clean and a is not r and same(a)), None)


def diagnosis_section(results: list[RunResult], delay_threshold: float | None, gap: float,
                      evaluation: str | None = None) -> Section:
    """Each robust run diagnosed against its standard fine-tuning reference: gap, delay, raised flags."""
    rows = []
    for r in results:
        if r.is_clean:
            continue
        ref = find_reference(r, results)
        d = diagnose_run(r.path, ref.path if ref else None, gap, delay_threshold, evaluation)
        raised = [f.name for f in d.flags if f.raised]
        rows.append([r.name, ref.name if ref else "—", f"{percent(d.run.clean)} ({d.run.clean_source})",
                     "—" if d.gap is None else f"{100 * d.gap:.1f}",
                     f"{d.run.delay if d.run.delay is not None else 'never'}"
                     + (f" (ref {d.reference.delay})" if d.reference else ""), ", ".join(raised) or "none"])
    threshold = "each run's train.delay_threshold" if delay_threshold is None else f"{100 * delay_threshold:.0f} %"
    return Section("Suboptimal-transfer diagnosis", [
        f"Against standard fine-tuning of the same data, model, optimiser, epochs and seed. Gap: reference clean − "
        f"run clean (points; suboptimal transfer above {100 * gap:.0f}). Delay: epochs until validation clean "
        f"accuracy first exceeds {threshold}. Details: `robustft diagnose RUN --reference REF`.",
        Table(["run", "reference", "clean (%, split)", "gap", "delay (epochs)", "flags raised"], rows)],
        finding=True)


def figures_section(results: list[RunResult], groups: list[Aggregate], delay_threshold: float | None) -> Section:
    """The four figures, as PNG bytes."""
    figs: list[Block] = [
        Figure("robustness_curves", "Accuracy vs ε under the evaluation attack (mean ± std over seeds).",
               plots.to_png(plots.robustness_curves(groups))),
        Figure("training_curves", "Validation clean accuracy per epoch, ε(t) overlaid (black), delay time dotted.",
               plots.to_png(plots.training_curves(results, delay_threshold))),
        Figure("clean_vs_eps", "Clean accuracy vs ε_g (standard fine-tuning at 0): the cost of robustness.",
               plots.to_png(plots.clean_vs_eps(groups))),
        Figure("schedules", "The ε schedules as trained (epoch means).", plots.to_png(plots.schedules(results))),
    ]
    return Section("Figures", figs)


def runs_section(results: list[RunResult]) -> Section:
    rows = [[r.name, "done" if RunDir(r.path).done else "in progress", r.setting, str(r.row.eps), str(r.seed),
             percent(r.row.clean), percent(r.row.adv),
             percent(r.row.e_adv), str(r.row.n or "—"), r.row.attacks or "—",
             "—" if r.row.train_s is None else f"{r.row.train_s / 60:.1f} min", str(r.path)] for r in results]
    return Section("All runs", [Table(["run", "status", "setting", "ε_g", "seed", "Clean", "Adv.", "E.adv", "n", "attacks",
                                       "train time", "directory"], rows)])


def build_report(paths: Sequence[str | Path], evaluation: str | None = None, delay_threshold: float | None = None,
                 gap: float = DEFAULT_GAP) -> list[Section]:
    """The report's sections, read from run directories only."""
    results = load_results(paths, evaluation)
    empty = [r for r in results if not RunDir(r.path).epoch_rows()]
    results = [r for r in results if r not in empty]
    if not results:
        raise DataError("report: none of the runs has finished an epoch yet (train them first): "
                        + ", ".join(r.name for r in empty))
    groups = aggregate(results)
    sections = [results_section(groups), stats_section(results), *remedies_section(results), checks_section(results),
                diagnosis_section(results, delay_threshold, gap, evaluation),
                figures_section(results, groups, delay_threshold), runs_section(results)]
    training = [r.name for r in results if not RunDir(r.path).done]
    if training or empty:
        sections[0].blocks.insert(1, "**Not finished:** " + "; ".join(
            ([f"still training or evaluating, reported as they stand: {', '.join(training)}"] if training else [])
            + ([f"left out, no epoch finished yet: {', '.join(r.name for r in empty)}"] if empty else [])) + ".")
    return sections


def _md_block(b: Block) -> str:
    if isinstance(b, Table):
        cells = [b.headers] + b.rows
        return "\n".join(["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[:1]]
                         + ["|" + "---|" * len(b.headers)]
                         + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]])
    if isinstance(b, Figure):
        return f"![{b.caption}](figures/{b.name}.png)\n\n*{b.caption}*"
    if isinstance(b, list):
        return "\n".join(f"- {item}" for item in b)
    return b


def render_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are referenced as ``figures/NAME.png``."""
    return "\n".join([f"# {title}", "", _provenance(), "", _md_sections(sections)]) + "\n"


def _md_sections(sections: list[Section]) -> str:
    return "\n\n".join("\n\n".join([f"## {s.title}"] + [_md_block(b) for b in s.blocks]) for s in sections)


def _inline(text: str) -> str:
    """HTML of a Markdown-ish line: escaped, with **bold** and `code`."""
    parts = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_block(b: Block) -> str:
    if isinstance(b, Table):
        head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode()
        return (f'<figure id="{b.name}"><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
    if isinstance(b, list):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>"
    return f"<p>{_inline(b)}</p>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f2f2f2}tr:nth-child(even){background:#fafafa}img{max-width:100%}figure{margin:1.5em 0}
figcaption{color:#555;font-size:14px}code{background:#f4f4f4;padding:0 3px}"""


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page (figures embedded as data URIs)."""
    body = "".join(f"<section><h2>{html.escape(s.title)}</h2>" + "".join(_html_block(b) for b in s.blocks)
                   + "</section>" for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{_inline(_provenance())}</p>"
            f"{body}</body></html>\n")


def _provenance() -> str:
    v = versions()
    return f"Generated {time.strftime('%Y-%m-%d %H:%M')} by robustft {v['robustft']} (torch {v['torch']}) from run directories only."


def expand_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories as given, a folder of run directories standing for its children (sorted)."""
    out = []
    for p in paths:
        children = sorted(c for c in p.iterdir() if (c / "config.yaml").is_file()) if p.is_dir() else []
        out += [p] if (p / "config.yaml").is_file() or not children else children
    return out


def render_report(paths: Sequence[str | Path], out: str | Path, title: str = "robustft report",
                  evaluation: str | None = None, delay_threshold: float | None = None,
                  gap: float = DEFAULT_GAP) -> ReportFiles:
    """Write ``OUT/report.md`` (with ``OUT/figures/*.png``) and ``OUT/report.html`` (self-contained) of run
    directories; a folder of run directories (a sweep's ``out_dir``) stands for all of them.

    Raises:
        MissingFileError: a path is not a run directory.
        ConfigError: no run directories given.
    """
    if not paths:
        raise ConfigError("report: give at least one run directory")
    run_dirs = expand_run_dirs([Path(p) for p in paths])
    for p in run_dirs:
        if not RunDir(p).config_path.is_file():
            raise MissingFileError(f"{p} is not a run directory (no config.yaml); report reads run directories")
    out = Path(out)
    sections = build_report(run_dirs, evaluation, delay_threshold, gap)
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    for f in figures:
        atomic_write_bytes(out / "figures" / f"{f.name}.png", f.png)
    atomic_write_text(out / "report.md", render_markdown(title, sections))
    atomic_write_text(out / "report.html", render_html(title, sections))
    log.info("report written to %s", out)
    return ReportFiles(out / "report.md", out / "report.html", [out / "figures" / f"{f.name}.png" for f in figures],
                       _md_sections([s for s in sections if s.finding]))
