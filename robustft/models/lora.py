"""Low-rank adapters (LoRA) on a backbone's linear and pointwise (1×1) convolution layers.

A LoRA wrapper keeps its layer (``base``, with ``base.weight`` and ``base.bias``) and adds a rank-``r`` update
of the weight matrix, ``W + scale · B A`` with ``scale = alpha / r``, computed without forming it::

    y = base(x) + scale · B (A x)

``A`` (``lora_a``, ``[rank, in]``) starts like peft's default, ``kaiming_uniform_(a=√5)``; ``B`` (``lora_b``,
``[out, rank]``) starts at zero, so a freshly wrapped model computes exactly what it computed before. A pointwise
convolution (kernel 1×1, groups 1) is a linear map applied at every pixel; its update is two 1×1 convolutions, the
first with the base's stride, padding and dilation.

:func:`add_lora` wraps the layers in place, :func:`merge_lora` folds the updates back into plain layers whose
state dict is the never-wrapped model's. Neither freezes anything: the trainable adapter parameters are the ones
named ``…lora_a`` and ``…lora_b`` (:func:`lora_parameter_names`), and freezing the rest is the caller's choice.

Layers the wrappers cannot stand in for are left alone: the output projection of ``nn.MultiheadAttention``
(whose forward reads its weight directly), convolutions with a kernel larger than 1×1 or groups > 1 (depthwise),
and 1×1 convolutions that pad other than with zeros.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustft.errors import ConfigError

log = logging.getLogger(__name__)


class _LoRA(nn.Module):
    """What both wrappers share: the base layer, the two factors and the scale."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        weight = base.weight
        assert isinstance(weight, torch.Tensor)
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=weight.device, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.train(base.training)

    def delta_weight(self) -> torch.Tensor:
        """``scale · B A``, ``[out, in]``, computed in float32 and returned in the base weight's dtype."""
        delta = self.scale * (self.lora_b.float() @ self.lora_a.float())
        return delta.to(self.lora_b.dtype)

    def merged(self) -> nn.Module:
        """The base layer with the update added to its weight (in place); the wrapper is spent afterwards."""
        weight = self.base.weight
        assert isinstance(weight, torch.Tensor)
        with torch.no_grad():
            weight.add_(self.delta_weight().view(weight.shape))
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRALinear(_LoRA):
    """An ``nn.Linear`` plus a rank-``rank`` update of its weight, scaled by ``alpha / rank``.

    Args:
        base: the layer adapted; kept as ``self.base``.
        rank: inner dimension of the update, at least 1.
        alpha: the update is scaled by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base, base.in_features, base.out_features, rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


class LoRAConv2d(_LoRA):
    """A pointwise ``nn.Conv2d`` (kernel 1×1, groups 1) plus a rank-``rank`` update of its weight, as two 1×1
    convolutions: ``A`` with the base's stride, padding and dilation, then ``B``.

    Args:
        base: the layer adapted (see :func:`is_pointwise`); kept as ``self.base``.
        rank: inner dimension of the update, at least 1.
        alpha: the update is scaled by ``alpha / rank``.

    Raises:
        ConfigError: ``base`` is not pointwise.
    """

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        if not is_pointwise(base):
            raise ConfigError(f"LoRAConv2d: wants a 1×1 convolution with groups 1 padding with zeros, got {base}")
        super().__init__(base, base.in_channels, base.out_channels, rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        assert isinstance(base, nn.Conv2d)
        a, b = self.lora_a[:, :, None, None], self.lora_b[:, :, None, None]
        hidden = F.conv2d(x, a, stride=base.stride, padding=base.padding, dilation=base.dilation)
        return base(x) + self.scale * F.conv2d(hidden, b)


def is_pointwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a linear map per pixel that :class:`LoRAConv2d` can adapt: kernel 1×1, groups 1,
    and no padding other than zeros."""
    pads = not isinstance(conv.padding, str) and any(p != 0 for p in conv.padding)
    return tuple(conv.kernel_size) == (1, 1) and conv.groups == 1 and (conv.padding_mode == "zeros" or not pads)


def is_lora(module: nn.Module) -> bool:
    """Whether ``module`` is a LoRA wrapper (:class:`LoRALinear` or :class:`LoRAConv2d`)."""
    return isinstance(module, _LoRA)


def lora_parameter_names(module: nn.Module) -> list[str]:
    """Names, in ``module.named_parameters()`` terms, of the adapter factors (``…lora_a``, ``…lora_b``)."""
    return [name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b")]


@dataclass(frozen=True)
class LoRATarget:
    """A kind of layer :func:`add_lora` can wrap: which modules it is and the wrapper that adapts them."""

    matches: Callable[[nn.Module], bool]
    wrap: Callable[[nn.Module, int, float], _LoRA]
    summary: str


def _wrap_linear(layer: nn.Module, rank: int, alpha: float) -> _LoRA:
    assert isinstance(layer, nn.Linear)
    return LoRALinear(layer, rank, alpha)


def _wrap_pointwise(layer: nn.Module, rank: int, alpha: float) -> _LoRA:
    assert isinstance(layer, nn.Conv2d)
    return LoRAConv2d(layer, rank, alpha)


TARGETS: dict[str, LoRATarget] = {
    "linear": LoRATarget(lambda m: isinstance(m, nn.Linear), _wrap_linear, "every nn.Linear"),
    "pointwise": LoRATarget(lambda m: isinstance(m, nn.Conv2d) and is_pointwise(m), _wrap_pointwise,
                            "every nn.Conv2d with kernel 1×1 and groups 1"),
}
"""``add_lora`` targets by name."""


def _skipped(name: str, skip: Sequence[str]) -> bool:
    """Whether module ``name`` is ``p`` or inside ``p`` for some prefix ``p`` of ``skip``."""
    return any(name == p or name.startswith(p if p.endswith(".") else p + ".") for p in skip)


def _candidates(module: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """(qualified name, parent, attribute name, child), in model order, of every module inside ``module`` that a
    LoRA wrapper may replace: not a wrapper or its inside, not a part of ``nn.MultiheadAttention``."""
    out: list[tuple[str, nn.Module, str, nn.Module]] = []
    closed: list[str] = []
    for name, child in module.named_modules():
        if not name or _skipped(name, closed):
            continue
        if is_lora(child) or isinstance(child, nn.MultiheadAttention):
            closed.append(name)
            continue
        parent_name, _, attribute = name.rpartition(".")
        out.append((name, module.get_submodule(parent_name), attribute, child))
    return out


def _as_tuple(names: str | Sequence[str]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _check_arguments(rank: int, alpha: float | None, targets: tuple[str, ...]) -> None:
    problems = []
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        problems.append(f"LoRA rank: want an integer ≥ 1, got {rank!r}")
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        problems.append(f"LoRA alpha: want a positive number (the update is scaled by alpha / rank), got {alpha!r}")
    problems += [f"LoRA target {t!r}: not one of {', '.join(TARGETS)}" for t in targets if t not in TARGETS]
    if not targets:
        problems.append(f"LoRA targets: empty; name at least one of {', '.join(TARGETS)}")
    if problems:
        raise ConfigError(problems)


def _holdings(module: nn.Module) -> str:
    """What ``module`` is made of, in words: the most frequent kinds of leaf modules."""
    inner = {id(m.base) for m in module.modules() if isinstance(m, _LoRA)}
    kinds = Counter(type(m).__name__ for m in module.modules()
                    if is_lora(m) or (id(m) not in inner and not list(m.children())))
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    shapes = Counter(f"{m.kernel_size[0]}×{m.kernel_size[1]}{' depthwise' if m.groups > 1 else ''}" for m in convs)
    held = ", ".join(f"{n} {k}" for k, n in kinds.most_common(6)) or "no submodules"
    return held + (f" (Conv2d kernels: {', '.join(f'{n} {s}' for s, n in shapes.items())})" if convs else "")


def add_lora(module: nn.Module, rank: int = 8, alpha: float | None = None,
             targets: str | Sequence[str] = ("linear", "pointwise"), skip: str | Sequence[str] = ()) -> list[str]:
    """Replace, in place, every layer of ``targets`` inside ``module`` by its LoRA wrapper.

    Nothing is frozen; the base layers keep their parameters (as ``….base.weight``), and a freshly wrapped
    module computes exactly what it computed before (the ``B`` factors start at zero).

    Args:
        module: the model or backbone to adapt; ``module`` itself is never replaced, only modules inside it.
        rank: inner dimension of every update, at least 1.
        alpha: updates are scaled by ``alpha / rank``; None means ``alpha = rank`` (scale 1).
        targets: names in :data:`TARGETS`: ``"linear"`` (every ``nn.Linear``), ``"pointwise"`` (every 1×1
            ``nn.Conv2d`` with groups 1).
        skip: prefixes of qualified module names (``module.named_modules()`` terms) to leave alone; a prefix
            matches the module of that name and everything inside it (``"head"`` skips ``head`` and ``head.fc``,
            not ``header``).

    Returns:
        The qualified names of the wrapped layers.

    Raises:
        ConfigError: rank < 1, alpha ≤ 0, an unknown or no target, or no layer of ``targets`` outside ``skip``
            (the message says what ``module`` holds). It is a ValueError.
    """
    targets, skip = _as_tuple(targets), _as_tuple(skip)
    _check_arguments(rank, alpha, targets)
    alpha = float(rank if alpha is None else alpha)
    chosen = [TARGETS[t] for t in targets]
    candidates = _candidates(module)
    for prefix in skip:
        if not any(_skipped(name, (prefix,)) for name, *_ in candidates):
            log.warning("LoRA skip prefix %r names no module; nothing is skipped on its account", prefix)
    wrapped = []
    for name, parent, attribute, child in candidates:
        target = next((t for t in chosen if t.matches(child)), None)
        if target is not None and not _skipped(name, skip):
            setattr(parent, attribute, target.wrap(child, rank, alpha))
            wrapped.append(name)
    if not wrapped:
        wanted = " or ".join(TARGETS[t].summary for t in targets)
        raise ConfigError(f"LoRA: no layer to adapt in {type(module).__name__}: want {wanted}"
                          f"{' outside ' + ', '.join(skip) if skip else ''}; it holds {_holdings(module)}")
    log.info("LoRA rank %d, alpha %g on %d layers of %s", rank, alpha, len(wrapped), type(module).__name__)
    return wrapped


def merge_lora(module: nn.Module) -> int:
    """Replace, in place, every LoRA wrapper inside ``module`` by its base layer with the update added to the
    weight (``W + scale · B A``): the same function up to float rounding, and the state dict keys of the
    never-wrapped model, so a plain build loads it.

    Returns:
        How many wrappers were merged.
    """
    wrappers = [(parent, attribute, child) for parent in module.modules()
                for attribute, child in parent.named_children() if is_lora(child)]
    for parent, attribute, child in wrappers:
        assert isinstance(child, _LoRA)
        setattr(parent, attribute, child.merged())
    if wrappers:
        log.debug("merged %d LoRA updates into their layers", len(wrappers))
    return len(wrappers)
