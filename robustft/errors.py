"""Errors a user can fix: each message names the problem and the fix.

Every error whose message tells the user what to do derives from :class:`UserError`, on the Python API as on the
command line. The CLI prints a :class:`UserError` as ``error: MESSAGE`` (exit code 2) and shows its traceback
only under ``--debug``; any other exception is a bug of robustft (or of code it runs) and keeps its traceback.
Each type also derives from the built-in exception it replaces, so callers that catch ``ValueError``,
``OSError``, ``FileNotFoundError`` or ``RuntimeError`` keep working.

The family, by what the user should look at:

- a setting (a config key, a CLI flag or an API argument): :class:`ConfigError`;
- files and folders: :class:`MissingFileError`, :class:`RunExistsError`, :class:`UnsafeFileError`,
  :class:`ForeignFileError`, :class:`MetricsFormatError`, :class:`CheckpointMismatchError`,
  :class:`BadImageError`, :class:`DiskFullError`;
- the data or the model given: :class:`DataError`, :class:`NotFoldableError`;
- the environment: :class:`MissingDependencyError`, :class:`WeightsDownloadError`, :class:`ClusterError`;
- what training ran into: :class:`NonFiniteLossError`, :class:`CatastrophicOverfittingError`,
  :class:`TuneError`.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


class UserError(Exception):
    """A failure whose cause is outside the code (a setting, a file, the data, the environment); the message says
    what to do."""


class ConfigError(UserError, ValueError):
    """One or more invalid settings (config keys, CLI flags or API arguments); the message lists every one of
    them (one problem: one line), each naming the setting and the fix."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            super().__init__(f"invalid configuration: {self.problems[0]}")
        else:
            super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that was named (a run, a checkpoint, a config, a dataset's files) is not there."""


class RunExistsError(UserError, FileExistsError):
    """A run directory is already there and no resume was asked for."""


class DataError(UserError, ValueError):
    """The data given cannot be used as it is (a dataset's layout, labels, image shapes, an empty split)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that this feature needs is not installed; the message gives the pip command."""


class ClusterError(UserError, ConnectionError):
    """A Ray cluster cannot be reached or joined; the message names the address and the likely cause."""


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss or its gradient became NaN or infinite, or the weights or buffers diverged (NaN, ∞ or
    beyond the trainer's ``MAX_ABS_WEIGHT``); the last good checkpoint is kept."""


class CatastrophicOverfittingError(UserError, RuntimeError):
    """``train.on_overfit: stop`` ended a run before it had any checkpoint to fall back on."""


class TuneError(UserError, RuntimeError):
    """No trial of a hyperparameter search finished."""


class MetricsFormatError(UserError, ValueError):
    """A line of metrics.jsonl does not follow the schema (the message names the key, the file and the line)."""


class NotFoldableError(UserError, ValueError):
    """The model's convolution/BatchNorm pairs do not fold into an equivalent model."""


class UnsafeFileError(UserError, ValueError):
    """A torch file holds pickled objects other than tensors and plain data, so the safe loader refuses it."""


class DiskFullError(UserError, OSError):
    """The disk filled up while a checkpoint was written; the previous checkpoint is intact."""


class WeightsDownloadError(UserError, RuntimeError):
    """Pretrained weights could not be fetched from the hub (offline machine, no cached copy)."""


class BadImageError(UserError, OSError):
    """An image file of a dataset cannot be decoded (truncated, corrupt or not an image)."""


class CheckpointMismatchError(UserError, ValueError):
    """``model.checkpoint`` holds the weights of another architecture than ``model.name``."""


class ForeignFileError(UserError, ValueError):
    """A file robustft reads back (e.g. an evaluation's ``partial.npz``) was not written by robustft."""


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


@contextmanager
def refusing_pickles(path: str | Path, key: str = "") -> Iterator[None]:
    """Turn the refusal of ``torch.load(..., weights_only=True)`` inside the block into an
    :class:`UnsafeFileError` that names ``path`` (and the config ``key`` it came from, if any).

    torch's own message advises ``weights_only=False``, which would run whatever code the file carries;
    it is not passed on.
    """
    try:
        yield
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        what = f" (a pickled {found.group(1)})" if found else ""
        prefix = f"{key}: " if key else ""
        raise UnsafeFileError(
            f"{prefix}{path} contains objects that are not plain tensors or data{what}, so it is refused for "
            "safety; re-save it as a state dict (torch.save(model.state_dict(), PATH)) or as .safetensors"
        ) from None


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""No space left on device, disk quota exceeded."""


def disk_full_reason(err: BaseException) -> str | None:
    """Why a write failed, when ``err`` (or an exception it was raised from or during) says the disk or the
    quota is full; None for any other error.

    ``torch.save`` reports a failed write as a RuntimeError of its ``inline_container.cc`` (``file write
    failed`` or ``unexpected pos``), with the OSError, when there is one, as its context.
    """
    seen: set[int] = set()
    short_write = None
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return os.strerror(e.errno)
        for reason in ("No space left on device", "Disk quota exceeded"):
            if reason in text:
                return reason
        if isinstance(e, RuntimeError) and "inline_container.cc" in text and (
                "file write failed" in text or "unexpected pos" in text):
            short_write = "torch's writer stopped short, as it does on a full disk"
        e = e.__cause__ or e.__context__
    return short_write
