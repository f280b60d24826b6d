"""FMN (fast minimum-norm attack): exact radii on linear models, returned points misclassified at the reported
distance, the fixed-ε attack contract, and consistency with a fixed-ε attack on a small trained MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.attacks import APGD
from robustft.attacks.fmn import FMN, margin
from robustft.attacks.threat import L2, Linf

from helpers import Detached, Recorder, assert_in_ball, quadrant_data, quadrant_mlp

THREATS = {"linf": Linf, "l2": L2}
DUAL_P = {"linf": 1, "l2": 2}


def _dist(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _linear(classes: int, dim: int, seed: int) -> nn.Sequential:
    """A linear classifier on flattened inputs with seeded Gaussian weights and small biases."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(dim, classes))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(classes, dim, generator=g))
        net[1].bias.copy_(0.1 * torch.randn(classes, generator=g))
    return net


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """The small MLP of test_eval_attacks (BatchNorm, dropout), trained a little longer (~75 % clean accuracy)."""
    return quadrant_mlp(2048, steps=1500)


@pytest.fixture(scope="module")
def batch():
    return quadrant_data(64, seed=3)


def test_margin_is_negative_exactly_when_misclassified():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 1.0, -4.0]])
    y = torch.tensor([0, 2, 2])
    assert torch.equal(margin(logits, y), torch.tensor([1.0, -4.0, -5.0]))


@pytest.mark.parametrize("classes,seed", [(2, 1), (10, 10)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_radius_matches_the_analytic_minimum(norm, classes, seed):
    """For logits z = Wx + b the misclassified region is the union of the half-spaces z_j ≥ z_y, at distances
    (z_y − z_j) / ‖w_y − w_j‖_dual; inputs near 0.5 keep the [0, 1] box from binding. FMN descends the margin
    to the runner-up class, so it reaches that class's boundary to within 2 %; that is the exact minimum with two
    classes and, with ten, where the runner-up's boundary is the nearest (seed 10 has rows of both kinds)."""
    dim, n = 48, 64
    net = _linear(classes, dim, seed)
    g = torch.Generator().manual_seed(7)
    x = 0.5 + 0.02 * (2 * torch.rand(n, 3, 4, 4, generator=g) - 1)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    w = net[1].weight.detach()
    rows = torch.arange(n)
    dists = (z[rows, y][:, None] - z) / (w[y][:, None, :] - w[None]).norm(p=DUAL_P[norm], dim=2)
    dists[rows, y] = float("inf")
    exact = dists.min(1).values
    runner_up = z.scatter(1, y[:, None], float("-inf")).argmax(1)
    to_runner_up = dists[rows, runner_up]
    nearest = to_runner_up == exact
    assert (exact > 0).all() and (exact < 0.45).all(), "each coordinate of a minimiser moves < 0.48: inside [0, 1]"
    assert nearest.any() and (nearest.all() if classes == 2 else not nearest.all())

    x_adv, radius = FMN(threat=THREATS[norm]()).min_norm(net, x, y)

    assert torch.isfinite(radius).all(), "a linear model is always broken"
    assert (radius >= exact - 1e-4).all(), "FMN cannot beat the true minimum"
    assert (radius <= 1.02 * to_runner_up).all(), f"worst {(radius / to_runner_up).max().item() - 1:.2%} above"
    assert (radius[nearest] <= 1.02 * exact[nearest]).all()
    assert x_adv.min() > 0 and x_adv.max() < 1, "the box never binds, so the analytic minimum applies"
    with torch.no_grad():
        assert (net(x_adv).argmax(1) != y).all()
    assert torch.equal(radius, _dist(x_adv - x, norm))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_min_norm_points_are_misclassified_at_the_reported_distance(model, batch, norm):
    x, y = batch
    with torch.no_grad():
        wrong_at_x = model(x).argmax(1) != y
    assert 0 < wrong_at_x.sum() < len(y)
    model.train()
    sentinel = [torch.full_like(p, 3.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel):
        p.grad = s

    x_adv, radius = FMN(threat=THREATS[norm]()).min_norm(model, x, y)

    assert model.training, "mode restored"
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is s and bool((s == 3.0).all()) for p, s in zip(model.parameters(), sentinel))
    model.eval()
    assert x_adv.shape == x.shape and radius.shape == y.shape and radius.dtype == torch.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    found = torch.isfinite(radius)
    assert found.all(), "100 steps break every example of this small MLP"
    assert torch.equal(radius, _dist(x_adv - x, norm)), "the radius is the returned point's distance"
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).all()
    assert (radius[wrong_at_x] == 0).all() and torch.equal(x_adv[wrong_at_x], x[wrong_at_x])
    assert (radius[~wrong_at_x] > 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_call_keeps_the_attack_contract(model, batch, norm):
    x, y = batch
    fmn = FMN(steps=30, threat=THREATS[norm]())
    x_min, radius = fmn.min_norm(model, x, y)
    eps = float(radius.median())  # about half the examples inside the ball
    model.train()
    grads_before = [p.grad for p in model.parameters()]

    x_adv = fmn(model, x, y, eps)

    assert model.training and [p.grad for p in model.parameters()] == grads_before
    model.eval()
    assert_in_ball(x_adv, x, eps, norm)
    inside = radius <= eps
    assert 0 < inside.sum() < len(y)
    assert torch.equal(x_adv[inside], x_min[inside]), "points within ε are returned unchanged"
    assert torch.equal(x_adv[~inside], fmn.threat.project(x_min, x, eps)[~inside])
    rec = nn.Sequential(Recorder(), model)
    assert fmn(rec, x, y, 0.0) is x and rec[0].modes == [], "ε = 0 is the identity and runs nothing"
    empty = x[:0]
    assert fmn(rec, empty, y[:0], eps) is empty and rec[0].modes == []
    x_none, r_none = fmn.min_norm(rec, empty, y[:0])
    assert x_none.shape == empty.shape and r_none.shape == (0,)


@pytest.mark.parametrize("norm,eps_grid", [("linf", [0.005, 0.01, 0.02]), ("l2", [0.05, 0.1, 0.25])])
def test_consistent_with_a_fixed_eps_attack(model, batch, norm, eps_grid):
    """Every example with radius ≤ ε is broken by ``fmn(…, eps)``; and FMN, over all ε at once, breaks about as
    many examples as a 50-step APGD-CE run for each ε (on this model, measured: the same or more)."""
    x, y = batch
    fmn = FMN(threat=THREATS[norm]())
    _, radius = fmn.min_norm(model, x, y)
    apgd = APGD(num_steps=50, select="misclassified", threat=THREATS[norm]())
    for eps in eps_grid:
        x_adv = fmn(model, x, y, eps)
        torch.manual_seed(0)
        x_apgd = apgd(model, x, y, eps)
        with torch.no_grad():
            broken = model(x_adv).argmax(1) != y
            broken_apgd = model(x_apgd).argmax(1) != y
        within = radius <= eps
        assert 0 < within.sum() < len(y), f"ε = {eps} should split the batch"
        assert broken[within].all(), f"ε = {eps}: FMN's own point within ε is not misclassified"
        assert within.sum() >= broken_apgd.sum() - 1, f"ε = {eps}: FMN {within.sum()} vs APGD {broken_apgd.sum()}"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_no_gradient_path_leaves_points_in_place(model, batch, norm):
    """A forward that detaches its input gives a zero gradient: nothing moves, nothing raises; examples wrong at
    x keep radius 0, the others are reported as not found (x itself, radius +inf)."""
    x, y = batch
    with torch.no_grad():
        wrong_at_x = model(x).argmax(1) != y
    wrapped = Detached(model).eval()  # a new module trains by default, and crafting would restore that
    x_adv, radius = FMN(steps=5, threat=THREATS[norm]()).min_norm(wrapped, x, y)
    assert not model.training
    assert torch.equal(x_adv, x)
    assert (radius[wrong_at_x] == 0).all() and torch.isinf(radius[~wrong_at_x]).all()


def test_defaults_and_validation():
    assert FMN(threat=Linf())._alphas() == (10.0, 0.1)
    assert FMN(threat=L2())._alphas() == (1.0, 0.01)
    assert FMN(alpha_init=2.0)._alphas() == (2.0, 0.02)

    class L1:
        name = "l1"

    with pytest.raises(ValueError, match="norms"):
        FMN(threat=L1())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        FMN(steps=-1)
