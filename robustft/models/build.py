"""``build_model``: input normalisation ∘ pretrained backbone ∘ new linear head, on pixels in [0, 1]."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from robustft.config import ModelConfig
from robustft.models.embedded import EMBEDDED, build_embedded
from robustft.models.hub import download_failed
from robustft.models.openclip import build_open_clip, is_open_clip

log = logging.getLogger(__name__)


class InputNormalization(nn.Module):
    """(x − mean) / std per channel, so attacks and ε live in [0, 1] pixel space."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


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
        ValueError: unknown backbone name.
        RuntimeError: pretrained weights could not be fetched (offline) — the message says how to use a
            local checkpoint instead.
        FileNotFoundError: ``cfg.checkpoint`` does not exist.
    """
    if cfg.name in EMBEDDED:
        backbone, spec = build_embedded(cfg.name, cfg.pretrained and cfg.checkpoint is None, cfg.drop_rate)
        mean, std = spec.mean, spec.std
    elif is_open_clip(cfg.name):
        backbone = build_open_clip(cfg.name, cfg.pretrained and cfg.checkpoint is None, cfg.drop_rate)
        mean, std = backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    else:
        backbone = _build_timm(cfg)
        mean, std = backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    if cfg.checkpoint is not None:
        load_backbone_checkpoint(backbone, cfg.checkpoint)
    if cfg.bn_momentum is not None:
        set_bn_momentum(backbone, cfg.bn_momentum)
    if cfg.activation is not None:
        replace_activations(backbone, cfg.activation)
    return RobustClassifier(InputNormalization(tuple(mean), tuple(std)), backbone, backbone.num_features, num_classes)


def _build_timm(cfg: ModelConfig) -> nn.Module:
    if not timm.is_model(cfg.name):
        close = [e for e in EMBEDDED if cfg.name in e] + difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"model.name: unknown backbone {cfg.name!r}{hint}")
    hub = cfg.pretrained and cfg.checkpoint is None
    try:
        return timm.create_model(cfg.name, pretrained=hub, num_classes=0, drop_rate=cfg.drop_rate)
    except Exception as err:  # hub errors come in many types (HTTP, OS, HF offline mode)
        if not hub:
            raise
        raise download_failed(repr(cfg.name), err, "a .safetensors or torch state dict of the timm backbone") from err


SMOOTH_ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus}
"""``model.activation`` names and the modules that replace ReLU and ReLU6."""


def replace_activations(module: nn.Module, name: str) -> int:
    """Replace every ``nn.ReLU`` and ``nn.ReLU6`` inside ``module`` with a fresh ``SMOOTH_ACTIVATIONS[name]``;
    returns how many were replaced.

    Raises:
        ValueError: unknown name, or the module has no ReLU or ReLU6 module to replace (a functional
            activation cannot be swapped this way).
    """
    if name not in SMOOTH_ACTIVATIONS:
        raise ValueError(f"model.activation: {name!r} is not one of {', '.join(SMOOTH_ACTIVATIONS)}")
    count = 0
    for parent in list(module.modules()):
        for child_name, child in parent.named_children():
            if type(child) in (nn.ReLU, nn.ReLU6):
                setattr(parent, child_name, SMOOTH_ACTIVATIONS[name]())
                count += 1
    if count == 0:
        raise ValueError(f"model.activation: the backbone has no nn.ReLU or nn.ReLU6 module to replace with {name}")
    return count


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer (PyTorch convention)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch file loaded with ``weights_only=True``.

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a DataParallel ``module.`` prefix are removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.checkpoint: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"model.checkpoint: {path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_backbone_checkpoint(backbone: nn.Module, path: str | Path) -> None:
    """Load local backbone weights; keys the backbone lacks (an old classifier) are ignored and logged.

    Raises:
        ValueError: backbone tensors are missing from the file or have other shapes.
    """
    state = read_state_dict(path)
    own = backbone.state_dict()
    if not any(k in state for k in own) and any(k.startswith("visual.") for k in own):
        state = {f"visual.{k}": v for k, v in state.items()}  # an image-tower state dict of an OpenCLIP backbone
    extra = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        raise ValueError(
            f"model.checkpoint: {path} does not fit the backbone: {len(missing)} missing tensors "
            f"(e.g. {missing[:3]}), {len(wrong)} with other shapes (e.g. {wrong[:3]}); "
            "is it a state dict of the same timm architecture?"
        )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    if extra:
        log.info("ignored %d tensors of %s not in the backbone (e.g. %s)", len(extra), path, extra[:3])
