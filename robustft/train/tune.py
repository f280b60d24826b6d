"""What fine-tuning trains (``finetune.mode``) and how the new head starts (``finetune.head``), one registry
entry each::

    TUNE_MODES.register("bitfit", _bitfit, summary="the head, every bias and the normalisation layers")
    HEAD_STARTS.register("linear_probe", lambda eps_target: 0.0, keys=("probe_epochs",), defaults={...})

A :class:`Tuning` is what the training loop asks while it runs: which parameters train (set once, by
:meth:`Tuning.apply`, before the optimiser is built: frozen weights get no optimiser state), and, in the probing
epochs of a head start, the ε to train at, which modules run as frozen feature extractors and which gradients are
dropped before the optimiser step (every parameter keeps ``requires_grad``, so one optimiser and one
DistributedDataParallel wrapper serve the whole run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from robustft.config import HEAD_STARTS, TUNE_MODES, Config, FinetuneConfig, ModelConfig
from robustft.errors import ConfigError
from robustft.models import RobustClassifier, build_model
from robustft.models.lora import TARGETS, add_lora, is_lora

log = logging.getLogger(__name__)

HEAD = "head"
"""The name of the classifier's new head in robustft's models (:class:`robustft.models.RobustClassifier`)."""
LORA_TARGETS = tuple(TARGETS)
PAPER = FinetuneConfig()
"""The paper's fine-tuning: the section's defaults (every weight, a random head)."""
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Tuning:
    """What a run trains and how its head starts.

    Attributes:
        mode: a ``TUNE_MODES`` name (``full``, ``linear``, ``bitfit``, ``lora``).
        head: a ``HEAD_STARTS`` name (``random``, ``linear_probe``, ``robust_linear_probe``).
        probe_epochs: the first epochs, in which only the head trains on the frozen backbone (0 with ``random``).
        options: the mode's own settings (lora: ``rank``, ``alpha``, ``targets``).
        head_module: the name of the model's head (its child module); every other child is the backbone.
    """

    mode: str = PAPER.mode
    head: str = PAPER.head
    probe_epochs: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    head_module: str = HEAD

    def __post_init__(self) -> None:
        for registry, name in ((TUNE_MODES, self.mode), (HEAD_STARTS, self.head)):
            if name not in registry:
                raise ConfigError(registry.unknown(name))
        if self.probes and self.probe_epochs < 1:
            raise ConfigError(f"probe_epochs: the {self.head} head start needs at least one epoch of probing")

    @classmethod
    def from_config(cls, f: FinetuneConfig) -> Tuning:
        """The ``finetune`` section's tuning, the kinds' defaults filled in."""
        options = {k: TUNE_MODES.default(f.mode, k, getattr(f, k)) for k in TUNE_MODES[f.mode].keys}
        probe = HEAD_STARTS.default(f.head, "probe_epochs", f.probe_epochs) or 0
        return cls(f.mode, f.head, int(probe), options)

    @property
    def is_default(self) -> bool:
        """Every weight trained from a random head: the paper's fine-tuning, nothing to do."""
        return self.mode == PAPER.mode and self.head == PAPER.head

    @property
    def probes(self) -> bool:
        """Whether the head start probes the head first (its registry entry takes ``probe_epochs``)."""
        return "probe_epochs" in HEAD_STARTS[self.head].keys

    def apply(self, model: nn.Module) -> None:
        """Adapt ``model`` in place for the mode (adapters added) and set which of its parameters train;
        before the optimiser is built and before the model moves to its device or is wrapped."""
        if self.head_module not in dict(model.named_children()) and not self.is_default:
            raise ConfigError(f"finetune: the model has no child module {self.head_module!r} (the head the {self.mode} "
                              f"mode and the {self.head} head start train; it has "
                              f"{', '.join(dict(model.named_children())) or 'none'}); pass head_module= the name of its "
                              "classifier layer")
        TUNE_MODES[self.mode].build(model, self)
        if not self.is_default:
            d = self.describe(model)
            log.info("finetune: %s mode, %s head (%d probing epochs); %d of %d parameters trained", self.mode,
                     self.head, self.probe_epochs, d["trained_parameters"], d["parameters"])

    def is_head(self, name: str) -> bool:
        """Whether the parameter or module ``name`` belongs to the head."""
        return name == self.head_module or name.startswith(self.head_module + ".")

    def probing(self, epoch: int) -> bool:
        """Whether ``epoch`` (from 0) is an epoch of the head's probing."""
        return epoch < self.probe_epochs

    def phase(self, epoch: int) -> str | None:
        """``probe`` in the probing epochs (written in their metrics rows), else None."""
        return "probe" if self.probing(epoch) else None

    def eps(self, epoch: int, eps_target: float, scheduled: float) -> float:
        """The ε of a step of ``epoch``: the head start's in its probing epochs, else the schedule's."""
        if not self.probing(epoch):
            return scheduled
        return float(HEAD_STARTS[self.head].build(eps_target))

    def begin_epoch(self, model: nn.Module, epoch: int) -> None:
        """After ``model.train()``: the backbone runs as a frozen feature extractor (eval mode: its normalisation
        statistics stay) in the probing epochs and, in the ``linear`` mode, always."""
        if TUNE_MODES[self.mode].extra.get("frozen_backbone") or self.probing(epoch):
            for name, child in model.named_children():
                if not self.is_head(name):
                    child.eval()

    def drop_frozen_grads(self, model: nn.Module, epoch: int) -> None:
        """In the probing epochs, drop the gradients of every parameter but the head's before the optimiser step
        (AdamW then leaves those parameters, their state and their weight decay alone)."""
        if self.probing(epoch):
            for name, p in model.named_parameters():
                if not self.is_head(name):
                    p.grad = None

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The mode, head start and the parameters trained (of all), for logs and the summary."""
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return {"mode": self.mode, "head": self.head, "probe_epochs": self.probe_epochs,
                "trained_parameters": trained, "parameters": total}


def build_tuned_model(model_cfg: ModelConfig, finetune: FinetuneConfig, num_classes: int) -> RobustClassifier:
    """The configured model (:func:`robustft.models.build_model`) with its ``finetune.mode`` applied: adapters
    added, the weights it does not train frozen."""
    model = build_model(model_cfg, num_classes)
    Tuning.from_config(finetune).apply(model)
    return model


def _train_only(model: nn.Module, tuning: Tuning, keep: Callable[[str, nn.Parameter], bool]) -> None:
    """Freeze every parameter of ``model`` but the head's and those ``keep(name, parameter)`` chooses."""
    for name, p in model.named_parameters():
        p.requires_grad_(tuning.is_head(name) or keep(name, p))


def _norm_parameters(model: nn.Module) -> set[str]:
    """The names of the parameters of normalisation layers."""
    return {f"{m_name}.{p_name}" if m_name else p_name for m_name, m in model.named_modules()
            if isinstance(m, NORM_LAYERS) for p_name, _ in m.named_parameters(recurse=False)}


def _full(model: nn.Module, tuning: Tuning) -> None:
    """Every weight trains (as the model has them)."""


def _linear(model: nn.Module, tuning: Tuning) -> None:
    _train_only(model, tuning, lambda name, p: False)


def _bitfit(model: nn.Module, tuning: Tuning) -> None:
    norms = _norm_parameters(model)
    _train_only(model, tuning, lambda name, p: name.endswith(".bias") or name in norms)


def _lora(model: nn.Module, tuning: Tuning) -> None:
    o = tuning.options
    if not any(is_lora(m) for m in model.modules()):  # a model given its adapters already keeps them
        add_lora(model, rank=int(o["rank"]), alpha=o.get("alpha"), targets=tuple(o["targets"]), skip=(tuning.head_module,))
    _train_only(model, tuning, lambda name, p: name.rsplit(".", 1)[-1] in ("lora_a", "lora_b"))


def _lora_problems(f: FinetuneConfig, config: Any) -> list[str]:
    out = []
    if f.rank is not None and f.rank < 1:
        out.append(f"finetune.rank: must be >= 1, got {f.rank}")
    if f.alpha is not None and f.alpha <= 0:
        out.append(f"finetune.alpha: must be positive or null (the rank), got {f.alpha}")
    unknown = [t for t in (f.targets or []) if t not in LORA_TARGETS]
    if unknown or f.targets == []:
        out.append(f"finetune.targets: {', '.join(map(repr, unknown)) or 'an empty list'}; choose among "
                   f"{', '.join(LORA_TARGETS)}")
    return out


def _probe_problems(f: FinetuneConfig, config: Config | None) -> list[str]:
    """Probing for at least one epoch, and (with a config) fewer than the run's."""
    epochs = HEAD_STARTS.default(f.head, "probe_epochs", f.probe_epochs)
    if config is None and epochs < 1:
        return [f"probe_epochs: at least 1 epoch of probing, got {epochs}"]
    if config is not None and (epochs < 1 or epochs >= config.train.epochs):
        return [f"finetune.probe_epochs: {epochs} probing epochs in a run of train.epochs={config.train.epochs}; "
                "probe for at least one epoch and leave at least one to fine-tune"]
    return []


TUNE_MODES.register("full", _full, summary="every weight (the paper's fine-tuning)")
TUNE_MODES.register("linear", _linear, extra={"frozen_backbone": True},
                    summary="the head alone, on the frozen backbone (linear probing)")
TUNE_MODES.register("bitfit", _bitfit, summary="the head, every bias and the normalisation layers (BitFit)")
TUNE_MODES.register("lora", _lora, keys=("rank", "alpha", "targets"), check=_lora_problems,
                    defaults={"rank": 8, "targets": list(LORA_TARGETS)},
                    summary="the head and low-rank adapters on the backbone's linear and 1x1 convolution layers")
HEAD_STARTS.register("random", lambda eps_target: None, summary="a random head, fine-tuned with the rest (the paper's)")
HEAD_STARTS.register("linear_probe", lambda eps_target: 0.0, keys=("probe_epochs",), defaults={"probe_epochs": 5},
                     check=_probe_problems, summary="LP-FT: the head first trained alone, clean, on the frozen backbone")
HEAD_STARTS.register("robust_linear_probe", lambda eps_target: eps_target, keys=("probe_epochs",),
                     defaults={"probe_epochs": 5}, check=_probe_problems,
                     summary="RoLI: the head first trained alone at ε_g (adversarial linear probing)")

