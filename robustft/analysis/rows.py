"""One row of numbers per run directory: its setting and the headline numbers of an evaluation, read from its
config, summary.json and ``eval/NAME/robustness.json``. Statistics, diagnoses and tables all start here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustft.config import evaluation_name, format_eps, is_clean_objective
from robustft.runs import RunDir


def robustness_file(run: RunDir, evaluation: str | None) -> Path:
    """eval/NAME/robustness.json (NAME: ``evaluation``, else the run config's own evaluation)."""
    name = evaluation or evaluation_name(run.config().eval)
    path = run.evaluation_dir(name) / "robustness.json"
    legacy = run.eval_dir / "robustness.json"  # runs written before evaluations had names
    return legacy if evaluation is None and not path.exists() and legacy.exists() else path


def run_row(path: str | Path, evaluation: str | None = None) -> dict[str, Any]:
    """One table row from a run directory's config, summary.json and an evaluation's robustness.json."""
    run = RunDir(Path(path))
    cfg = run.config()
    summary, rob_path = run.summary(), robustness_file(run, evaluation)
    rob = json.loads(rob_path.read_text()) if rob_path.exists() else {}
    schedule = "standard" if is_clean_objective(cfg.objective.name) else cfg.schedule.kind
    if cfg.objective.name == "trades":
        schedule += f" (TRADES β={cfg.objective.beta:g}{', CE inner' if cfg.objective.trades_inner == 'ce' else ''})"
    checked = bool(rob.get("flags"))
    flags = [f["name"] for f in rob.get("flags", []) if f.get("raised")] if checked else None
    if summary is not None and summary.overfit_raised:  # the training monitor's flag
        flags = (flags or []) + ["catastrophic_overfitting"]
    return {"run": run.path.name, "schedule": schedule, "eps": format_eps(cfg.attack.eps),
            "clean": rob.get("clean"), "adv": rob.get("adv"), "e_adv": rob.get("expected_robustness"),
            "e_adv_exact": rob.get("min_norm", {}).get("expected_robustness_exact"),
            "n": rob.get("n"), "delay": summary.delay_epochs if summary is not None else None,
            "train_s": summary.train_time_s if summary is not None else None,
            "evaluation": evaluation, "attacks": "+".join(rob.get("protocol", {}).get("attack_order", [])) or None, "flags": flags}
