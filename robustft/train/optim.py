"""AdamW with separate backbone and head groups; no weight decay on norms and biases."""

from __future__ import annotations

import torch
from torch import nn

from robustft.config import OptimConfig


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Four groups: backbone/head × decayed/not decayed (1-D tensors: norms and biases are not decayed).

    Each group carries ``base_lr``, the peak the LR schedule multiplies.
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if name.startswith("head.") else "backbone"
        groups.setdefault((part, p.ndim > 1), []).append(p)
    settings = _settings(cfg)
    out = []
    for (part, decay), params in sorted(groups.items()):
        lr, wd = settings[part]
        out.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd if decay else 0.0,
                    "name": f"{part}{'' if decay else '_no_decay'}"})
    return out


def _settings(cfg: OptimConfig) -> dict[str, tuple[float, float]]:
    """(peak LR, weight decay) of the backbone and of the head."""
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    head_wd = cfg.head_weight_decay if cfg.head_weight_decay is not None else cfg.weight_decay
    return {"backbone": (cfg.lr, cfg.weight_decay), "head": (head_lr, head_wd)}


def apply_settings(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Set every group's peak LR and weight decay from ``cfg`` again: ``load_state_dict`` brings back the
    checkpoint's, and a resume may change them (robustft.runs.RESUMABLE_KEYS)."""
    settings = _settings(cfg)
    for group in optimizer.param_groups:
        lr, wd = settings[group["name"].removesuffix("_no_decay")]
        group.update(base_lr=lr, weight_decay=0.0 if group["name"].endswith("_no_decay") else wd)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2))


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Set every group's LR to ``base_lr × multiplier``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * multiplier
