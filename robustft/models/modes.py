"""What the code that borrows a caller's model gives back as it was: each module's train or eval mode."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[None]:
    """Inside the block the model's modes may change (``model.eval()``); on exit, even on error, every module
    is back in the training or eval mode it had (a caller's frozen BatchNorm in eval mode stays so, where
    ``model.train(was_training)`` would switch it back to training)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
