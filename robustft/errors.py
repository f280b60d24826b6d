"""Errors a user can fix: each message names the problem and the fix, on one line.

The CLI prints a :class:`UserError` as ``robustft: error: MESSAGE`` (exit code 2) and shows the traceback
only under ``--debug``. Each type also derives from the built-in exception it replaces, so callers that
catch ``OSError``, ``ValueError`` or ``RuntimeError`` keep working.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class UserError(Exception):
    """A failure whose cause is outside the code (a file, the disk, the network); the message says what to do."""


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
