"""Speed settings change nothing beyond rounding: torch.compile agrees with eager, channels-last with the
default layout, micro-batches with one batch; bf16 autocast keeps the attack in fp32 when asked; no attack
runs while ε = 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.attacks import APGD
from robustft.attacks.base import FullPrecision
from robustft.config import Config, ModelConfig, TrainConfig, load_config
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir
from robustft.train import speed
from robustft.train.speed import Accelerator, resolve_precision
from robustft.train.trainer import EpochStats, StepContext, train_step


def _model(name: str = "test_efficientnet") -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, pretrained=False), num_classes=4)


def _batch(n: int = 16, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 4, (n,), generator=g)


def _step(cfg: Config, model: nn.Module, micro: int, eps: float = 8 / 255) -> tuple[torch.Tensor, dict]:
    """Loss and parameter gradients of one train_step of ``model`` (a fresh copy each time)."""
    x, y = _batch()
    accel = Accelerator(cfg.train, torch.device("cpu"))
    ctx = StepContext(accel.prepare(model), build_objective(cfg), accel, micro, cfg.train.seed, RunDir(None))
    model.train()
    out = train_step(ctx, model, x, y, eps, epoch=0, step=0, stats=EpochStats())
    return out.loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _close(a: dict, b: dict, rtol: float) -> None:
    """The gradients agree as a whole: ‖a − b‖ ≤ rtol·‖a‖ (some tensors' true gradient is 0, only rounding)."""
    assert a.keys() == b.keys()
    flat_a, flat_b = (torch.cat([g[k].double().flatten() for k in a]) for g in (a, b))
    assert (flat_a - flat_b).norm() <= rtol * flat_a.norm()


def _cfg(*overrides: str) -> Config:
    return load_config(None, ["attack.num_steps=3", *overrides])


@pytest.mark.heavy
def test_compiled_forward_agrees_with_eager(monkeypatch):
    """train.compile: the attack and the training forward pass run compiled; loss and gradients agree.
    (aot_eager captures the same graphs as inductor without needing a C++ compiler; see the slow test.)"""
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    loss_eager, grads_eager = _step(_cfg(), _model(), micro=16)
    loss_compiled, grads_compiled = _step(_cfg("train.compile=true"), _model(), micro=16)
    assert torch.allclose(loss_eager, loss_compiled, rtol=1e-5)
    _close(grads_eager, grads_compiled, rtol=1e-4)


@pytest.mark.slow
def test_inductor_compiled_forward_agrees_with_eager():
    torch._dynamo.reset()
    loss_eager, grads_eager = _step(_cfg(), _model(), micro=16)
    loss_compiled, grads_compiled = _step(_cfg("train.compile=true"), _model(), micro=16)
    assert torch.allclose(loss_eager, loss_compiled, rtol=1e-4)
    _close(grads_eager, grads_compiled, rtol=1e-3)


def test_compiled_model_keeps_checkpoint_keys(monkeypatch):
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")
    model = _model()
    net = Accelerator(TrainConfig(compile=True), torch.device("cpu")).prepare(model)
    assert net is not model and list(model.state_dict()) == list(_model().state_dict())


def test_channels_last_agrees_with_the_default_layout():
    """Other convolution kernels round differently: a clean step agrees tightly; an attacked one loosely,
    since the attack's sign steps turn rounding of near-zero input gradients into other pixels."""
    loss_a, grads_a = _step(_cfg(), _model(), micro=16, eps=0.0)
    loss_b, grads_b = _step(_cfg("train.channels_last=true"), _model(), micro=16, eps=0.0)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    _close(grads_a, grads_b, rtol=1e-4)
    loss_a, _ = _step(_cfg(), _model(), micro=16)
    loss_b, _ = _step(_cfg("train.channels_last=true"), _model(), micro=16)
    assert torch.allclose(loss_a, loss_b, rtol=1e-2)


def test_micro_batches_accumulate_to_the_full_batch_gradient():
    """Without BatchNorm and with a deterministic attack, 2 micro-batches of 8 give the gradient of the batch
    of 16 (the loss of each micro-batch is scaled by 1/2)."""
    def plain() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    cfg = _cfg("attack.random_start=false")
    _, full = _step(cfg, plain(), micro=16)
    _, accumulated = _step(cfg, plain(), micro=8)
    _close(full, accumulated, rtol=1e-5)


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None and resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) is None  # bf16 autocast is slower on CPUs (BENCHMARKS.md)
    with pytest.raises(ValueError, match="train.precision"):
        resolve_precision("fp16", cpu)
    with pytest.raises(Exception, match="train.precision"):
        load_config(None, ["train.precision=fp16"])


def test_bf16_keeps_the_attack_in_fp32_when_asked():
    """Under bf16 autocast, FullPrecision(attack) returns exactly what the attack returns in fp32, and the
    plain attack (train.attack_fp32=false) computes something else (bf16 rounding)."""
    model, (x, y) = _model().eval(), _batch()
    accel = Accelerator(TrainConfig(precision="bf16"), torch.device("cpu"))
    attack = APGD(num_steps=3, random_start=False)
    reference = attack(model, x, y, 8 / 255)
    with accel.autocast():
        assert model(x).dtype == torch.bfloat16  # autocast is on
        protected = FullPrecision(attack)(model, x, y, 8 / 255)
        rounded = attack(model, x, y, 8 / 255)
    assert torch.equal(protected, reference)
    assert not torch.equal(rounded, reference)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags sets TF32 too
def test_bf16_training_step_is_close_to_fp32():
    """bf16 autocast computes the fp32 step up to rounding, with fp32 gradients. PyTorch's own CPU kernels
    are used (oneDNN off): they are the same on every CPU, whereas oneDNN's native bf16 kernels differ by
    CPU and once gave non-finite gradients here on a CI machine with a finite loss, a case the trainer
    stops on (tests/test_trainer.py)."""
    with torch.backends.mkldnn.flags(enabled=False):
        loss_fp32, grads_fp32 = _step(_cfg(), _model(), micro=16)
        loss_bf16, grads_bf16 = _step(_cfg("train.precision=bf16"), _model(), micro=16)
    assert torch.allclose(loss_fp32, loss_bf16, rtol=5e-2)
    assert all(g.dtype == torch.float32 for g in grads_bf16.values())
    bad = [k for k, g in grads_bf16.items() if not torch.isfinite(g).all()]
    assert not bad, f"non-finite bf16 gradients of {bad}"
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in grads_fp32.values()]),
                                                torch.cat([g.flatten() for g in grads_bf16.values()]), dim=0)
    assert cos > 0.9


def test_no_attack_runs_while_eps_is_zero(monkeypatch):
    calls = []
    original = APGD.__call__
    monkeypatch.setattr(APGD, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    _step(_cfg(), _model(), micro=8, eps=0.0)
    assert calls == []
    _step(_cfg(), _model(), micro=8, eps=4 / 255)
    assert len(calls) == 2  # one per micro-batch
