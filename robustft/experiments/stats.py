"""Statistics across runs: mean ± std over seeds, and paired t-tests of a schedule against fix across
matched configurations (the paper's Table 9, with seeds as extra pairs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustft.config import config_to_dict
from robustft.report.table import run_row
from robustft.runs import RunDir

METRICS = ("clean", "adv", "e_adv")
SEED_KEYS = {("train", "seed"), ("train", "run_name"), ("train", "out_dir")}
"""Config keys that do not make two runs different settings (repeats of one setting differ only here)."""
METHOD_SECTIONS = ("objective", "schedule")
"""Config sections that define the method compared at a matched configuration."""


@dataclass
class RunResult:
    """One run's numbers and what identifies its setting."""

    path: Path
    row: dict[str, Any]
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

    def key(self, drop_method: bool = False) -> tuple:
        """Everything but the seed (and the method's sections if ``drop_method``), hashable."""
        drop = set(SEED_KEYS) | ({(s, k) for s in METHOD_SECTIONS for k in self.config[s]} if drop_method else set())
        return tuple(sorted((f"{s}.{k}", repr(v)) for s, sec in self.config.items() for k, v in sec.items()
                            if (s, k) not in drop))


def load_results(paths: list[str | Path], evaluation: str | None = None) -> list[RunResult]:
    """The results of run directories (config, summary and evaluation), in the given order."""
    results = [RunResult(Path(p), run_row(p, evaluation), config_to_dict(RunDir(Path(p)).config())) for p in paths]
    names = [r.path.name for r in results]
    for r in results:
        r.name = r.path.name if names.count(r.path.name) == 1 else f"{r.path.parent.name}/{r.path.name}"
        r.setting = r.row["schedule"]
    _disambiguate(results)
    return results


def _method(r: RunResult) -> dict[tuple[str, str], Any]:
    """The keys that define a run's method (standard fine-tuning ignores its schedule)."""
    sections = ("objective",) if r.setting == "standard" else METHOD_SECTIONS
    return {(s, k): v for s in sections for k, v in r.config[s].items()}


def _disambiguate(results: list[RunResult]) -> None:
    """Give settings of one kind that differ in their method's keys distinct labels, e.g. ``auto`` and
    ``auto (latest_t1=0.5)``; the first one seen keeps the plain label."""
    for label in dict.fromkeys(r.setting for r in results):
        same = [r for r in results if r.setting == label]
        methods = [_method(r) for r in same]
        differing = [key for key in methods[0] if len({repr(m[key]) for m in methods}) > 1]
        for r, m in zip(same, methods):
            if any(m[k] != methods[0][k] for k in differing):
                r.setting = f"{label} (" + ", ".join(f"{k[1]}={m[k]}" for k in differing) + ")"


@dataclass
class Aggregate:
    """Mean, sample standard deviation and count of each metric over the repeats of one setting."""

    setting: str
    backbone: str
    dataset: str
    eps: Any
    runs: list[RunResult] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [r.row[metric] for r in self.runs if r.row[metric] is not None]

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
        names = [f for r in self.runs for f in (r.row["flags"] or [])]
        return [f"{f} ({names.count(f)}/{len(self.runs)})" for f in dict.fromkeys(names)]


def aggregate(results: list[RunResult]) -> list[Aggregate]:
    """Group runs that differ only in their seed; groups in order of first appearance."""
    groups: dict[tuple, Aggregate] = {}
    for r in results:
        g = groups.setdefault(r.key(), Aggregate(r.setting, r.backbone, r.dataset, r.row["eps"]))
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
    from scipy import stats

    if len(baseline) != len(treatment):
        raise ValueError(f"paired t-test needs pairs: {len(baseline)} baseline values vs {len(treatment)}")
    d = [b - a for a, b in zip(baseline, treatment)]
    # equal differences up to rounding (0.3 - 0.2 != 0.2 - 0.1 in floats) would give t ~ 1e16 and p ~ 0
    if len(d) < 2 or max(d) - min(d) <= 1e-9 * max(1.0, *(abs(v) for v in [*baseline, *treatment])):
        return None, None
    res = stats.ttest_rel(treatment, baseline)
    return float(res.statistic), float(res.pvalue)


def matched_pairs(results: list[RunResult], baseline: str, treatment: str) -> list[tuple[RunResult, RunResult]]:
    """(baseline run, treatment run) pairs that share everything but the method, seed included."""
    base = {(r.key(drop_method=True), r.seed): r for r in results if r.setting == baseline}
    return [(base[(r.key(drop_method=True), r.seed)], r) for r in results
            if r.setting == treatment and (r.key(drop_method=True), r.seed) in base]


def compare_to(results: list[RunResult], baseline: str = "fix") -> list[PairedTest]:
    """Paired t-tests of every other robust setting against ``baseline`` on each metric, over matched
    (configuration, seed) pairs."""
    settings = [s for s in dict.fromkeys(r.setting for r in results) if s not in (baseline, "standard")]
    tests = []
    for s in settings:
        pairs = matched_pairs(results, baseline, s)
        for metric in METRICS:
            ok = [(a.row[metric], b.row[metric]) for a, b in pairs if None not in (a.row[metric], b.row[metric])]
            if not ok:
                continue
            a, b = [x for x, _ in ok], [y for _, y in ok]
            t, p = paired_ttest(a, b)
            tests.append(PairedTest(metric, baseline, s, len(ok), sum(y - x for x, y in ok) / len(ok), t, p,
                                    sum(y > x for x, y in ok)))
    return tests
