"""The results table (Clean / Adv. / E.adv, in %) of one or more run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustft.config import format_eps
from robustft.runs import RunDir


def run_row(path: str | Path) -> dict[str, Any]:
    """One table row from a run directory's config, summary.json and eval/robustness.json."""
    run = RunDir(Path(path))
    cfg = run.config()
    summary_path, rob_path = run.path / "summary.json", run.eval_dir / "robustness.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    rob = json.loads(rob_path.read_text()) if rob_path.exists() else {}
    schedule = "standard" if cfg.objective.name == "standard" else cfg.schedule.kind
    return {"run": run.path.name, "schedule": schedule, "eps": format_eps(cfg.attack.eps),
            "clean": rob.get("clean"), "adv": rob.get("adv"), "e_adv": rob.get("expected_robustness"),
            "n": rob.get("n"), "delay": summary.get("delay_epochs"), "train_s": summary.get("train_time_s")}


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def results_table(paths: list[str | Path]) -> str:
    """A Markdown table: run, schedule, ε_g, Clean, Adv., E.adv (%), test n, delay time, train time."""
    lines = ["| run | schedule | ε_g | Clean | Adv. | E.adv | n | delay (epochs) | train time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        r = run_row(p)
        t = "—" if r["train_s"] is None else f"{r['train_s'] / 60:.1f} min"
        lines.append(f"| {r['run']} | {r['schedule']} | {r['eps']} | {_pct(r['clean'])} | {_pct(r['adv'])} | "
                     f"{_pct(r['e_adv'])} | {r['n'] or '—'} | {r['delay'] if r['delay'] is not None else '—'} | {t} |")
    return "\n".join(lines)
