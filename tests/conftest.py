"""Shared fixtures: a tiny, fast run config (helpers.TINY: digits at 16×16, timm's test_efficientnet, 2-step APGD),
one intra-op thread, the attack tests' trained toy net and batch, and Ray on the loopback address only
(``ray_on_loopback``). Plain helpers are in helpers.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.config import load_config

from helpers import TINY, assert_on_loopback, fit_briefly, tiny_net, toy_data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` and ``gpu`` tests run only where ``-m`` names their marker: a ``-m`` on the command line replaces the
    default ``-m 'not slow and not gpu'``, so ``-m 'not integration and not heavy'`` still leaves them out."""
    expression = config.getoption("markexpr") or ""
    kept, left_out = [], []
    for item in items:
        unasked = any(m.name in ("slow", "gpu") and m.name not in expression for m in item.iter_markers())
        (left_out if unasked else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


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


# ------------------------------------------------------------------------------------ attack tests
@pytest.fixture(scope="module")
def trained_toy_net() -> nn.Sequential:
    """:func:`helpers.tiny_net` trained for a few steps on the 3-class toy problem, so an attack has something to
    break (one per test module: tests may leave it in training mode)."""
    x, y = toy_data(64, seed=1)
    return fit_briefly(tiny_net(0), x, y, steps=60)


@pytest.fixture(scope="module")
def toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 examples of the 3-class toy problem that :func:`trained_toy_net` was not trained on."""
    return toy_data(16, seed=3)


# ------------------------------------------------------------------------------------ Ray on the loopback address
@pytest.fixture(scope="session")
def ray_on_loopback():
    """Ray nodes, drivers and workers that the tests start bind 127.0.0.1 and nothing else; yields
    :func:`assert_on_loopback` for the tests to check it while Ray runs.

    Ray takes a node's own address from the route to the outside and puts it in place of 127.0.0.1 (in
    ``node_ip_address`` and in the address a driver joins), except where it runs single-machine clusters only:
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes 127.0.0.1 the address of every node, driver and worker (set for
    this process, whose Ray has read it at import, and for every process started from here)."""
    constants = pytest.importorskip("ray._private.ray_constants", reason="Ray is the optional extra robustft[cluster]")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setattr(constants, "ENABLE_RAY_CLUSTER", False)
        yield assert_on_loopback
