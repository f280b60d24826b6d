"""BatchNorm folded into the convolution before it, for eval-mode passes (attacks).

In eval mode a BatchNorm layer is a per-channel affine map, ``y = (x − μ) / √(σ² + ε) · γ + β``; when its
input is a convolution's output, the map can be folded into that convolution's weights and bias, and the
BatchNorm layer skipped (its activation, for timm's ``BatchNormAct2d``, kept). The folded copy computes the
same function up to float rounding, with one pass over each activation map fewer, forward and backward.

A convolution and a BatchNorm are paired when the BatchNorm is registered right after the convolution among
the children of one module and takes exactly the convolution's channels (timm's convolutional blocks:
``conv_pw``/``bn1``, ``conv_dw``/``bn2``, …). That pairing is a convention, not a proof of the data flow, so
:func:`fold_batchnorm` checks each model layout once against the unfolded model and refuses one whose
outputs differ. A convolution with LoRA adapters (robustft/models/lora.py) folds as the convolution it computes:
the copy holds the adapters merged into its weight.
"""

from __future__ import annotations

import copy
import logging
import weakref

import torch
from torch import nn

from robustft.errors import NotFoldableError
from robustft.models.lora import is_lora, merge_lora
from robustft.models.modes import modes_kept

log = logging.getLogger(__name__)

FOLD_TOLERANCE = 1e-3
"""Largest |logit difference| (relative to the largest |logit|) between a model and its folded copy on the
layout check; float32 rounding stays below 1e-5 on the embedded backbone."""
_checked: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()
"""Models whose layout passed the check, with the number of pairs folded."""


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(convolution's name, BatchNorm's name), in ``model.named_modules()`` terms, for each BatchNorm2d with
    running statistics registered right after a Conv2d among the children of one module and normalising that
    convolution's output channels."""
    pairs = []
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            conv = _conv_of(conv)
            if conv is not None and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels \
                    and bn.track_running_stats and bn.running_mean is not None:
                pairs.append((prefix + a, prefix + b))
    return pairs


def _conv_of(module: nn.Module) -> nn.Conv2d | None:
    """The convolution ``module`` is, or the one a LoRA wrapper adapts; else None."""
    inner = module.base if is_lora(module) else module
    return inner if isinstance(inner, nn.Conv2d) else None


def _weight_of(layer: nn.Module) -> torch.Tensor:
    """The weight ``layer`` computes with: its own, or a LoRA wrapper's base weight with the update added."""
    if is_lora(layer):
        base = layer.base.weight  # type: ignore[union-attr]
        return base + layer.delta_weight().view(base.shape)  # type: ignore[operator]
    return layer.weight  # type: ignore[return-value]


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What a BatchNorm layer does after normalising: timm's BatchNormAct2d drops and activates, a plain one nothing."""
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def folded_weights(conv: nn.Module, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one convolution computing ``conv`` (a Conv2d, or one with LoRA adapters) followed by
    ``bn`` in eval mode."""
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None, "conv_bn_pairs pairs only BatchNorm layers with running statistics"
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale + (bn.bias if bn.bias is not None else 0.0)
    plain = _conv_of(conv)
    assert plain is not None, "conv_bn_pairs pairs only convolutions"
    weight = _weight_of(conv)
    bias = plain.bias if plain.bias is not None else torch.zeros_like(mean)
    return weight * scale.view(-1, 1, 1, 1).to(weight), bias * scale + shift


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv`` compute conv followed by ``bn`` in eval mode."""
    weight, bias = folded_weights(conv, bn)
    conv.weight.copy_(weight)
    conv.bias = nn.Parameter(bias, requires_grad=False)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded into it; ``model``
    itself is left as it is. The copy's parameters do not require gradients (it is for attacks: input
    gradients only), and a copy with 2-D convolutions is laid out channels-last (BENCHMARKS.md: 2.2–2.4× faster
    on CPUs; the same function). A model without such pairs is returned as a plain copy. The first time a model is
    folded, the copy is checked against it on ``example`` (a batch the model takes; two rows are used).

    Raises:
        NotFoldableError: the folded copy's outputs differ from the model's (a BatchNorm paired with a
            convolution whose output it does not normalise); attack this model unfolded.
    """
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    merge_lora(folded)  # adapters merged: plain layers at the same names
    if any(isinstance(m, nn.Conv2d) for m in folded.modules()):  # 2.2-2.4x faster convolutions on CPUs
        folded.to(memory_format=torch.channels_last)
    modules = dict(folded.named_modules())
    pairs = conv_bn_pairs(folded)
    for conv_name, bn_name in pairs:
        bn = modules[bn_name]
        _fold_into(modules[conv_name], bn)
        parent, _, child = bn_name.rpartition(".")
        modules[parent]._modules[child] = _after_norm(bn)
    if pairs and model not in _checked:
        _check_layout(model, folded, len(pairs), example[:2])
    return folded


def _check_layout(model: nn.Module, folded: nn.Module, pairs: int, x: torch.Tensor) -> None:
    """Compare the folded copy with ``model`` on ``x`` (once per model); remember a match."""
    with modes_kept(model), torch.no_grad():
        model.eval()
        want, got = model(x), folded(x)
    err = float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))
    if not err <= FOLD_TOLERANCE:
        raise NotFoldableError(f"folding {pairs} BatchNorm layers into their convolutions changed the model's "
                               f"outputs (relative difference {err:.2e}): a BatchNorm registered after a convolution "
                               "does not normalise that convolution's output; run without train.fold_bn")
    _checked[model] = pairs
    log.debug("fold_batchnorm: %d BatchNorm layers folded (relative difference %.1e)", pairs, err)


class FoldedCopy:
    """A folded copy of ``model`` (:func:`fold_batchnorm`, checked on ``example``) kept in step with it: :meth:`__call__` copies the
    model's current weights into the copy (the folded ones recomputed) and returns it. A training attack
    takes it every step for about the cost of copying the weights once, instead of a deep copy.

    Raises:
        NotFoldableError: as :func:`fold_batchnorm`.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.folded = fold_batchnorm(model, example)
        src, dst = dict(model.named_modules()), dict(self.folded.named_modules())
        pairs = conv_bn_pairs(model)
        self.pairs = [(dst[c], src[c], src[b]) for c, b in pairs]
        folded = {f"{c}.{k}" for c, _ in pairs for k in ("weight", "bias")}
        paired = {c for c, _ in pairs}
        # layers with adapters not followed by a BatchNorm: the copy holds them merged, recomputed every call
        self.merged = [(dst[n], m) for n, m in model.named_modules() if is_lora(m) and n not in paired]
        merged = {f"{n}.{k}" for n, m in model.named_modules() if is_lora(m) for k in ("weight", "bias")}
        src_state, dst_state = model.state_dict(keep_vars=True), self.folded.state_dict(keep_vars=True)
        self.plain = [(v, src_state[k]) for k, v in dst_state.items() if k not in folded and k not in merged]

    @torch.no_grad()
    def __call__(self) -> nn.Module:
        for dst, src in self.plain:
            dst.copy_(src)
        for layer, wrapper in self.merged:
            layer.weight.copy_(_weight_of(wrapper))
            if layer.bias is not None:
                layer.bias.copy_(wrapper.base.bias)
        for dst, conv, bn in self.pairs:
            weight, bias = folded_weights(conv, bn)
            dst.weight.copy_(weight)
            dst.bias.copy_(bias)
        return self.folded

