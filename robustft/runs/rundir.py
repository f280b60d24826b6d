"""A run directory describes itself::

    RUN/config.yaml          resolved config (``robustft train RUN/config.yaml`` reproduces the run)
    RUN/env.json             versions, device, start time
    RUN/metrics.jsonl        one JSON row per logged step and per epoch (schema: robustft/runs/metrics.py)
    RUN/checkpoints/last.pt  model (and its weight average), optimiser, schedule position, RNG state (atomic)
    RUN/checkpoints/best.pt  the weights of the best robust epoch, under train.select: best_robust
    RUN/summary.json         training summary (wall time, delay time, final validation accuracy):
                             robustft.runs.TrainSummary, read with :meth:`RunDir.summary`
    RUN/eval/NAME/           one evaluation (NAME: its attacks): robustness.json and correct.npz, and
                             partial.npz while it runs (a killed evaluation resumes from it); its numbers are
                             robustft.runs.RobustnessSummary, read with :meth:`RunDir.robustness`
    RUN/DONE                 written last, when training and evaluation have finished
    RUN/resumes.jsonl        one row per resume that changed optimiser settings (RESUMABLE_KEYS), and
    RUN/config.original.yaml the config the run started with (config.yaml then holds the current one)

:meth:`RunDir.record` reads config.yaml, summary.json and one evaluation's robustness.json as one typed record
(:class:`robustft.runs.RunRecord`).

A start that stops before the first checkpoint leaves only config.yaml, env.json and metrics.jsonl; the next
start of the same run takes such a folder over (:meth:`RunDir.abandoned`).

A run of ``robustft.fit(model, data, run=RUN)`` (a model and data of the caller's, not built from a config) has
the same files. Its config.yaml holds only what ``fit`` knows (the train section, the objective, the attack, the
schedule's kind, the optimiser when robustft built it) and ``unknown`` where it cannot know (``model.name``,
``data.name``; the objective, attack or schedule kind when they are not robustft's): :meth:`RunDir.config` reads
it with robustft's defaults for the keys not written, and :meth:`RunDir.own_model` says the run is of that kind.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable

import yaml

from robustft.config import (
    Config,
    config_from_dict,
    config_to_dict,
    evaluation_name,
    read_config_file,
    save_config,
)
from robustft.errors import ConfigError, MissingFileError
from robustft.runs.metrics import EpochRow, Row, StepRow, read_rows, to_line
from robustft.runs.record import RunRecord
from robustft.runs.robustness import ROBUSTNESS_FILE, RobustnessSummary
from robustft.runs.summary import TrainSummary

log = logging.getLogger(__name__)

RESUMABLE_KEYS = frozenset({"optim.lr", "optim.head_lr", "optim.weight_decay", "optim.head_weight_decay",
                            "optim.grad_clip", "optim.warmup_epochs", "optim.min_lr_ratio", "train.precision"})
"""Keys a resume may change (recorded in resumes.jsonl): the remedies of a run whose loss diverged, which act
only on the steps still to come (optimiser settings; the arithmetic of the forward passes). Everything else
defines the run and is refused, AdamW's betas included (the checkpoint's moment estimates were averaged under
the old ones)."""

TEMP_FILE = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
"""The name :func:`atomic_write` gives its temporary file: ``.NAME.XXXXXXXX.tmp`` (tempfile.mkstemp)."""

_STARTED = {"config.yaml", "env.json", "metrics.jsonl", "checkpoints"}
"""What a start leaves before its first checkpoint."""

UNKNOWN = "unknown"
"""The value a run of ``robustft.fit`` writes in config.yaml for what it cannot know (``model.name: unknown``)."""
UNKNOWABLE = (("data", "name"), ("model", "name"), ("objective", "name"), ("attack", "name"), ("schedule", "kind"))
"""The config keys that may be :data:`UNKNOWN` (the names of a caller's own objects)."""


def _umask() -> int:
    """The process's umask (read from /proc where it can be, so no other thread sees a changed one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, then rename it over ``path``, so that
    readers see the old or the new content, never a partial one (a killed run loses nothing). The file gets
    the mode of any other new file (0666 less the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically write a binary file."""
    atomic_write(path, lambda f: f.write(data))


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that writes in ``folder`` killed before their rename left (only names of
    :data:`TEMP_FILE`'s pattern); returns them. Call it where no write can be in progress."""
    stale = sorted(p for p in folder.glob(".*.tmp") if TEMP_FILE.fullmatch(p.name) and p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted write in %s: %s", len(stale), folder,
                 ", ".join(p.name for p in stale))
    return stale


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def versions() -> dict[str, str]:
    """Versions of robustft and the packages its numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("robustft", "torch", "torchvision", "timm", "pyautoattack"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def environment() -> dict[str, Any]:
    """Versions and machine facts worth keeping beside results."""
    import torch

    return {"python": platform.python_version(), **versions(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_config_from_dict(raw: dict[str, Any]) -> Config:
    """:func:`robustft.config.config_from_dict` for a run's config, which may hold :data:`UNKNOWN` for the keys of
    :data:`UNKNOWABLE`: those are validated as robustft's defaults and come back as :data:`UNKNOWN`."""
    unknown = [(s, k) for s, k in UNKNOWABLE if isinstance(raw.get(s), dict) and raw[s].get(k) == UNKNOWN]
    known = {s: {k: v for k, v in values.items() if (s, k) not in unknown} if isinstance(values, dict) else values
             for s, values in raw.items()}
    cfg = config_from_dict(known)
    for section, key in unknown:
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{key: UNKNOWN})})
    return cfg


@dataclass(frozen=True)
class RunDir:
    """Paths and small I/O helpers of one run directory."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best_path(self) -> Path:
        """The weights of the best epoch under ``train.select: best_robust``."""
        return self.path / "checkpoints" / "best.pt"

    def evaluated_checkpoint(self) -> Path:
        """The checkpoint an evaluation of the run takes: ``best.pt`` under ``train.select: best_robust``
        (when it exists), else ``last.pt``."""
        best = self.config().train.select == "best_robust" and self.best_path.exists()
        return self.best_path if best else self.checkpoint_path

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def evaluation_dir(self, name: str) -> Path:
        """The folder of one evaluation, ``eval/NAME``."""
        return self.eval_dir / name

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    @property
    def resumes_path(self) -> Path:
        """One JSON row per resume that changed settings (:data:`RESUMABLE_KEYS`)."""
        return self.path / "resumes.jsonl"

    @property
    def original_config_path(self) -> Path:
        """The config the run started with, kept once a resume has changed config.yaml."""
        return self.path / "config.original.yaml"

    def abandoned(self) -> bool:
        """Whether the folder holds only what a start that stopped before its first checkpoint leaves
        (config.yaml, env.json, metrics.jsonl, an empty checkpoints/, temporary files): no checkpoint, no
        evaluation, not DONE, nothing else. A new start of the run may take it over."""
        if not self.path.is_dir():
            return False
        names = {p.name for p in self.path.iterdir() if not TEMP_FILE.fullmatch(p.name)}
        folder = self.path / "checkpoints"
        if not names <= _STARTED or (folder.exists() and not folder.is_dir()):
            return False
        return not folder.is_dir() or all(TEMP_FILE.fullmatch(p.name) for p in folder.iterdir())

    def remove_temp_files(self) -> list[Path]:
        """Delete what writes of an earlier, killed start left in the run folder and checkpoints/ (a killed
        checkpoint write leaves ``checkpoints/.last.pt.XXXXXXXX.tmp``); call it before training starts."""
        return remove_temp_files(self.path) + remove_temp_files(self.path / "checkpoints")

    def create(self, cfg: Config | None) -> None:
        """Make the folder and write config.yaml (unless ``cfg`` is None: a run of the object API, which has
        no config) and env.json (a fresh start: old metrics are dropped)."""
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.metrics_path.unlink(missing_ok=True)
        if cfg is not None:
            save_config(cfg, self.config_path)
        write_json(self.path / "env.json", environment())

    def config(self) -> Config:
        """The run's resolved config; for a run of ``robustft.fit``, what it wrote, robustft's defaults for the
        keys it did not write, and :data:`UNKNOWN` for the names it could not know.

        Raises:
            MissingFileError: the folder has no config.yaml (it is not a run directory).
        """
        if not self.config_path.is_file():
            raise MissingFileError(f"{self.path} is not a run directory (no config.yaml): give a folder that "
                                   "robustft train, robustft.fine_tune or robustft.fit(run=...) wrote")
        return run_config_from_dict(read_config_file(self.config_path))

    def own_model(self) -> bool:
        """Whether the run trained a model robustft cannot rebuild from its config (a run of ``robustft.fit``)."""
        cfg = self.config()
        return UNKNOWN in (cfg.model.name, cfg.data.name)

    def write_own_config(self, sections: dict[str, dict[str, Any]], note: str) -> None:
        """Write config.yaml of a run of ``robustft.fit``: ``sections`` (what is known, :data:`UNKNOWN` where it is
        not), below ``note`` as a comment."""
        comment = "".join(f"# {line}\n" for line in note.splitlines())
        atomic_write_text(self.config_path, comment + yaml.safe_dump(sections, sort_keys=False, allow_unicode=True))

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def summary(self) -> TrainSummary | None:
        """The training summary (summary.json), or None while the run has none (training has not finished)."""
        return TrainSummary.read(self.summary_path) if self.summary_path.is_file() else None

    def write_summary(self, summary: TrainSummary) -> None:
        """Write summary.json (atomically)."""
        write_json(self.summary_path, summary.to_dict())

    def evaluations(self) -> list[str]:
        """The names of the run's evaluations (folders under ``eval/`` with a robustness.json), sorted."""
        return sorted(p.parent.name for p in self.eval_dir.glob(f"*/{ROBUSTNESS_FILE}") if p.is_file())

    def robustness_path(self, evaluation: str | None = None) -> Path:
        """``eval/NAME/robustness.json`` (NAME: ``evaluation``, else the run config's own evaluation; a run
        written before evaluations had names keeps it as ``eval/robustness.json``)."""
        path = self.evaluation_dir(evaluation or evaluation_name(self.config().eval)) / ROBUSTNESS_FILE
        legacy = self.eval_dir / ROBUSTNESS_FILE
        return legacy if evaluation is None and not path.exists() and legacy.exists() else path

    def robustness(self, evaluation: str | None = None) -> RobustnessSummary | None:
        """The numbers of an evaluation (:meth:`robustness_path`), or None while the run has none."""
        path = self.robustness_path(evaluation)
        return RobustnessSummary.read(path) if path.is_file() else None

    def record(self, evaluation: str | None = None) -> RunRecord:
        """The run's config, training summary and the numbers of ``evaluation`` (default: the config's own)."""
        return RunRecord(self.path, self.config(), self.summary(), self.robustness(evaluation), evaluation)

    def changes(self, cfg: Config) -> dict[str, tuple[Any, Any]]:
        """``section.key``: (saved value, value in ``cfg``) of every key that differs from the run's config."""
        saved, new = config_to_dict(self.config()), config_to_dict(cfg)
        return {f"{s}.{k}": (saved[s][k], new[s][k]) for s in new for k in new[s] if saved[s][k] != new[s][k]}

    def differences(self, cfg: Config) -> list[str]:
        """Keys whose values differ between ``cfg`` and the run's saved config, as ``key: old -> new``."""
        return [f"{key}: {old!r} -> {new!r}" for key, (old, new) in self.changes(cfg).items()]

    def resume_changes(self, cfg: Config, allowed: frozenset[str] = RESUMABLE_KEYS) -> dict[str, tuple[Any, Any]]:
        """What resuming the run with ``cfg`` changes (see :meth:`changes`), every key among ``allowed``.

        Raises:
            ConfigError: ``cfg`` changes another key; the message names each with its two values.
        """
        changes = self.changes(cfg)
        refused = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items() if key not in allowed]
        if refused:
            may = f"only {', '.join(sorted(allowed))}" if allowed else "nothing"
            raise ConfigError(f"cannot resume {self.path} with a different config: {'; '.join(refused)} (a resume "
                              f"may change {may}; for a new run choose another train.run_name or train.out_dir)")
        return changes

    def record_resume(self, cfg: Config, epochs_done: int, step: int) -> dict[str, tuple[Any, Any]]:
        """Resume the run under ``cfg`` from the checkpoint after ``epochs_done`` epochs (global ``step``):
        when it changes settings (:meth:`resume_changes`), log them, append them to resumes.jsonl, keep the
        starting config as config.original.yaml (once) and save ``cfg`` as config.yaml. Returns the changes."""
        changes = self.resume_changes(cfg)
        if not changes:
            return changes
        log.warning("resuming %s after epoch %d with changed settings: %s", self.path, epochs_done,
                    "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()))
        if not self.original_config_path.exists():
            atomic_write_text(self.original_config_path, self.config_path.read_text())
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epochs_done": epochs_done, "step": step,
               "changes": {key: {"from": old, "to": new} for key, (old, new) in changes.items()}}
        with open(self.resumes_path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        atomic_write_text(self.config_path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))  # as save_config
        return changes

    def log(self, row: Row) -> None:
        """Append one row to metrics.jsonl."""
        with open(self.metrics_path, "a") as f:
            f.write(to_line(row))

    def epoch_rows(self) -> list[EpochRow]:
        """The epoch rows of metrics.jsonl (:func:`robustft.runs.metrics.read_rows`)."""
        return read_rows(self.metrics_path, EpochRow)

    def step_rows(self) -> list[StepRow]:
        """The step rows of metrics.jsonl (:func:`robustft.runs.metrics.read_rows`)."""
        return read_rows(self.metrics_path, StepRow)

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop rows written after the last checkpoint (of epochs >= ``epochs_done``), for a resume."""
        kept = [r for r in read_rows(self.metrics_path) if r.epoch < epochs_done]
        atomic_write_text(self.metrics_path, "".join(map(to_line, kept)))

    def mark_done(self) -> None:
        """Write DONE, last."""
        atomic_write_text(self.path / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
