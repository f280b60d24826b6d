"""Statistics across runs: mean ± std over seeds, and paired t-tests of a schedule against fix across
matched configurations (the paper's Table 9, with seeds as extra pairs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from robustft.analysis.rows import METRICS, RunRow
from robustft.config import OBJECTIVES, SCHEDULES, FinetuneConfig, config_to_dict, is_clean_objective
from robustft.runs import RunDir

SEED_KEYS = {("train", "seed"), ("train", "run_name"), ("train", "out_dir")}
"""Config keys that do not make two runs different settings (repeats of one setting differ only here)."""
INCIDENTAL_KEYS = {("train", k) for k in ("device", "log_every", "delay_threshold", "evaluate", "val_adv_n")} | {
    ("data", k) for k in ("cache_dir", "download", "eval_batch_size")} | {("eval", "bootstrap")}
"""Config keys that change neither the trained model nor its test numbers."""


def objective_identity(config: dict[str, Any]) -> tuple:
    """The objective and the keys it uses (its registry entry's)."""
    o = config["objective"]
    return (o["name"],) + tuple((k, repr(o[k])) for k in OBJECTIVES.keys_of(o["name"], o) if k in o)


def schedule_identity(config: dict[str, Any]) -> tuple:
    """The ε schedule and the keys its kind uses (its registry entry's; none for a clean objective, which has no ε)."""
    if is_clean_objective(config["objective"]["name"]):
        return ()
    s = config["schedule"]
    return (s["kind"],) + tuple((k, repr(s[k])) for k in SCHEDULES.keys_of(s["kind"], s) if k in s)


@dataclass
class RunResult:
    """One run's numbers and what identifies its setting."""

    path: Path
    row: RunRow
    config: dict[str, Any]
    name: str = ""
    """Display name: the folder name, with its parent where two runs share one."""
    setting: str = ""
    """The method: ``standard``, ``fix``, ``hinge``, …, with the keys that tell apart two settings of one kind."""

    @property
    def backbone(self) -> str:
        return self.config["model"]["name"]

    @property
    def dataset(self) -> str:
        return self.config["data"]["name"]

    @property
    def seed(self) -> int:
        return self.config["train"]["seed"]

    @property
    def is_clean(self) -> bool:
        """Trained on clean inputs only (standard fine-tuning): the clean reference of a comparison."""
        return is_clean_objective(self.config["objective"]["name"])

    @property
    def is_remedy(self) -> bool:
        """Fine-tuned otherwise than the paper (``finetune``: a mode other than full, or a head start other than
        random): LP-FT, RoLI, LoRA, ..."""
        f, paper = self.config.get("finetune", {}), FinetuneConfig()
        return f.get("mode", paper.mode) != paper.mode or f.get("head", paper.head) != paper.head

    @property
    def is_fix(self) -> bool:
        """The robust baseline: the ``baseline`` schedule (RFT-fix, ε_g from the first step), any robust objective."""
        kind = self.config["schedule"]["kind"]
        return not self.is_clean and kind in SCHEDULES and SCHEDULES[kind].baseline

    def key(self, drop_schedule: bool = False, drop_finetune: bool = False) -> tuple:
        """What makes a setting: every key but the seed and incidental ones, with the objective and the
        schedule reduced to the keys they use (the schedule left out if ``drop_schedule``, the ``finetune``
        section if ``drop_finetune``); hashable."""
        drop = SEED_KEYS | INCIDENTAL_KEYS
        left_out = ("objective", "schedule") + (("finetune",) if drop_finetune else ())
        rest = tuple(sorted((f"{s}.{k}", repr(v)) for s, sec in self.config.items() if s not in left_out
                            for k, v in sec.items() if (s, k) not in drop))
        return rest + (objective_identity(self.config),) + (() if drop_schedule else (schedule_identity(self.config),))


def load_results(paths: Sequence[str | Path], evaluation: str | None = None) -> list[RunResult]:
    """The results of run directories (config, summary and evaluation), in the given order; a directory
    given twice counts once."""
    unique = list({Path(p).resolve(): Path(p) for p in reversed(paths)}.values())[::-1]  # first of each, as given
    records = [RunDir(p).record(evaluation) for p in unique]
    results = [RunResult(p, RunRow.from_record(r), config_to_dict(r.config)) for p, r in zip(unique, records)]
    names = [r.path.name for r in results]
    for r in results:
        r.name = r.path.name if names.count(r.path.name) == 1 else f"{r.path.parent.name}/{r.path.name}"
        r.setting = r.row.schedule
    _disambiguate(results)
    return results


def _disambiguate(results: list[RunResult]) -> None:
    """Give settings of one kind that differ in the keys their method uses distinct labels, e.g.
    ``auto (latest_t1=None)`` and ``auto (latest_t1=0.5)``; the label does not depend on the order of runs."""
    for label in dict.fromkeys(r.setting for r in results):
        same = [r for r in results if r.setting == label]
        methods = [dict(schedule_identity(r.config)[1:] + objective_identity(r.config)[1:]) for r in same]
        differing = sorted({k for m in methods for k in m if len({m2.get(k) for m2 in methods}) > 1})
        for r, m in zip(same, methods):
            if differing:
                r.setting = f"{label} (" + ", ".join(f"{k}={m.get(k, '—')}" for k in differing) + ")"


@dataclass
class Aggregate:
    """Mean, sample standard deviation and count of each metric over the repeats of one setting."""

    setting: str
    backbone: str
    dataset: str
    eps: Any
    runs: list[RunResult] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [v for v in (r.row.metric(metric) for r in self.runs) if v is not None]

    def mean(self, metric: str) -> float | None:
        v = self.values(metric)
        return sum(v) / len(v) if v else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation (n − 1); None with fewer than two values."""
        v = self.values(metric)
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    def n(self, metric: str = "clean") -> int:
        return len(self.values(metric))

    def flags(self) -> list[str]:
        """Sanity flags raised in any repeat, each with how many repeats raised it."""
        names = [f for r in self.runs for f in (r.row.flags or ())]
        return [f"{f} ({names.count(f)}/{len(self.runs)})" for f in dict.fromkeys(names)]


def aggregate(results: list[RunResult]) -> list[Aggregate]:
    """Group runs that differ only in their seed; groups in order of first appearance."""
    groups: dict[tuple, Aggregate] = {}
    for r in results:
        g = groups.setdefault(r.key(), Aggregate(r.setting, r.backbone, r.dataset, r.row.eps))
        g.runs.append(r)
    return list(groups.values())


def mean_std(mean: float | None, std: float | None, n: int, scale: float = 100.0) -> str:
    """``mean ± std (n)`` in percent; ``—`` without values, no ± for a single one."""
    if mean is None:
        return "—"
    return f"{scale * mean:.1f}" + (f" ± {scale * std:.1f}" if std is not None else "") + (f" (n={n})" if n > 1 else "")


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of ``treatment`` against ``baseline`` on one metric."""

    metric: str
    baseline: str
    treatment: str
    n: int
    mean_diff: float
    """Mean of treatment − baseline over the pairs (fraction, not percent)."""
    t: float | None
    p: float | None
    """Two-sided p-value; None when n < 2 or every difference is equal."""
    wins: int
    """Pairs where the treatment is higher."""


def paired_ttest(baseline: list[float], treatment: list[float]) -> tuple[float | None, float | None]:
    """(t, two-sided p) of the paired t-test of ``treatment − baseline``; (None, None) when it is undefined
    (fewer than two pairs, or no spread in the differences)."""
    from scipy import stats  # scipy takes a second to import and only this test needs it

    if len(baseline) != len(treatment):
        raise ValueError(f"paired t-test needs pairs: {len(baseline)} baseline values vs {len(treatment)}")
    d = [b - a for a, b in zip(baseline, treatment)]
    # equal differences up to rounding (0.3 - 0.2 != 0.2 - 0.1 in floats) would give t ~ 1e16 and p ~ 0
    if len(d) < 2 or max(d) - min(d) <= 1e-9 * max(1.0, *(abs(v) for v in [*baseline, *treatment])):
        return None, None
    res = stats.ttest_rel(treatment, baseline)
    return float(res.statistic), float(res.pvalue)


def baseline_name() -> str:
    """The name of the robust baseline schedule every other schedule is compared with (``fix``)."""
    entry = SCHEDULES.first("baseline")
    return entry.name if entry is not None else "fix"


def method_rank(setting: str) -> int:
    """Where a setting sorts among methods: the clean reference (0), the robust baseline (1), the rest (2)."""
    name = setting.split(" ")[0]
    if name in OBJECTIVES and OBJECTIVES[name].clean:
        return 0
    return 1 if name in SCHEDULES and SCHEDULES[name].baseline else 2


def matched_pairs(results: list[RunResult], treatment: str) -> list[tuple[RunResult, RunResult]]:
    """(fix run, ``treatment`` run) pairs that share everything but the schedule (objective and seed included)."""
    base = {(r.key(drop_schedule=True), r.seed): r for r in results if r.is_fix}
    return [(base[(r.key(drop_schedule=True), r.seed)], r) for r in results
            if r.setting == treatment and not r.is_fix and (r.key(drop_schedule=True), r.seed) in base]


def compare_to_fix(results: list[RunResult]) -> list[PairedTest]:
    """Paired t-tests of every scheduled setting against fix with the same objective, on each metric, over
    matched (configuration, seed) pairs."""
    settings = [s for s in dict.fromkeys(r.setting for r in results if not r.is_fix
                                         and not r.is_clean)]
    tests = []
    for s in settings:
        pairs = matched_pairs(results, s)
        tests += paired_tests(pairs, pairs[0][0].setting if pairs else baseline_name(), s)
    return tests


def compare_remedies(results: list[RunResult]) -> list[PairedTest]:
    """Paired t-tests of every remedy setting (:attr:`RunResult.is_remedy`: LP-FT, RoLI, LoRA, ...) against each
    robust setting of the paper's fine-tuning (fix, Epsilon-Scheduling, ...), on each metric, over runs that
    share everything but the schedule and the ``finetune`` section (data, model, attack, optimiser, objective and
    seed)."""
    def at(r: RunResult) -> tuple:
        return r.key(drop_schedule=True, drop_finetune=True), r.seed

    references = dict.fromkeys(r.setting for r in results if not r.is_clean and not r.is_remedy)
    remedies = dict.fromkeys(r.setting for r in results if r.is_remedy)
    tests = []
    for reference in references:
        base = {at(r): r for r in results if r.setting == reference}
        for remedy in remedies:
            pairs = [(base[at(r)], r) for r in results if r.setting == remedy and at(r) in base]
            tests += paired_tests(pairs, reference, remedy)
    return tests


def paired_tests(pairs: list[tuple[RunResult, RunResult]], baseline: str, treatment: str) -> list[PairedTest]:
    """The paired t-test of (baseline run, treatment run) ``pairs`` on each metric both runs of a pair have."""
    tests = []
    for metric in METRICS:
        values = [(a.row.metric(metric), b.row.metric(metric)) for a, b in pairs]
        ok = [(x, y) for x, y in values if x is not None and y is not None]
        if not ok:
            continue
        a, b = [x for x, _ in ok], [y for _, y in ok]
        t, p = paired_ttest(a, b)
        tests.append(PairedTest(metric, baseline, treatment, len(ok), sum(y - x for x, y in ok) / len(ok), t, p,
                                sum(y > x for x, y in ok)))
    return tests
