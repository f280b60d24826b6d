"""Shared fixtures: a tiny, fast run config (digits at 16×16, timm's test_efficientnet, 2-step APGD)."""

from __future__ import annotations

import pytest
import torch

from robustft.config import load_config

TINY = [
    "data.name=digits", "data.image_size=16", "data.n_train=128", "data.n_val=64", "data.n_test=64",
    "data.batch_size=32", "data.eval_batch_size=64", "model.name=test_efficientnet", "model.pretrained=false",
    "attack.num_steps=2", "objective.name=adversarial", "schedule.kind=hinge", "schedule.t1=1", "schedule.t2=2",
    "optim.lr=0.003", "optim.warmup_epochs=0", "train.epochs=3", "train.val_adv_n=32", "train.log_every=2",
    "eval.n=32", "eval.num_steps=2", "eval.eps_grid=[0, 4/255, 8/255]", "eval.check_queries=50",
    "train.channels_last=false",
]


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides that make any config a seconds-long run under ``tmp_path``."""
    return TINY + [f"train.out_dir={tmp_path / 'runs'}"]


@pytest.fixture
def tiny_config(tiny_overrides):
    return load_config(None, tiny_overrides)


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One intra-op thread: tiny models gain nothing from two, and a busy 2-core machine loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
