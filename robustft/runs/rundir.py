"""A run directory describes itself::

    RUN/config.yaml          resolved config (``robustft train RUN/config.yaml`` reproduces the run)
    RUN/env.json             versions, device, start time
    RUN/metrics.jsonl        one JSON row per logged step and per epoch
    RUN/checkpoints/last.pt  model (and its weight average), optimiser, schedule position, RNG state (atomic)
    RUN/checkpoints/best.pt  the weights of the best robust epoch, under train.select: best_robust
    RUN/summary.json         training summary (wall time, delay time, final validation accuracy)
    RUN/eval/NAME/           one evaluation (NAME: its attacks): robustness.json and correct.npz, and
                             partial.npz while it runs (a killed evaluation resumes from it)
    RUN/DONE                 written last, when training and evaluation have finished
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from robustft.config import Config, config_to_dict, load_config, save_config


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync, then rename it over ``path``, so that
    readers see the old or the new content, never a partial one (a killed run loses nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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

    def create(self, cfg: Config) -> None:
        """Make the folder and write config.yaml and env.json (a fresh start: old metrics are dropped)."""
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.metrics_path.unlink(missing_ok=True)
        save_config(cfg, self.config_path)
        write_json(self.path / "env.json", environment())

    def config(self) -> Config:
        """The run's resolved config."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.yaml)")
        return load_config(self.config_path)

    def differences(self, cfg: Config) -> list[str]:
        """Keys whose values differ between ``cfg`` and the run's saved config."""
        saved, new = config_to_dict(self.config()), config_to_dict(cfg)
        return [f"{s}.{k}: {saved[s][k]!r} -> {new[s][k]!r}" for s in new for k in new[s] if saved[s][k] != new[s][k]]

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to metrics.jsonl."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Rows of metrics.jsonl, optionally only those of one kind (``step`` or ``epoch``)."""
        if not self.metrics_path.exists():
            return []
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r.get("kind") == kind]

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop rows written after the last checkpoint (of epochs >= ``epochs_done``), for a resume."""
        kept = [r for r in self.rows() if r["epoch"] < epochs_done]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def mark_done(self) -> None:
        """Write DONE, last."""
        atomic_write_text(self.path / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
