"""OpenCLIP image towers as backbones (optional extra: ``pip install 'robustft[clip]'``).

``model.name: open_clip:ARCH.TAG`` builds the image tower of OpenCLIP's ``ARCH`` (e.g. ``convnext_base_w``)
and, when pretrained, loads the weights tagged ``TAG`` (e.g. ``laion2b_s13b_b82k``, the paper's
``CLIP-convnext_base_w-laion2B-s13B-b82K``) from the Hugging Face hub. Offline, point ``model.checkpoint``
at the downloaded ``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``): the whole CLIP
state dict is accepted, its ``visual.`` tensors are used. The tower returns the projected image embedding.
Inputs are normalised with the weights' mean and std (CLIP's, not ImageNet's).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from robustft.errors import ConfigError, MissingDependencyError
from robustft.models.hub import fetch

PREFIX = "open_clip:"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation, used by OpenCLIP's LAION weights."""


class OpenCLIPTower(nn.Module):
    """The image tower of an OpenCLIP model: pixels (normalised) → image embedding of ``num_features``."""

    def __init__(self, visual: nn.Module, num_features: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.visual = visual
        self.num_features = num_features
        self.pretrained_cfg = {"mean": tuple(mean), "std": tuple(std)}

    def forward(self, x: Any) -> Any:
        return self.visual(x)


def is_open_clip(name: str) -> bool:
    """Whether a model name asks for an OpenCLIP image tower."""
    return name.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, str | None]:
    """``open_clip:ARCH.TAG`` → (ARCH, TAG); the tag is optional."""
    arch, _, tag = name.removeprefix(PREFIX).partition(".")
    return arch, tag or None


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:
        raise MissingDependencyError("OpenCLIP backbones need the optional extra: pip install 'robustft[clip]' "
                                     "(the open_clip_torch package)") from err
    return open_clip


def build_open_clip(name: str, pretrained: bool, drop_rate: float = 0.0) -> OpenCLIPTower:
    """The image tower of ``open_clip:ARCH.TAG``, with the hub weights of TAG when ``pretrained``.

    Raises:
        MissingDependencyError: open_clip is not installed.
        ConfigError: unknown architecture, pretrained without a tag, or a dropout rate.
        WeightsDownloadError: the weights could not be downloaded (the message says how to use a local file).
    """
    open_clip = _import_open_clip()
    arch, tag = parse_name(name)
    if arch not in open_clip.list_models():
        raise ConfigError(f"model.name: {name!r}: OpenCLIP has no architecture {arch!r} "
                          f"(e.g. {', '.join(open_clip.list_models()[:4])}, …)")
    if pretrained and tag is None:
        raise ConfigError(f"model.name: {name!r} names no pretrained tag; write open_clip:{arch}.TAG with TAG one of "
                          f"{open_clip.list_pretrained_tags_by_model(arch)}, or set model.pretrained=false")
    if pretrained:
        repo_id = ((open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub") or "").strip("/") or None
        model = fetch(partial(open_clip.create_model, arch, pretrained=tag), repo_id, f"OpenCLIP {arch}/{tag}",
                      "the model's open_clip_model.safetensors")
    else:
        model = open_clip.create_model(arch, pretrained=None)
    if drop_rate > 0:
        raise ConfigError("model.drop_rate: OpenCLIP towers take no dropout before the head; set it to 0")
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    mean, std = cfg.get("mean") or CLIP_MEAN, cfg.get("std") or CLIP_STD
    embed_dim = open_clip.get_model_config(arch)["embed_dim"]
    return OpenCLIPTower(model.visual, embed_dim, mean, std)
