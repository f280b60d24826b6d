"""Evaluation attacks: every name in the registry keeps the attack contract; DLR losses; APGD-T; the
reference AutoAttack wrapper; our APGD-CE against the reference one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.attacks import APGD, AutoAttack, build_eval_attacks
from robustft.attacks.losses import dlr, dlr_targeted
from robustft.config import EVAL_ATTACKS, EvalConfig

from helpers import Detached, Recorder, assert_in_ball, quadrant_data, quadrant_mlp

EPS = {"linf": 8 / 255, "l2": 0.5}
CPU_DEVICE = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return quadrant_mlp(512, steps=300)


@pytest.fixture(scope="module")
def batch():
    return quadrant_data(32, seed=3)


def _attacks(norm: str):
    cfg = EvalConfig(attacks=list(EVAL_ATTACKS), num_steps=5, square_queries=50)
    return build_eval_attacks(cfg, norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n == "autoattack" else n
                                  for n in EVAL_ATTACKS])  # the reference AutoAttack: seconds per norm
def test_every_eval_attack_keeps_the_contract(model, batch, name, norm):
    x, y = batch
    attack = _attacks(norm)[name]
    model.train()
    grads_before = [p.grad for p in model.parameters()]
    torch.manual_seed(0)
    x_adv = attack(model, x, y, EPS[norm])
    rng_after = torch.get_rng_state()
    assert_in_ball(x_adv, x, EPS[norm], norm)
    assert model.training, "mode restored"
    assert all(p.requires_grad for p in model.parameters())
    assert [p.grad for p in model.parameters()] == grads_before
    if isinstance(attack, AutoAttack):
        # the reference reseeds the global generator; the wrapper draws its seed and restores the rest
        torch.manual_seed(0)
        torch.randint(0, 2**31 - 1, ())
        assert torch.equal(rng_after, torch.get_rng_state())
    model.eval()
    with torch.no_grad():
        clean, adv = (model(x).argmax(1) == y), (model(x_adv).argmax(1) == y)
    assert adv.sum() < clean.sum(), f"{name} broke nothing"
    assert not (adv & ~clean).any() or name == "pgd", "evaluation attacks never repair a wrong example"
    # ε = 0 is the identity and runs nothing
    rec = nn.Sequential(Recorder(), model)
    assert attack(rec, x, y, 0.0) is x and rec[0].modes == []


@pytest.mark.parametrize("name", [n for n in EVAL_ATTACKS if n != "autoattack"])  # its reference path: aa-apgd-ce
def test_every_eval_attack_survives_a_forward_that_detaches_its_input(model, batch, name):
    """No gradient path from the output to x: the gradient attacks (ours and the reference's) see a zero gradient,
    raise nothing and return points inside the ball; the reference APGD-CE, without a random start, returns x."""
    x, y = batch
    detached = Detached(model).eval()
    torch.manual_seed(0)
    x_adv = _attacks("linf")[name](detached, x, y, EPS["linf"])
    assert_in_ball(x_adv, x, EPS["linf"], "linf")
    if name == "aa-apgd-ce":
        assert torch.equal(x_adv, x)


def test_autoattack_wrapper_is_reproducible_from_the_torch_seed(model, batch):
    x, y = batch
    square = AutoAttack(components=("square",), square_queries=30)
    torch.manual_seed(5)
    a = square(model.eval(), x, y, 8 / 255)
    torch.manual_seed(5)
    b = square(model, x, y, 8 / 255)
    assert torch.equal(a, b)


def test_dlr_is_positive_exactly_when_misclassified_and_scale_invariant():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [1.0, 3.0, 0.0, -1.0], [0.5, 0.4, 0.3, 0.0]])
    y = torch.tensor([0, 0, 0])
    loss = dlr(logits, y)
    assert loss[0] < 0 and loss[1] > 0 and loss[2] < 0
    assert loss[0] == pytest.approx(-(3 - 1) / (3 - 0))
    assert torch.allclose(dlr(5 * logits + 7, y), loss)  # invariant to shift and scale


def test_targeted_dlr_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    value = dlr_targeted(logits, torch.tensor([0]), torch.tensor([2]))
    assert value.item() == pytest.approx(-(3 - 0) / (3 - 0.5 * (0 + -1)))
    with pytest.raises(ValueError, match="target"):
        dlr_targeted(logits, torch.tensor([0]), None)


def test_apgd_t_tries_the_most_likely_classes_in_turn(model, batch):
    x, y = batch
    seen_targets = []

    class Spy(APGD):
        def _run(self, model, x, y, eps, target, start=None):
            seen_targets.append(target.clone())
            return super()._run(model, x, y, eps, target, start)

    Spy(num_steps=3, loss="dlr-targeted", targets=3, select="misclassified")(model.eval(), x, y, 8 / 255)
    with torch.no_grad():
        order = model(x).argsort(1, descending=True)
    assert 1 <= len(seen_targets) <= 3
    assert torch.equal(seen_targets[0], order[:, 1])  # first the runner-up class, on every example
    for k, t in enumerate(seen_targets[1:], start=2):
        assert len(t) < len(x)  # later targets only on examples not yet broken
        assert set(t.tolist()) <= set(order[:, k].tolist())


def test_dlr_losses_need_enough_classes():
    three = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(4, 3, 2, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGD(loss="dlr-targeted")(three, x, y, 0.1)
    APGD(loss="dlr", num_steps=2)(three, x, y, 0.1)  # 3 classes are enough for untargeted DLR


def test_our_apgd_ce_matches_the_reference(model):
    """Same budget (10 steps, 1 restart) on 256 examples: robust accuracies within 3 examples in 100."""
    x, y = quadrant_data(256, seed=9)
    ours, ref = APGD(num_steps=10, select="misclassified"), AutoAttack(components=("apgd-ce",), num_steps=10)
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        acc_ours = (model(ours(model, x, y, 4 / 255)).argmax(1) == y).float().mean().item()
        acc_ref = (model(ref(model, x, y, 4 / 255)).argmax(1) == y).float().mean().item()
    assert acc_ours < clean - 0.1
    assert abs(acc_ours - acc_ref) <= 0.03


@pytest.mark.parametrize("num_steps", [7, 10, 20])
def test_our_apgd_iterates_exactly_like_the_reference(model, num_steps):
    """Without random start both are deterministic: the best loss per example and the fooled set agree."""
    from pyautoattack.autopgd_base import APGDAttack

    from robustft.attacks import crafting

    x, y = quadrant_data(64, seed=4)
    model.eval()
    ref = APGDAttack(model, n_iter=num_steps, norm="Linf", eps=6 / 255, seed=0, loss="ce", device=CPU_DEVICE)
    ref.init_hyperparam(x)
    with torch.enable_grad():
        _, ref_robust, ref_loss, _ = ref.attack_single_run(x, y, x_init=x.clone())
    with crafting(model):
        state = APGD(num_steps=num_steps, random_start=False)._run(model, x, y, 6 / 255, None)
    assert torch.allclose(state.loss_best, ref_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(~state.fooled, ref_robust.bool())
    assert 0 < state.fooled.sum() < len(y)
