"""Helpers shared by test modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from robustft.data import ImageArray


def fit_briefly(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 2) -> nn.Module:
    """Train ``model`` for a few Adam steps on random batches of (x, y); returned in eval mode with no grads."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def toy_cnn(classes: int = 3) -> nn.Sequential:
    """A tiny conv net with BatchNorm and dropout (both must be off in eval mode), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(8, classes))


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float 3×8×8 images in [0, 1]; the label (of 3) is the channel with the highest mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return x, x.mean((2, 3)).argmax(1)


def toy_images(n: int, seed: int, classes: int = 3) -> "ImageArray":
    """uint8 [N, 3, 8, 8]. With 3 classes the label is the channel with the highest mean; with 4, the
    image quadrant with the highest mean brightness."""
    from robustft.data import ImageArray

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    if classes == 3:
        labels = images.float().mean((2, 3)).argmax(1)
    elif classes == 4:
        q = images.float().mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2))  # [N, 2, 2]
        labels = q.flatten(1).argmax(1)
    else:
        raise ValueError(f"toy_images has 3 or 4 classes, not {classes}")
    return ImageArray(images, labels)


def quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float 3×8×8 images in [0, 1]; the label (of 4) is the brightest image quadrant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return x, x.mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2)).flatten(1).argmax(1)


def quadrant_mlp(n_train: int, steps: int) -> nn.Module:
    """A small MLP with BatchNorm and dropout (both must be off in eval mode), seeded, fitted on
    ``quadrant_data(n_train, seed=1)``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                        nn.Linear(32, 4))
    x, y = quadrant_data(n_train, seed=1)
    return fit_briefly(net, x, y, steps=steps)


def toy_image_mlp() -> nn.Module:
    """A small MLP, seeded, fitted on the 4-class ``toy_images(256, seed=1)``."""
    from robustft.data import to_float

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4))
    train = toy_images(256, seed=1, classes=4)
    return fit_briefly(net, to_float(train.images, 8), train.labels, steps=150)


def poison_loss_after(monkeypatch, calls_before: int) -> None:
    """Make the training loss NaN from objective call ``calls_before + 1`` on (each epoch has 4 steps)."""
    import robustft.train.trainer as trainer

    real = trainer.build_objective

    def poisoned(c):
        objective, calls = real(c), {"n": 0}

        def call(model, x, y, eps):
            out = objective(model, x, y, eps)
            calls["n"] += 1
            if calls["n"] > calls_before:
                out.loss = out.loss * float("nan")
            return out
        return call

    monkeypatch.setattr(trainer, "build_objective", poisoned)


def train_in_sweep_worker(cfg) -> None:
    """A sweep's ``train`` that a worker process can unpickle: writes the run's config, DONE and
    ``worker.json`` (its process id and torch's thread count); raises for the run named ``c``."""
    import json
    import os
    from pathlib import Path

    from robustft.config import save_config

    run = Path(cfg.train.out_dir) / cfg.train.run_name
    run.mkdir(parents=True, exist_ok=True)
    (run / "worker.json").write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(),
                                                 "tqdm_disabled": os.environ.get("TQDM_DISABLE")}))
    if cfg.train.run_name == "c":
        raise RuntimeError("boom in a worker")
    save_config(cfg, run / "config.yaml")
    (run / "DONE").write_text("done\n")
