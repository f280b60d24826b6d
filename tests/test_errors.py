"""robustft.errors: which failures count as a full disk, and the refusal of pickled objects."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from robustft.errors import UnsafeFileError, UserError, disk_full_reason, refusing_pickles


def _raised_during(outer: Exception, inner: Exception) -> Exception:
    """``outer`` as raised while ``inner`` was being handled (its ``__context__``), as torch's writer does."""
    try:
        try:
            raise inner
        except Exception:
            raise outer  # noqa: B904 (implicitly chained on purpose: the test needs outer.__context__)
    except Exception as err:
        return err


@pytest.mark.parametrize("err, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), os.strerror(errno.EDQUOT)),
    (_raised_during(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
                    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:864] . PytorchStreamWriter failed writing file data/3: "
                  "file write failed"), "torch's writer stopped short, as it does on a full disk"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
     "torch's writer stopped short, as it does on a full disk"),
    (RuntimeError("write failed: No space left on device"), "No space left on device"),
    (OSError(errno.EACCES, os.strerror(errno.EACCES)), None),
    (RuntimeError("CUDA out of memory"), None),
    (_raised_during(RuntimeError("a bug"), KeyError("x")), None),
])
def test_disk_full_reason(err, reason):
    assert disk_full_reason(err) == reason


class _Custom:
    pass


def test_refusing_pickles_names_the_file_and_the_object_but_not_torchs_advice(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"w": torch.zeros(2), "obj": _Custom()}, path)
    with pytest.raises(UnsafeFileError) as info, refusing_pickles(path, "model.checkpoint"):
        torch.load(path, weights_only=True)
    msg = str(info.value)
    assert msg == (f"model.checkpoint: {path} contains objects that are not plain tensors or data (a pickled "
                   f"{__name__}._Custom), so it is refused for safety; re-save it as a state dict "
                   "(torch.save(model.state_dict(), PATH)) or as .safetensors")
    assert "weights_only" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, (UserError, ValueError))
