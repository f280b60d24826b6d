"""The objective contract for standard, adversarial (Madry) and TRADES training.

``objective(model, x, y, eps) -> ObjectiveOutput``: owns its attack, never steps the optimiser, leaves the
model's mode alone; at ε = 0 the robust objectives are clean cross-entropy and run no attack.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import PGD, build_trades_attack
from robustft.attacks.base import FoldedBatchNorm, FullPrecision
from robustft.attacks.losses import kl
from robustft.config import AttackConfig, load_config
from robustft.objectives import AdversarialObjective, StandardObjective, TradesObjective, build_objective
from robustft.objectives.trades import kl_divergence

from helpers import fit_briefly, toy_cnn, toy_data

EPS = 8 / 255


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A toy CNN trained briefly; BatchNorm but no dropout, so train-mode forwards are deterministic."""
    x, y = toy_data(128, seed=1)
    net = fit_briefly(toy_cnn(3), x, y, steps=40)
    net[5].p = 0.0  # dropout off: the objectives' forward passes must be comparable
    return net


class SpyAttack:
    """Records calls; returns x shifted by +ε (clipped) so the attacked input differs from x."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model, x, y, eps):
        self.calls += 1
        return (x + eps).clamp(0, 1)


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    return [g.detach().clone() for g in torch.autograd.grad(loss, list(model.parameters()))]


# ------------------------------------------------------------------------------------ TRADES
def test_trades_beta_zero_is_clean_cross_entropy(model):
    x, y = toy_data(32, seed=0)
    spy = SpyAttack()
    model.eval()
    out = TradesObjective(spy, beta=0.0)(model, x, y, EPS)
    ref = F.cross_entropy(model(x), y)
    torch.testing.assert_close(out.loss, ref, rtol=0, atol=0)
    for a, b in zip(_grads(model, out.loss), _grads(model, ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert spy.calls == 0 and out.logits_adv is None and out.parts["kl"] == 0.0


def test_trades_eps_zero_is_clean_cross_entropy_and_runs_no_attack(model):
    x, y = toy_data(32, seed=0)
    spy = SpyAttack()
    model.eval()
    out = TradesObjective(spy, beta=6.0)(model, x, y, 0.0)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y), rtol=0, atol=0)
    assert spy.calls == 0


def test_trades_loss_is_ce_plus_beta_kl(model):
    x, y = toy_data(32, seed=0)
    spy = SpyAttack()
    model.eval()
    out = TradesObjective(spy, beta=3.0)(model, x, y, EPS)
    assert spy.calls == 1
    logits, logits_adv = model(x), model((x + EPS).clamp(0, 1))
    p, q = F.softmax(logits, 1), F.softmax(logits_adv, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(kl_divergence(logits, logits_adv), by_hand, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, y) + 3.0 * by_hand, rtol=1e-5, atol=1e-6)
    assert out.parts["kl"] > 0 and out.loss.item() >= out.parts["ce_clean"]
    assert out.logits is out.logits_adv  # training accuracy is measured on the attacked inputs


def test_trades_rejects_negative_beta():
    with pytest.raises(ValueError, match="beta"):
        TradesObjective(SpyAttack(), beta=-1.0)


def test_kl_loss_per_example_matches_definition():
    g = torch.Generator().manual_seed(0)
    ref, logits = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p, q = F.softmax(ref, 1), F.softmax(logits, 1)
    torch.testing.assert_close(kl(logits, torch.zeros(5, dtype=torch.long), ref), (p * (p / q).log()).sum(1))
    assert torch.allclose(kl(ref, torch.zeros(5, dtype=torch.long), ref), torch.zeros(5), atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        kl(logits, torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.5)])
def test_trades_inner_maximisation_raises_the_kl(model, norm, eps):
    """The KL attack moves the prediction away from the clean one more than its own starting noise does."""
    x, y = toy_data(16, seed=3)
    model.eval()
    attack = build_trades_attack(AttackConfig(norm=norm, num_steps=10))
    assert isinstance(attack, PGD) and attack.loss == "kl" and attack.start_noise == 1e-3
    torch.manual_seed(0)
    x_adv = attack(model, x, y, eps)
    with torch.no_grad():
        clean = model(x)
        start = model((x + 1e-3 * torch.randn_like(x)).clamp(0, 1))
        moved = kl_divergence(clean, model(x_adv)).item()
    assert moved > 10 * kl_divergence(clean, start).item() and moved > 1e-3


# ------------------------------------------------------------------------------------ factory and mode
def test_build_objective_for_each_name():
    assert isinstance(build_objective(load_config(None, ["objective.name=standard"])), StandardObjective)
    assert isinstance(build_objective(load_config(None, ["objective.name=adversarial"])), AdversarialObjective)
    trades = build_objective(load_config(None, ["objective.name=trades", "objective.beta=2.5"]))
    assert isinstance(trades, TradesObjective) and trades.beta == 2.5
    assert isinstance(trades.attack, FullPrecision)  # train.attack_fp32 (default): crafted in fp32 under autocast
    assert isinstance(trades.attack.attack, FoldedBatchNorm)  # attack.fold_bn (default): on the folded copy
    assert isinstance(trades.attack.attack.attack, PGD) and trades.attack.attack.attack.loss == "kl"
    ce_inner = build_objective(load_config(None, ["objective.name=trades", "objective.trades_inner=ce",
                                                  "train.attack_fp32=false", "attack.fold_bn=false"]))
    assert type(ce_inner.attack).__name__ == "APGD" and ce_inner.attack.loss == "ce"  # the training attack


@pytest.mark.parametrize("name", ["adversarial", "trades"])
@pytest.mark.parametrize("training", [True, False])
def test_objectives_leave_mode_and_optimiser_state_alone(name, training):
    net = toy_cnn(3).train(training)
    x, y = toy_data(16, seed=0)
    objective = build_objective(load_config(None, [f"objective.name={name}", "attack.num_steps=2"]))
    out = objective(net, x, y, EPS)
    assert net.training is training
    assert all(p.grad is None for p in net.parameters())  # the loss is returned, not back-propagated
    out.loss.backward()
    assert all(p.grad is not None for p in net.parameters())
