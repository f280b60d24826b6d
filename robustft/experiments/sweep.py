"""Sweeps: a base config crossed with named variants and a grid over dotted keys; each point is an
ordinary run directory.

A sweep file::

    # robustft sweep sweeps/schedules.yaml
    base: ../configs/fmnist_scheduled.yaml   # relative to the sweep file
    # or bases: [../configs/paper/*.yaml]   # several base configs (globs too): each run is named BASE-...
    out_dir: runs/schedules_sweep           # parent of the run directories (relative to the working directory)
    set: {data.n_train: 300}                # applied to every run
    variants:                               # named settings, crossed with the grid (optional)
      standard: {objective.name: standard, schedule.kind: fix, schedule.t1: null, schedule.t2: null}
      fix: {schedule.kind: fix, schedule.t1: null, schedule.t2: null}
      scheduled: {}
    grid:                                   # dotted key → values: the cartesian product
      train.seed: [0, 1]

Runs are named ``VARIANT-key1value-key2value`` (the last part of every grid key, so adding values to a grid
later keeps the names of the runs already made), prefixed with the base config's file stem under ``bases``.
Re-running a sweep skips DONE runs whose config is the sweep's and resumes killed ones; a failing run (or a
DONE run made with another config) is recorded and the sweep goes on.

``jobs`` > 1 runs that many points at once, each in its own process with an equal share of torch's threads
(``robustft sweep --jobs 2``): on a CPU, small models use threads poorly (two threads train EfficientNet-Lite0
at 32 px only 1.3× faster than one, BENCHMARKS.md), so two one-thread runs side by side finish a sweep sooner
than one two-thread run after another. Workers log their epoch lines prefixed with the run's name and show no
progress bars. On GPUs keep ``jobs`` = 1 (or use ``train.processes`` for one run over several).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import re
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from robustft.config import Config, ConfigError, config_from_dict, format_eps, read_config_file
from robustft.errors import MissingFileError
from robustft.experiments.cluster import RayOptions, run_on_ray
from robustft.experiments.point import SweepPoint, default_train, run_point
from robustft.experiments.state import SweepOutcome, SweepRecorder
from robustft.runs import RunDir

log = logging.getLogger(__name__)


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    base: Path | None
    out_dir: Path
    fixed: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    bases: list[Path] = field(default_factory=list)
    """Several base configs (``bases:``), each crossed with the variants and the grid; its stem starts the
    names of its runs."""


SPEC_KEYS = {"base", "bases", "out_dir", "set", "variants", "grid"}


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (see the module docstring).

    Raises:
        MissingFileError: no such sweep file or base config.
        ConfigError: not YAML, unknown top-level keys, or malformed ``set`` / ``variants`` / ``grid``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError([f"{path} is not valid YAML ({' '.join(str(err).split())})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: a sweep file is a mapping (base, out_dir, set, variants, grid), "
                           f"got {type(raw).__name__}"])
    problems = [f"{path}: unknown key {k!r} (known: {', '.join(sorted(SPEC_KEYS))})" for k in raw if k not in SPEC_KEYS]
    base = (path.parent / raw["base"]) if raw.get("base") else None
    if base is not None and not base.is_file():
        raise MissingFileError(f"{path}: base config {base} not found (base is relative to the sweep file)")
    bases = _bases(path, raw.get("bases"))
    if base is not None and bases:
        problems.append(f"{path}: give base (one config) or bases (several), not both")
    if "out_dir" not in raw:
        problems.append(f"{path}: out_dir is required (the parent folder of the sweep's run directories)")
    fixed, variants, grid = raw.get("set") or {}, raw.get("variants") or {}, raw.get("grid") or {}
    if not isinstance(fixed, dict):
        problems.append(f"{path}: set must map dotted keys to values, e.g. set: {{data.n_train: 300}}")
    if not isinstance(variants, dict) or not all(isinstance(v, dict) or v is None for v in variants.values()):
        problems.append(f"{path}: variants must map names to settings, e.g. fix: {{schedule.kind: fix}}")
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        problems.append(f"{path}: grid must map dotted keys to non-empty lists, e.g. train.seed: [0, 1]")
    if problems:
        raise ConfigError(problems)
    bad = [str(v) for v in variants if not re.fullmatch(r"[A-Za-z0-9_.+=-]+", str(v))]
    if bad:
        raise ConfigError([f"{path}: variant names become folder names: use letters, digits and _ . + = - "
                           f"(got {', '.join(map(repr, bad))})"])
    return SweepSpec(base, Path(raw.get("out_dir", ".")).expanduser(), dict(fixed),
                     {str(k): dict(v or {}) for k, v in variants.items()}, dict(grid), bases)


def _bases(path: Path, entries: Any) -> list[Path]:
    """The config files that ``bases:`` lists (paths or globs relative to the sweep file), in order."""
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError([f"{path}: bases is a list of config files or globs, e.g. bases: [../configs/paper/*.yaml]"])
    found: list[Path] = []
    for entry in entries:
        matches = sorted(path.parent.glob(entry)) if any(c in entry for c in "*?[") else [path.parent / entry]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise MissingFileError(f"{path}: bases entry {entry!r} matches no config file (relative to the sweep file)")
        found += [m for m in matches if m not in found]
    stems = [m.stem for m in found]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ConfigError([f"{path}: base configs name their runs by file stem, and {', '.join(twice)} appear twice"])
    return found


def set_dotted(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a nested config dict with ``section.key`` values set."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for key, value in values.items():
        section, _, name = key.partition(".")
        if not name or "." in name:
            raise ConfigError([f"{key!r}: sweep keys are section.key, e.g. attack.eps"])
        if out.get(section) is None:  # a section left empty in the base config (``eval:``) is YAML null
            out[section] = {}
        if isinstance(out[section], dict):  # anything else is reported by config_from_dict
            out[section][name] = value
    return out


def _slug(key: str, value: Any) -> str:
    if isinstance(value, float) and value <= 1 and "eps" in key:
        value = format_eps(value)
    text = f"{key.rsplit('.', 1)[-1]}{value}".replace("/", "_")
    return re.sub(r"[^A-Za-z0-9_.+=-]", "", text)


def expand(spec: SweepSpec) -> list[SweepPoint]:
    """Every point of the sweep: variants × grid, each with a validated config.

    Raises:
        ConfigError: a point's config is invalid (every problem, prefixed with the point's name), or two
            points would share a run directory.
    """
    bases: list[tuple[str | None, dict[str, Any]]] = [(b.stem, read_config_file(b)) for b in spec.bases] or \
        [(None, read_config_file(spec.base) if spec.base else {})]
    keys = list(spec.grid)
    points, problems = [], []
    variants: list[tuple[str | None, dict[str, Any]]] = list(spec.variants.items()) if spec.variants else [(None, {})]
    for (stem, base), (variant, settings) in itertools.product(bases, variants):
        for combo in itertools.product(*(spec.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            parts = [part for part in (stem, variant) if part] + [_slug(k, values[k]) for k in keys]
            name = "-".join(parts) or "run"
            raw = set_dotted(base, {**spec.fixed, **settings, **values,
                                    "train.out_dir": str(spec.out_dir), "train.run_name": name})
            try:
                points.append(SweepPoint(name, variant, values, config_from_dict(raw)))
            except ConfigError as err:
                problems += [f"{name}: {p}" for p in err.problems]
    names = [p.name for p in points]
    problems += [f"two points are both named {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ConfigError(problems)
    return points


def finished_runs(points: list[SweepPoint], out_dir: Path) -> list[Path]:
    """The run directories of the points that are DONE, in sweep order."""
    return [out_dir / p.name for p in points if RunDir(out_dir / p.name).done]


def _worker_init(threads: int, level: int) -> None:
    """A sweep worker process: its share of the threads, no progress bars, log lines to stderr."""
    os.environ["TQDM_DISABLE"] = "1"  # several bars on one terminal garble each other; the epoch lines remain
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(message)s", force=True)


def _run_point_in_worker(train: Callable[[Config], Any], point: SweepPoint) -> tuple[str, str | None, str | None,
                                                                                      float]:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"[{point.name}] %(message)s"))
    return run_point(train, point)


def run_sweep(points: list[SweepPoint], out_dir: Path, train: Callable[[Config], Any] | None = None,
              jobs: int = 1, ray: RayOptions | None = None) -> SweepOutcome:
    """Run every point not yet DONE with ``train`` (default: :func:`robustft.api.fine_tune` with resume,
    which refuses a run directory made with another config); record failures and go on. ``jobs`` > 1 runs
    that many points at once in worker processes (``train`` must then be picklable: a module-level
    function), each with ``torch.get_num_threads() // jobs`` threads (at least 1). ``ray`` runs every point
    as a task on a Ray cluster instead (:mod:`robustft.experiments.cluster`). Writes ``OUT_DIR/sweep.json``
    each time a point ends (:class:`robustft.experiments.state.SweepRecorder`)."""
    if jobs < 1:
        raise ConfigError(f"jobs: at least 1, got {jobs}")
    if ray is not None and jobs != 1:
        raise ConfigError("jobs and ray exclude each other: on Ray, --cpus-per-run / --gpus-per-run decide how many "
                          "points run at once")
    record = SweepRecorder(points, out_dir)
    outcome = record.outcome
    todo = []
    for i, point in enumerate(points, 1):
        run = RunDir(out_dir / point.name)
        if run.done and not run.differences(point.config):
            log.info("[%d/%d] %s: DONE, skipped", i, len(points), point.name)
            record.finished(i, point, ("skipped", None, None, 0.0))
        else:
            todo.append((i, point))
    if ray is not None:
        if todo:  # nothing to train: no cluster is joined
            run_on_ray(todo, out_dir, train, ray, record)
        return outcome
    train = train or default_train
    if jobs == 1 or len(todo) <= 1:
        for i, point in todo:
            log.info("[%d/%d] %s: running", i, len(points), point.name)
            record.finished(i, point, run_point(train, point))
        return outcome

    threads = max(1, torch.get_num_threads() // jobs)
    log.info("sweep: %d runs, %d at a time with %d thread%s each", len(todo), jobs, threads, "s" * (threads > 1))
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads is unsafe
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(threads, logging.getLogger().getEffectiveLevel())) as pool:
        running = {}
        for i, point in todo:
            log.info("[%d/%d] %s: queued", i, len(points), point.name)
            running[pool.submit(_run_point_in_worker, train, point)] = (i, point)
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, point = running.pop(future)
                    try:
                        result = future.result()
                    except KeyboardInterrupt:
                        raise
                    except Exception as err:  # the worker itself died (e.g. killed for memory)
                        result = ("failed", f"{type(err).__name__}: {err}", traceback.format_exc(), float("nan"))
                    record.finished(i, point, result)
                    log.info("[%d/%d] %s: %s", i, len(points), point.name, result[0])
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outcome
