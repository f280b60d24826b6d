"""Report figures: each function takes run results and returns a matplotlib Figure drawn by Agg.

- :func:`robustness_curves`: accuracy vs ε (mean over seeds, ± std band), one line per setting;
- :func:`training_curves`: validation clean accuracy per epoch with ε(t) overlaid and the delay marked;
- :func:`clean_vs_eps`: clean accuracy vs ε_g (the paper's Figure 1), standard fine-tuning at ε_g = 0;
- :func:`schedules`: ε(t) per epoch as each run trained.

Figures are ``matplotlib.figure.Figure`` objects printed by ``FigureCanvasAgg``, never pyplot's: no backend is
chosen and no figure registered globally, so a notebook that renders a report keeps its own backend and
figures. matplotlib itself is imported by the first figure, not by ``import robustft.report``.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from robustft.analysis.stats import Aggregate, RunResult, method_rank
from robustft.config import OBJECTIVES, SCHEDULES, parse_eps
from robustft.eval.metrics import delay_time
from robustft.eval.result import RobustnessResult
from robustft.runs import RunDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OTHER_COLOR = "#e377c2"
"""The colour of a kind whose registry entry has none."""


def color(setting: str) -> str:
    """A stable colour per method: the clean objective's or the schedule kind's registry entry (variants of a kind
    share it and differ by :func:`linestyle`)."""
    name = setting.split(" ")[0]
    entry = next((r[name] for r in (OBJECTIVES, SCHEDULES) if name in r), None)
    return entry.color if entry is not None and entry.color else OTHER_COLOR


def linestyle(setting: str) -> str:
    """Solid for a plain setting; variants (TRADES, other keys: ``hinge (t2=0.5)``) dashed or dotted, stably."""
    if " " not in setting:
        return "-"
    return ("--", ":", "-.")[sum(map(ord, setting)) % 3]


def new_figure(**kwargs: Any) -> Figure:
    """A Figure on an Agg canvas, outside pyplot (``kwargs``: :class:`matplotlib.figure.Figure`'s)."""
    # matplotlib is slow to import and only reports draw: it loads here, not with the package
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _curve(r: RunResult) -> tuple[list[float], list[float]] | None:
    """(ε in /255, accuracy) of a run's evaluation, or None if it has none."""
    result = RunDir(r.path).robustness(r.row.evaluation)
    if result is None:
        return None
    return [255 * c.eps_value for c in result.curve], [c.accuracy for c in result.curve]


def _step_curve(r: RunResult, points: int = 400) -> tuple[np.ndarray, np.ndarray] | None:
    """(ε in /255, accuracy) of a run's evaluation between grid points too, where it has a minimum-norm pass
    (``min_norm`` in robustness.json: each example's ε* is known); else None."""
    run = RunDir(r.path)
    summary = run.robustness(r.row.evaluation)
    if summary is None or summary.min_norm is None:
        return None
    result = RobustnessResult.load(run.robustness_path(r.row.evaluation).parent)
    eps = np.linspace(0.0, result.eps[-1], points)
    return 255 * eps, result.accuracy_at(eps)


def _grid(n: int, width: float = 4.2, height: float = 3.0) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    # constrained layout leaves room for the suptitle and for legends below the axes
    fig = new_figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _panels(groups: list[Aggregate]) -> dict[str, list[Aggregate]]:
    """Groups per backbone × dataset × ε_g panel."""
    panels: dict[str, list[Aggregate]] = {}
    for g in sorted(groups, key=lambda g: (g.backbone, g.dataset, parse_eps(g.eps))):
        panels.setdefault(f"{g.backbone} → {g.dataset}, ε_g={g.eps}", []).append(g)
    return panels


def robustness_curves(groups: list[Aggregate]) -> Figure:
    """Accuracy vs ε per setting (mean over repeats with a ± std band), one panel per backbone × dataset × ε_g."""
    panels = _panels(groups)
    fig, axes = _grid(len(panels))
    for ax, (title, gs) in zip(axes, panels.items()):
        for g in gs:
            curves = [c for c in (_curve(r) for r in g.runs) if c is not None]
            if not curves or len({tuple(c[0]) for c in curves}) != 1:
                continue
            eps, acc = np.array(curves[0][0]), 100 * np.array([c[1] for c in curves])
            label = f"{g.setting} (n={len(curves)})" if len(curves) > 1 else g.setting
            ax.plot(eps, acc.mean(0), marker="o", ms=3, ls=linestyle(g.setting), color=color(g.setting), label=label)
            if len(curves) > 1:
                ax.fill_between(eps, acc.mean(0) - acc.std(0, ddof=1), acc.mean(0) + acc.std(0, ddof=1),
                                color=color(g.setting), alpha=0.2)
            steps = [c for c in (_step_curve(r) for r in g.runs) if c is not None]
            if len(steps) == len(curves) and len({len(c[0]) for c in steps}) == 1:  # every run has ε* per example
                fine = 100 * np.array([c[1] for c in steps])
                ax.plot(steps[0][0], fine.mean(0), lw=0.8, ls=":", color=color(g.setting),
                        label=f"{g.setting}, minimum-norm ε* (between grid points)")
        ax.set(xlabel="ε (/255)", ylabel="accuracy (%)", ylim=(0, 100))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Robustness curves: accuracy under attack vs ε")
    return fig


def _percent(fraction: float | None) -> float:
    """A fraction in percent; NaN (a gap in the plotted line) where the row has no value."""
    return np.nan if fraction is None else 100 * fraction


def training_curves(results: list[RunResult], delay_threshold: float | None = None) -> Figure:
    """Per run: validation clean accuracy per epoch, the overfitting monitor's accuracies under the training
    attack and under APGD-CE (a widening gap between them is catastrophic overfitting), ε(t) on a second
    axis, the delay time marked (first epoch above ``delay_threshold``, default the run's own) and the epochs
    of the head's probing shaded (``finetune.head``)."""
    fig, axes = _grid(len(results))
    for ax, r in zip(axes, results):
        rows = RunDir(r.path).epoch_rows()
        epochs = [row.epoch + 1 for row in rows]
        acc = [_percent(row.val_clean_acc) for row in rows]
        ax.plot(epochs, acc, "o-", ms=3, color=color(r.setting), label="val clean acc")
        if any(row.val_adv_acc is not None for row in rows):
            ax.plot(epochs, [_percent(row.val_adv_acc) for row in rows], "s--", ms=2, lw=1,
                    color=color(r.setting), alpha=0.6, label="val adv acc (ε_g)")
        if any(row.mon_gap is not None for row in rows):  # the overfitting monitor, at each epoch's ε
            ax.plot(epochs, [_percent(row.mon_attack_acc) for row in rows], "^:", ms=2, lw=1,
                    color="tab:red", alpha=0.8, label="monitor: training attack")
            ax.plot(epochs, [_percent(row.mon_ref_acc) for row in rows], "v-", ms=2, lw=1,
                    color="tab:purple", alpha=0.8, label="monitor: APGD-CE")
        threshold = r.config["train"]["delay_threshold"] if delay_threshold is None else delay_threshold
        delay = delay_time([row.val_clean_acc for row in rows], threshold)
        if delay is not None:
            ax.axvline(delay, color="k", ls=":", lw=1)
            ax.annotate(f"delay {delay}", (delay, 3), fontsize=7, ha="left")
        probing = [row.epoch + 1 for row in rows if row.phase == "probe"]
        if probing:
            ax.axvspan(min(probing) - 0.5, max(probing) + 0.5, color="tab:green", alpha=0.12, lw=0,
                       label="probing (head only)")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
        ax.set_title(f"{r.name} ({r.setting})", fontsize=9)
        ax.grid(alpha=0.3)
        eps_ax = ax.twinx()
        eps_ax.step(epochs, [255 * row.eps_mean for row in rows], where="mid", color="k",
                    alpha=0.5, lw=1.2, label="ε(t)")
        eps_ax.set_ylabel("ε (/255)")
        eps_ax.set_ylim(0, max(1.0, 255 * parse_eps(r.config["attack"]["eps"])) * 1.05)
        lines = ax.get_legend_handles_labels(), eps_ax.get_legend_handles_labels()
        # below the axis label, at a fixed distance in points (font sizes), whatever the axes' height
        ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, 0.0), borderaxespad=4.6, ncol=3, frameon=False)
    fig.suptitle(f"Training curves (validation; dotted line: delay time, accuracy > "
                 f"{'each run' + chr(39) + 's threshold' if delay_threshold is None else f'{100 * delay_threshold:.0f} %'})")
    return fig


def clean_vs_eps(groups: list[Aggregate]) -> Figure:
    """Clean accuracy vs ε_g per setting and backbone × dataset (mean ± std over repeats); standard
    fine-tuning is plotted at ε_g = 0. The paper's Figure 1 shows fix falling away as ε_g grows."""
    fig = new_figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    pairs = sorted({(g.backbone, g.dataset) for g in groups})
    markers = "osD^v<>"
    for i, (backbone, dataset) in enumerate(pairs):
        for setting in dict.fromkeys(g.setting for g in groups):
            gs = [g for g in groups if (g.backbone, g.dataset, g.setting) == (backbone, dataset, setting)]
            pts = sorted((0.0 if method_rank(setting) == 0 else 255 * parse_eps(g.eps), g.mean("clean"), g.std("clean"))
                         for g in gs if g.mean("clean") is not None)
            if not pts:
                continue
            x, y, s = zip(*pts)
            ax.errorbar(x, [100 * v for v in y], yerr=[100 * (v or 0) for v in s], marker=markers[i % 7],
                        ls=linestyle(setting), color=color(setting), capsize=3, label=f"{setting}" + (f" — {backbone}/{dataset}" if len(pairs) > 1 else ""))
    ax.set(xlabel="ε_g (/255)", ylabel="clean accuracy (%)", title="Clean accuracy vs ε_g", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def schedules(results: list[RunResult]) -> Figure:
    """ε(t) per epoch (the mean ε of the epoch's steps) of each distinct setting, as trained."""
    fig = new_figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    seen = set()
    for r in results:
        label = f"{r.setting} ε_g={r.row.eps}"
        if label in seen:
            continue
        seen.add(label)
        eps = [0.0] + [255 * row.eps_mean for row in RunDir(r.path).epoch_rows()]
        ax.step(range(len(eps)), eps, where="pre", color=color(r.setting), ls=linestyle(r.setting), lw=1.8, label=label)
    ax.set(xlabel="epoch", ylabel="ε (/255), epoch mean", title="ε schedules as trained")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
