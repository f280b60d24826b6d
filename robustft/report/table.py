"""Tables: the results table (Clean / Adv. / E.adv, in %) of run directories, and one evaluation in full."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from robustft.analysis.rows import run_row
from robustft.config import format_eps
from robustft.eval.result import RobustnessResult


def percent(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def results_table(paths: Sequence[str | Path], evaluation: str | None = None) -> str:
    """A Markdown table: run, schedule, ε_g, Clean, Adv., E.adv (%), test n, attacks, sanity flags raised,
    delay time, train time. ``evaluation`` picks ``eval/NAME`` (default: each run's own)."""
    lines = ["| run | schedule | ε_g | Clean | Adv. | E.adv | n | attacks | flags | delay (epochs) | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        r = run_row(p, evaluation)
        t = "—" if r.train_s is None else f"{r.train_s / 60:.1f} min"
        flags = "not run" if r.flags is None and r.clean is not None else ", ".join(r.flags or ()) or "none"
        flags = "—" if r.clean is None else flags
        lines.append(f"| {r.run} | {r.schedule} | {r.eps} | {percent(r.clean)} | {percent(r.adv)} | "
                     f"{percent(r.e_adv)} | {r.n or '—'} | {r.attacks or '—'} | {flags} | "
                     f"{r.delay if r.delay is not None else '—'} | {t} |")
    return "\n".join(lines)


def evaluation_report(result: RobustnessResult) -> str:
    """One evaluation in Markdown: the curve with what broke each example, the headline numbers with
    their 95 % intervals, and the sanity flags."""
    names = ["clean"] + list(result.protocol.get("attack_order", []))
    heads = ["wrong on clean"] + [f"broken by {n}" for n in names[1:]]
    lines = ["| ε | accuracy (%) | " + " | ".join(heads) + " |",
             "|---|---|" + "---|" * len(names)]
    for e, acc, broken in zip(result.eps, result.accuracy, result.broken_by() or [{}] * len(result.eps)):
        lines.append(f"| {format_eps(e)} | {100 * acc:.1f} | " + " | ".join(str(broken.get(n, 0)) for n in names) + " |")
    ci = result.intervals()
    lines.append("")
    for key, label, value in (("clean", "Clean", result.clean), ("adv", f"Adv. (ε={format_eps(result.eps[-1])})", result.adv),
                              ("expected_robustness", "E.adv", result.expected)):
        interval = f" (95 % CI {percent(ci[key][0])}–{percent(ci[key][1])})" if key in ci else ""
        lines.append(f"- {label}: {percent(value)} %{interval}")
    lines.append(f"- n = {result.correct.shape[1]}, mode {result.protocol.get('mode')}, attacks: "
                 + ", ".join(names[1:]))
    if result.costs:
        total = sum(c["seconds"] for c in result.costs)
        spent = ", ".join(f"{c['attack']}{'' if c['eps'] is None else ' at ' + c['eps']} {c['seconds']:.0f} s "
                          f"({c['examples']} ex.)" for c in result.costs)
        lines.append(f"- time: {total:.0f} s: {spent}")
    if result.checks:
        lines.append("\nSanity checks:")
        for f in result.checks:
            mark = "RAISED" if f.raised else ("n/a" if f.raised is None else "ok")
            lines.append(f"- [{mark}] {f.name}: {f.message}")
    return "\n".join(lines)
