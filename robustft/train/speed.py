"""Speed settings of training: mixed precision, channels-last memory layout and ``torch.compile``.

None of them changes what is computed beyond rounding: bf16 autocast runs the training forward passes
in bfloat16 (the attack's input gradients stay in fp32 unless ``train.attack_fp32`` is false),
channels-last only changes memory layout, and compiled forward passes are tested to agree with eager
ones. Evaluation always runs eagerly in fp32.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, cast

import torch
from torch import nn

from robustft.config import TrainConfig
from robustft.errors import ConfigError
from robustft.models.modes import modes_kept

log = logging.getLogger(__name__)

COMPILE_BACKEND = "inductor"
"""The ``torch.compile`` backend (inductor needs a C++ compiler on CPUs)."""


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (None: fp32, no autocast).

    ``auto`` picks bf16 only on CUDA devices that support it: on CPUs bf16 autocast is usually slower
    (see BENCHMARKS.md).
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    raise ConfigError(f"train.precision: {name!r} is not fp32, bf16 or auto")


@contextlib.contextmanager
def kept_layout_and_modes(model: nn.Module) -> Iterator[None]:
    """Give ``model`` back as it came in: each weight and buffer in its memory layout (training lays 4-D ones out
    channels-last, :meth:`Accelerator.prepare`) and each module in its train or eval mode. The values are the
    enclosed code's; only their layout is restored."""
    strides = {key: t.stride() for key, t in _tensors(model) if t.dim() == 4}
    with modes_kept(model):
        try:
            yield
        finally:
            for key, t in _tensors(model):
                if key in strides and t.stride() != strides[key]:
                    t.data = torch.empty_strided(t.shape, strides[key], dtype=t.dtype, device=t.device).copy_(t.data)


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``model`` by name."""
    yield from (("p." + k, t) for k, t in model.named_parameters())
    yield from (("b." + k, t) for k, t in model.named_buffers())


class Accelerator:
    """Applies a run's speed settings to its model, its batches and its forward passes."""

    def __init__(self, cfg: TrainConfig, device: torch.device, compile_backend: str | None = None):
        self.device = device
        self.dtype = resolve_precision(cfg.precision, device)
        self.channels_last: bool | str = cfg.channels_last  # "auto" is resolved by prepare()
        self.compile = cfg.compile
        self.compile_backend = compile_backend or COMPILE_BACKEND

    def prepare(self, model: nn.Module) -> nn.Module:
        """Lay ``model`` out channels-last (in place) and return the module to run forward passes with:
        compiled, or ``model`` itself. Checkpoints are taken from ``model``, whose state keys are unchanged."""
        if self.channels_last == "auto":
            self.channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if not self.compile:
            return model
        log.info("compiling the model's forward pass (%s); the first steps are slow", self.compile_backend)
        return cast(nn.Module, torch.compile(model, backend=self.compile_backend))  # an OptimizedModule

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device, channels-last if asked."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last is True else x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for the enclosed forward passes when the run uses it."""
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            yield

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``."""
        return "bf16" if self.dtype is not None else "fp32"

    def describe(self) -> dict[str, object]:
        """The resolved settings, for the run's summary."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile}
