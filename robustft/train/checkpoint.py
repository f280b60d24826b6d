"""Checkpoints: everything needed to continue a run exactly, written atomically."""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, cast

import numpy as np
import torch
from torch import nn

from robustft.errors import DiskFullError, MissingFileError, disk_full_reason, refusing_pickles
from robustft.runs import atomic_write


def rng_state() -> dict[str, Any]:
    """The state of every random generator training draws from."""
    # the legacy tuple (numpy's stub types the no-argument call as legacy=False's dict)
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def kept_rng_state() -> Iterator[None]:
    """Run the enclosed code on the process's generators (Python's, numpy's, torch's CPU and CUDA ones), then
    put their states back as they were: what the code seeds and draws leaves the caller's random streams
    untouched, and the code itself stays reproducible from the seeds it sets."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``.

    Raises:
        DiskFullError: the disk (or quota) filled up during the write; what was at ``path`` is intact.
    """
    existed = path.exists()
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as err:
        reason = disk_full_reason(err)
        if reason is None:
            raise
        then = (f"the previous {path.name} is intact: free some space, then continue the run with --resume"
                if existed else "nothing was saved before it: free some space, then start the run again with "
                "--resume (it starts over)")
        raise DiskFullError(f"disk full while writing the checkpoint {path} ({reason}); {then}") from err


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, epochs_done: int,
                    step: int, extra: dict[str, Any]) -> None:
    """Save model, optimiser (unless None), progress (epochs done, global step: the LR and ε schedule
    positions) and RNG; ``extra`` may hold ``eval_model``, the weights an evaluation takes when they are not
    the live ones (a weight average)."""
    state = {"model": model.state_dict(), "epochs_done": epochs_done, "step": step, "rng": rng_state(), **extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safely: ``weights_only=True``).

    Raises:
        MissingFileError: there is no file at ``path``.
        UnsafeFileError: the file holds pickled objects other than tensors and plain data.
    """
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {path}; nothing to resume (start without --resume)")
    with refusing_pickles(path):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_model_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights a checkpoint is evaluated with (``eval_model``, e.g. a weight average, else the live
    ``model``); returns the checkpoint's progress."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt.get("eval_model", ckpt["model"]))
    return {"epochs_done": ckpt["epochs_done"], "step": ckpt["step"]}
