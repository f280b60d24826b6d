"""``robustft diagnose``: the suboptimal-transfer diagnosis of a run directory
(:func:`robustft.analysis.diagnose_run`) in Markdown."""

from __future__ import annotations

from robustft.config import SCHEDULES
from robustft.eval.diagnostics import Diagnosis, epoch_table, sparkline
from robustft.report.table import percent


def _schedule_text(s: dict) -> str:
    parts = [str(s.get("kind", "?"))]
    parts += [f"{k}={s[k]:g}" for k in ("t1", "t2") if isinstance(s.get(k), (int, float))]
    if s.get("kind") in SCHEDULES and SCHEDULES[str(s.get("kind"))].adaptive:
        k = s.get("switch")
        parts.append("never switched" if k is None else f"plateau at epoch {int(k) + 1}, ε > 0 from epoch {int(k) + 2}")
    return " ".join(parts)


def render_diagnosis(d: Diagnosis) -> str:
    """The diagnosis in Markdown: headline, flags, and the per-epoch validation table with sparklines."""
    r, ref = d.run, d.reference
    lines = [f"# Diagnosis of {r.name}", "",
             f"- schedule: {_schedule_text(r.schedule)}",
             f"- final {r.clean_source} clean accuracy: {percent(r.clean)} %"
             + (f"; reference {ref.name}: {percent(ref.clean)} %, gap {100 * d.gap:.1f} points"
                if d.gap is not None and ref is not None else ""),
             f"- delay time: {r.delay if r.delay is not None else 'never'} epoch(s) to validation clean accuracy "
             f"> {100 * r.delay_threshold:.0f} %" + (f" (reference: {ref.delay})" if ref else "")]
    lines += ["", "Flags:"] + [f"- [{'RAISED' if f.raised else 'n/a' if f.raised is None else 'ok'}] {f.name}: "
                               f"{f.message}" for f in d.flags]
    if d.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in d.notes]
    table = epoch_table(r, ref)
    lines += ["", f"Validation clean accuracy by epoch: `{sparkline([t['val_clean_acc'] for t in table])}`"
              + (f" (reference `{sparkline([t['ref_val_clean_acc'] for t in table])}`)" if ref else ""), "",
              "| epoch | ε | clean acc | clean loss | adv. acc | adv. loss | monitor: training attack | "
              "monitor: APGD-CE | gap |" + (" reference clean acc |" if ref else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if ref else "")]
    for t in table:
        loss = [f"{t[k]:.3f}" if t[k] is not None else "—" for k in ("val_clean_loss", "val_adv_loss")]
        gap = "—" if t["mon_gap"] is None else f"{100 * t['mon_gap']:.1f}"
        row = (f"| {t['epoch'] + 1} | {255 * t['eps']:.2f}/255 | {percent(t['val_clean_acc'])} | {loss[0]} | "
               f"{percent(t['val_adv_acc'])} | {loss[1]} | {percent(t['mon_attack_acc'])} | "
               f"{percent(t['mon_ref_acc'])} | {gap} |")
        lines.append(row + (f" {percent(t['ref_val_clean_acc'])} |" if ref else ""))
    return "\n".join(lines)
