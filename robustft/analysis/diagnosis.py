"""The suboptimal-transfer diagnosis of a run directory, read from its files only (the per-curve maths is in
:mod:`robustft.eval.diagnostics`; :func:`robustft.report.render_diagnosis` writes it as Markdown)."""

from __future__ import annotations

from pathlib import Path

from robustft.config import config_to_dict, is_clean_objective
from robustft.errors import MissingFileError
from robustft.eval.diagnostics import DEFAULT_GAP, Curve, Diagnosis, diagnose
from robustft.eval.result import Flag
from robustft.runs import RunDir
from robustft.train.monitor import OverfitVerdict, overfit_verdict

KNOWN_CLASSES = {"fashion_mnist": 10, "digits": 10}
"""Classes of the built-in datasets, for runs whose summary predates ``num_classes``."""
SAME_KEYS = {"data": None, "model": None, "optim": None, "train": ("epochs", "seed")}
"""Config keys a reference run should share with the run (None: the whole section)."""


def load_curve(path: str | Path, use_test: bool = True, delay_threshold: float | None = None,
               evaluation: str | None = None) -> Curve:
    """A run directory's epoch rows, final clean accuracy (test evaluation ``eval/EVALUATION``, default the
    run's own, if ``use_test`` and present, else the last validation one) and settings; ``delay_threshold``
    overrides the run's ``train.delay_threshold``.

    Raises:
        MissingFileError: not a run directory, or it has no epoch rows yet.
    """
    run = RunDir(Path(path))
    cfg = run.config()
    rows = run.epoch_rows()
    if not rows:
        raise MissingFileError(f"{run.path} has no epoch rows in metrics.jsonl yet: nothing to diagnose")
    summary = run.summary()
    result = run.robustness(evaluation) if use_test else None
    test_clean = result.clean if result is not None else None
    clean, source = (test_clean, "test") if test_clean is not None else (rows[-1].val_clean_acc, "validation")
    classes = (summary.num_classes if summary is not None else None) or cfg.model.num_classes or \
        KNOWN_CLASSES.get(cfg.data.name)
    return Curve(name=run.path.name, rows=rows, clean=clean, clean_source=source, num_classes=classes,
                 delay_threshold=cfg.train.delay_threshold if delay_threshold is None else delay_threshold,
                 schedule=summary.schedule if summary is not None and summary.schedule else {"kind": cfg.schedule.kind})


def training_verdict(path: str | Path) -> OverfitVerdict | None:
    """The overfitting monitor's verdict on a run directory's epoch rows (None for standard fine-tuning)."""
    run = RunDir(Path(path))
    cfg = run.config()
    if is_clean_objective(cfg.objective.name):
        return None
    summary = run.summary()
    stopped = summary.stopped_at_epoch if summary is not None else None
    return overfit_verdict(run.epoch_rows(), cfg.train.overfit_gap, stopped)


def config_differences(run: str | Path, reference: str | Path) -> list[str]:
    """Keys of :data:`SAME_KEYS` on which the reference's config differs from the run's, and a note if the
    reference trains at ε > 0."""
    a, b = config_to_dict(RunDir(Path(run)).config()), config_to_dict(RunDir(Path(reference)).config())
    out = [f"{s}.{k}: {a[s][k]!r} vs reference {b[s][k]!r}" for s, keys in SAME_KEYS.items()
           for k in (keys or a[s]) if a[s][k] != b[s][k]]
    if not is_clean_objective(b["objective"]["name"]):
        out.append(f"the reference is not standard fine-tuning (objective {b['objective']['name']!r})")
    return out


def diagnose_run(path: str | Path, reference: str | Path | None = None, max_gap: float = DEFAULT_GAP,
                 delay_threshold: float | None = None, evaluation: str | None = None) -> Diagnosis:
    """Diagnose a run directory, optionally against a standard fine-tuning reference run directory;
    ``delay_threshold`` (validation clean accuracy) overrides both runs' ``train.delay_threshold``;
    ``evaluation`` picks ``eval/NAME`` for the test clean accuracy (default: each run's own)."""
    run = load_curve(path, delay_threshold=delay_threshold, evaluation=evaluation)
    ref = load_curve(reference, delay_threshold=run.delay_threshold, evaluation=evaluation) if reference else None
    if reference and ref is not None and ref.clean_source != run.clean_source:  # compare like with like
        run = load_curve(path, False, run.delay_threshold)
        ref = load_curve(reference, False, run.delay_threshold)
    result = diagnose(run, ref, max_gap)
    verdict = training_verdict(path)
    if verdict is not None:
        result.flags.append(Flag("catastrophic_overfitting", verdict.raised if verdict.max_gap is not None else None,
                                 verdict.message, verdict.max_gap))
    if reference is not None:
        result.notes += [f"config differs: {d}" for d in config_differences(path, reference)]
    return result
