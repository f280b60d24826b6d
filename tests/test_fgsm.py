"""Single-step training attacks (robustft/attacks/fgsm.py): FGSM-RS and N-FGSM, their factory defaults and
config validation.

FGSM (with or without its random start) keeps the attack contract of tests/test_attacks.py: points in the
ε-ball ∩ [0, 1]. N-FGSM by design does not: its points lie within (k + 1)·ε of x in ℓ∞ and in [0, 1].
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import FGSM, L2, NFGSM, PGD, Linf, build_attack, build_trades_attack, describe_attack
from robustft.config import TRAIN_ATTACKS, AttackConfig, ConfigError, load_config

from helpers import tiny_net

NUM_CLASSES = 3


def one_logit_model() -> nn.Sequential:
    """Logits (w·x, 0, 0) in float64: the cross-entropy gradient w.r.t. x is (p₀ − [y = 0])·w, whose sign is
    ∓sign(w) at *every* input, so a signed step does not depend on where it is taken (random start or not)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES)).double().eval()
    with torch.no_grad():
        model[1].weight[1:].zero_()
        model[1].bias.zero_()
        model[1].weight[0].mul_(1e-2)
        model[1].weight[0][model[1].weight[0].abs() < 1e-6] = 1e-3  # every pixel has a nonzero gradient
    return model


GREY = torch.full((4, 3, 8, 8), 0.5, dtype=torch.float64)  # far from the box: only the step (and ball) bind
LABELS = torch.tensor([0, 1, 2, 0])


def expected_sign(model: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
    """sign of ∂CE/∂x for ``one_logit_model``: −sign(w) where y = 0, +sign(w) elsewhere."""
    w = model[1].weight[0].detach().view(1, 3, 8, 8).sign()
    return torch.where((y == 0).view(-1, 1, 1, 1), -w, w)


def linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().max(1).values




ATTACKS = {
    "fgsm-rs": lambda: FGSM(),
    "fgsm-rs-l2": lambda: FGSM(threat=L2()),
    "fgsm": lambda: FGSM(rel_step_size=1.0, random_start=False),
    "nfgsm": lambda: NFGSM(),
}
ALL = pytest.mark.parametrize("name", list(ATTACKS))


# ------------------------------------------------------------------------------------ step sizes follow ε
@pytest.mark.parametrize("rel", [0.25, 0.5, 1.0])
def test_fgsm_without_random_start_moves_every_pixel_by_rel_step_times_eps(rel):
    model = one_logit_model()
    sign = expected_sign(model, LABELS)
    for eps in (1 / 255, 4 / 255, 16 / 255):
        x_adv = FGSM(rel_step_size=rel, random_start=False)(model, GREY, LABELS, eps)
        torch.testing.assert_close(x_adv - GREY, rel * eps * sign, rtol=0, atol=1e-12)


def test_fgsm_step_beyond_eps_is_projected_to_the_ball():
    """From x, a step of 2ε (or Wong et al.'s 1.25ε) ends on the ε-box's surface: exactly ε per pixel."""
    model = one_logit_model()
    sign = expected_sign(model, LABELS)
    for rel in (1.25, 2.0):
        x_adv = FGSM(rel_step_size=rel, random_start=False)(model, GREY, LABELS, 8 / 255)
        torch.testing.assert_close(x_adv - GREY, 8 / 255 * sign, rtol=0, atol=1e-12)


def test_fgsm_step_is_clipped_to_the_box():
    model = one_logit_model()
    sign = expected_sign(model, LABELS)
    x = torch.where(sign > 0, torch.ones_like(GREY), torch.zeros_like(GREY))  # every step points out of [0, 1]
    x_adv = FGSM(rel_step_size=1.0, random_start=False)(model, x, LABELS, 8 / 255)
    assert torch.equal(x_adv, x)


def test_fgsm_random_start_shape_scales_with_eps():
    """With the same random draws, the perturbation divided by ε is the same at every ε."""
    model = one_logit_model()
    shapes = []
    for eps in (1 / 255, 4 / 255, 16 / 255):
        torch.manual_seed(5)
        shapes.append((FGSM()(model, GREY, LABELS, eps) - GREY) / eps)
    for s in shapes[1:]:
        torch.testing.assert_close(s, shapes[0], rtol=0, atol=1e-9)
    # start u ∈ [−1, 1] plus a step of 1.25 in the gradient's sign, clipped to [−1, 1]: most pixels hit the surface
    assert (shapes[0].abs() > 1 - 1e-9).float().mean() > 0.5
    assert (shapes[0].abs() < 1 - 1e-6).any()  # and some do not: the start mattered


def test_nfgsm_is_noise_plus_one_step_and_scales_with_eps():
    model = one_logit_model()
    sign = expected_sign(model, LABELS)
    k, rel = 2.0, 1.0
    shapes = []
    for eps in (1 / 255, 4 / 255, 16 / 255):
        torch.manual_seed(7)
        noise = torch.empty_like(GREY).uniform_(-k * eps, k * eps)  # the draw N-FGSM makes
        torch.manual_seed(7)
        x_adv = NFGSM(noise_mult=k, rel_step_size=rel)(model, GREY, LABELS, eps)
        torch.testing.assert_close(x_adv, GREY + noise + rel * eps * sign, rtol=0, atol=1e-12)
        delta = x_adv - GREY
        assert (linf(delta) <= (k + rel) * eps + 1e-12).all()
        assert (delta.abs() > eps + 1e-12).float().mean() > 0.3, "N-FGSM is not projected back to the ε-ball"
        shapes.append(delta / eps)
    for s in shapes[1:]:
        torch.testing.assert_close(s, shapes[0], rtol=0, atol=1e-9)


def test_nfgsm_without_noise_is_plain_fgsm():
    model = one_logit_model()
    x, y = GREY.clone(), LABELS
    x[0, 0, :2] = 1.0  # some pixels at the bounds so the clipping is exercised too
    x[1, 1, :2] = 0.0
    plain = FGSM(rel_step_size=1.0, random_start=False)(model, x, y, 8 / 255)
    torch.manual_seed(0)
    assert torch.equal(NFGSM(noise_mult=0.0, rel_step_size=1.0)(model, x, y, 8 / 255), plain)
    assert NFGSM(noise_mult=2.0, rel_step_size=1.0).max_radius == 3.0
    assert NFGSM(noise_mult=0.5, rel_step_size=0.75).max_radius == 1.25


def test_nfgsm_points_stay_in_the_box_and_within_k_plus_one_eps(trained_toy_net):
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(8, 3, 8, 8, generator=g) > 0.5).float()  # pixels at 0 and 1
    y = torch.arange(8) % NUM_CLASSES
    for k in (0.5, 2.0, 4.0):
        eps = 0.05
        torch.manual_seed(1)
        x_adv = NFGSM(noise_mult=k)(trained_toy_net, x, y, eps)
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and torch.isfinite(x_adv).all()
        assert (linf(x_adv - x) <= (k + 1) * eps + 1e-6).all()
        assert not x_adv.requires_grad


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_rs_stays_inside_the_eps_ball_and_box(trained_toy_net, toy_batch, norm):
    threat = Linf() if norm == "linf" else L2()
    g = torch.Generator().manual_seed(4)
    bounds = (torch.rand(6, 3, 8, 8, generator=g) > 0.5).float()
    for x, y, eps in [(*toy_batch, 8 / 255 if norm == "linf" else 0.5),
                      (bounds, torch.arange(6) % 3, 0.3 if norm == "linf" else 2.0)]:
        for rel in (1.25, 2.0):
            torch.manual_seed(0)
            x_adv = FGSM(rel_step_size=rel, threat=threat)(trained_toy_net, x, y, eps)
            assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
            assert x_adv.min() >= 0 and x_adv.max() <= 1
            delta = (x_adv - x).flatten(1)
            dist = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
            assert (dist <= eps + 1e-6).all(), f"{dist.max()} > {eps}"
            assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", ["fgsm-rs", "fgsm"])
def test_fgsm_increases_the_loss(trained_toy_net, toy_batch, name):
    x, y = toy_batch
    torch.manual_seed(0)
    x_adv = ATTACKS[name]()(trained_toy_net, x, y, 8 / 255)
    with torch.no_grad():
        clean, adv = F.cross_entropy(trained_toy_net(x), y), F.cross_entropy(trained_toy_net(x_adv), y)
    assert adv > clean + 0.02


# ------------------------------------------------------------------------------------ contract: ε = 0, model state
class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        raise AssertionError("the model must not be called")


@ALL
def test_eps_zero_returns_x_without_calling_the_model(toy_batch, name):
    x, y = toy_batch
    model = Exploding().train()
    assert ATTACKS[name]()(model, x, y, 0.0) is x
    empty = x[:0]
    assert ATTACKS[name]()(model, empty, y[:0], 8 / 255) is empty  # nor for an empty batch
    assert model.training


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


@pytest.mark.parametrize("training", [True, False])
@ALL
def test_model_state_is_left_as_it_was(toy_batch, name, training):
    x, y = toy_batch
    model = tiny_net(5)
    rec = Recorder()
    model.insert(0, rec)
    model.train(training)
    params = list(model.parameters())
    params[0].requires_grad_(False)  # a frozen parameter stays frozen
    for i, p in enumerate(params[1:-1]):
        p.grad = torch.full_like(p, 0.25 * (i + 1))  # the last parameter keeps grad None
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    weights = [p.detach().clone() for p in params]
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    torch.manual_seed(0)
    x_adv = ATTACKS[name]()(model, x, y, 8 / 255)
    assert not torch.equal(x_adv, x)
    assert rec.modes and not any(rec.modes), "the model must be in eval mode while crafting"
    assert len(rec.modes) == 1, "one forward pass: a single-step attack"
    assert all(m.training is training for m in model.modules())
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
    for p, g, w in zip(params, grads, weights):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)
    for k, v in model.state_dict().items():
        if k in buffers:
            assert torch.equal(v, buffers[k]), f"{k} changed while crafting"


@pytest.mark.parametrize("training", [True, False])
@ALL
def test_model_state_restored_when_forward_raises(toy_batch, name, training):
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_net(8)

        def forward(self, x):
            raise RuntimeError("boom")

    x, y = toy_batch
    model = Boom().train(training)
    params = list(model.parameters())
    params[1].requires_grad_(False)
    params[0].grad = torch.ones_like(params[0])
    with pytest.raises(RuntimeError, match="boom"):
        ATTACKS[name]()(model, x, y, 8 / 255)
    assert model.training is training and model.inner.training is training
    assert [p.requires_grad for p in params] == [True, False] + [True] * (len(params) - 2)
    assert torch.equal(params[0].grad, torch.ones_like(params[0]))
    assert all(p.grad is None for p in params[1:])


# ------------------------------------------------------------------------------------ factories and config
def test_default_rel_steps():
    defaults = {"apgd": None, "pgd": 0.25, "fgsm": 1.25, "nfgsm": 1.0}  # step-size free, PGD's, Wong's, de Jorge's
    assert {n: TRAIN_ATTACKS[n].extra.get("rel_step") for n in defaults} == defaults
    assert AttackConfig().rel_step_size is None and AttackConfig().noise_mult == 2.0


def test_build_attack_fgsm_and_nfgsm_defaults():
    fgsm = build_attack(AttackConfig(name="fgsm"))
    assert isinstance(fgsm, FGSM) and isinstance(fgsm.threat, Linf)
    assert fgsm.rel_step_size == 1.25 and fgsm.random_start is True
    fgsm_l2 = build_attack(AttackConfig(name="fgsm", norm="l2", random_start=False))
    assert isinstance(fgsm_l2.threat, L2) and fgsm_l2.random_start is False
    nfgsm = build_attack(AttackConfig(name="nfgsm"))
    assert isinstance(nfgsm, NFGSM) and (nfgsm.noise_mult, nfgsm.rel_step_size) == (2.0, 1.0)
    pgd = build_attack(AttackConfig(name="pgd"))
    assert isinstance(pgd, PGD) and pgd.rel_step_size == 0.25
    assert build_trades_attack(AttackConfig(name="fgsm")).rel_step_size == 0.25  # TRADES' PGD keeps PGD's default


def test_build_attack_respects_explicit_settings():
    fgsm = build_attack(AttackConfig(name="fgsm", rel_step_size=2.0))
    assert fgsm.rel_step_size == 2.0
    nfgsm = build_attack(AttackConfig(name="nfgsm", rel_step_size=0.5, noise_mult=3.0))
    assert (nfgsm.noise_mult, nfgsm.rel_step_size) == (3.0, 0.5)
    assert build_attack(AttackConfig(name="pgd", rel_step_size=0.1)).rel_step_size == 0.1
    assert build_trades_attack(AttackConfig(rel_step_size=0.1)).rel_step_size == 0.1
    # and from overrides, through the config
    cfg = load_config(None, ["attack.name=nfgsm", "attack.noise_mult=1.5", "attack.rel_step_size=0.75"])
    nfgsm = build_attack(cfg.attack)
    assert isinstance(nfgsm, NFGSM) and (nfgsm.noise_mult, nfgsm.rel_step_size) == (1.5, 0.75)
    assert build_attack(load_config(None, ["attack.name=fgsm", "attack.rel_step_size=null"]).attack).rel_step_size == 1.25
    described = describe_attack("fgsm", fgsm)
    assert described["implementation"] == "robustft FGSM" and described["threat"] == "linf"
    assert described["rel_step_size"] == 2.0


@pytest.mark.parametrize("overrides,key", [
    (["attack.name=nfgsm", "attack.norm=l2"], "nfgsm"),
    (["attack.noise_mult=-1"], "attack.noise_mult"),
    (["attack.name=nfgsm", "attack.noise_mult=-0.5"], "attack.noise_mult"),
    (["attack.rel_step_size=0"], "attack.rel_step_size"),
    (["attack.name=fgm"], "attack.name"),
])
def test_config_validation_rejects(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, overrides)


def test_config_accepts_the_new_attacks():
    assert load_config(None, ["attack.name=fgsm", "attack.norm=l2"]).attack.norm == "l2"
    assert load_config(None, ["attack.name=nfgsm", "attack.noise_mult=0"]).attack.noise_mult == 0.0
    with pytest.raises(ValueError, match="noise_mult"):
        NFGSM(noise_mult=-1.0)
