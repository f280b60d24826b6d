"""Property tests of the attack contract (robustft.attacks.base.Attack) for PGD and APGD, ℓ∞ and ℓ2.

Contract: ``attack(model, x, y, eps) -> x_adv`` lies in the ε-ball around ``x`` ∩ [0, 1]; the model is
in eval mode while crafting; ``model.training``, ``requires_grad`` and every ``.grad`` are left as they
were (also on error); ``eps == 0`` returns ``x`` without running the model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import APGD, FGSM, L2, PGD, AutoAttack, Linf, build_attack, build_eval_attacks, describe_attack
from robustft.config import EVAL_ATTACKS, TRAIN_ATTACKS, AttackConfig, EvalConfig, load_config

from helpers import Detached, Recorder, assert_in_ball, assert_training_attack_contract, tiny_net, toy_data

EPS = {"linf": 8 / 255, "l2": 0.5}
THREATS = {"linf": Linf, "l2": L2}
NUM_CLASSES = 3


def make_attack(kind: str, norm: str, **kw):
    if kind == "pgd-kl":  # TRADES' inner maximisation
        kw = {"loss": "kl", "random_start": False, "start_noise": 1e-3, **kw}
    cls = {"pgd": PGD, "apgd": APGD, "pgd-kl": PGD}[kind]
    return cls(threat=THREATS[norm](), **kw)


def per_example_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, reduction="none")
    model.train(was)
    return loss


ATTACKS = [
    pytest.param(kind, norm, id=f"{kind}-{norm}") for kind in ("pgd", "apgd") for norm in ("linf", "l2")
]
CONTRACT = ATTACKS + [pytest.param("pgd-kl", norm, id=f"pgd-kl-{norm}") for norm in ("linf", "l2")]
"""Every attack the contract tests cover: PGD and APGD, and TRADES' KL-divergence PGD."""
VARIANTS = [
    pytest.param(kind, norm, kw, id=f"{kind}-{norm}-{name}")
    for kind, norm, kw, name in [
        (k, n, kw, name)
        for k in ("pgd", "apgd")
        for n in ("linf", "l2")
        for name, kw in {"default": {}, "no-random-start": {"random_start": False}, "restarts2": {"restarts": 2},
                         **({"kl": {"loss": "kl", "random_start": False, "start_noise": 1e-3}} if k == "pgd" else {}),
                         **({"misclassified": {"select": "misclassified"}} if k == "apgd" else {})}.items()
    ]
]


# ------------------------------------------------------------------------------------ ball and box
@pytest.mark.parametrize("kind,norm,kw", VARIANTS)
def test_result_inside_eps_ball_and_box(trained_toy_net, toy_batch, kind, norm, kw):
    x, y = toy_batch
    eps = EPS[norm]
    torch.manual_seed(0)
    x_adv = make_attack(kind, norm, num_steps=5, **kw)(trained_toy_net, x, y, eps)
    assert_in_ball(x_adv, x, eps, norm)
    assert not torch.equal(x_adv, x)  # the attack moved
    assert not x_adv.requires_grad


@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_ball_and_box_with_pixels_at_the_bounds(trained_toy_net, kind, norm):
    """Inputs at 0 and 1 exercise the box clipping; a large ε exercises the ball projection."""
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(6, 3, 8, 8, generator=g) > 0.5).float()
    y = torch.arange(6) % NUM_CLASSES
    eps = 0.3 if norm == "linf" else 2.0
    torch.manual_seed(1)
    x_adv = make_attack(kind, norm, num_steps=4)(trained_toy_net, x, y, eps)
    assert_in_ball(x_adv, x, eps, norm)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind,norm", CONTRACT + [pytest.param("fgsm", "linf", id="fgsm-linf")])
def test_no_gradient_path_to_the_input_gives_a_zero_gradient_not_an_error(trained_toy_net, toy_batch, kind, norm,
                                                                          training):
    """A forward that detaches its input: no gradient step moves, so the attack returns its starting points: x
    itself without a random start, else the random start (TRADES' KL: x plus its start noise), inside the ball;
    the model's state is restored as usual."""
    x, y = toy_batch
    eps, threat = EPS[norm], THREATS[norm]()
    model = Detached(trained_toy_net).train(training)
    if kind == "fgsm":
        fixed, randomised = FGSM(random_start=False), FGSM()
    else:
        fixed = make_attack(kind, norm, num_steps=3, random_start=False)
        randomised = make_attack(kind, norm, num_steps=3)
    torch.manual_seed(0)
    if kind == "pgd-kl":
        x_start = threat.project(x + 1e-3 * torch.randn_like(x), x, eps)
    else:
        assert torch.equal(fixed(model, x, y, eps), x)
        x_start = threat.random_init(x, eps)
    torch.manual_seed(0)
    assert torch.equal(randomised(model, x, y, eps), x_start)
    assert model.training == training and all(p.requires_grad and p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------ eps = 0
class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        raise AssertionError("the model must not be called")


@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_eps_zero_returns_x_without_calling_the_model(toy_batch, kind, norm):
    x, y = toy_batch
    model = Exploding().train()
    out = make_attack(kind, norm, restarts=2)(model, x, y, 0.0)
    assert out is x
    assert model.training


# ------------------------------------------------------------------------------------ model state
@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_parameter_grads_untouched(toy_batch, kind, norm):
    x, y = toy_batch
    model = tiny_net(5).train()
    params = list(model.parameters())
    for i, p in enumerate(params[:-1]):
        p.grad = torch.full_like(p, 0.25 * (i + 1))
    # the last parameter (Linear bias) keeps grad None
    known = [None if p.grad is None else p.grad.clone() for p in params]
    weights = [p.detach().clone() for p in params]
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    torch.manual_seed(0)
    make_attack(kind, norm, num_steps=3)(model, x, y, EPS[norm])
    for p, g, w in zip(params, known, weights):
        if g is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, g)
        assert torch.equal(p.detach(), w)
    for k, v in model.state_dict().items():
        if k in buffers:
            assert torch.equal(v, buffers[k]), f"{k} changed: BatchNorm statistics updated while crafting"


@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_all_none_grads_stay_none(toy_batch, kind, norm):
    x, y = toy_batch
    model = tiny_net(6).train()
    torch.manual_seed(0)
    make_attack(kind, norm, num_steps=3)(model, x, y, EPS[norm])
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_training_flag_and_requires_grad_restored(toy_batch, kind, norm, training):
    x, y = toy_batch
    model = tiny_net(7).train(training)
    frozen = model[0].weight
    frozen.requires_grad_(False)  # a frozen parameter must stay frozen
    torch.manual_seed(0)
    make_attack(kind, norm, num_steps=3)(model, x, y, EPS[norm])
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert frozen.requires_grad is False
    assert all(p.requires_grad for p in model.parameters() if p is not frozen)


class FailsOnCall(nn.Module):
    """Wraps a model; raises on the ``n``-th forward call."""

    def __init__(self, inner: nn.Module, n: int):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_state_restored_when_forward_raises_mid_attack(toy_batch, kind, norm, training):
    x, y = toy_batch
    model = FailsOnCall(tiny_net(8), n=3).train(training)
    params = list(model.parameters())
    params[1].requires_grad_(False)
    params[0].grad = torch.ones_like(params[0])
    with pytest.raises(RuntimeError, match="boom"):
        make_attack(kind, norm, num_steps=5)(model, x, y, EPS[norm])
    assert model.calls == 3
    assert model.training is training and model.inner.training is training
    assert [p.requires_grad for p in params] == [True, False] + [True] * (len(params) - 2)
    assert torch.equal(params[0].grad, torch.ones_like(params[0]))
    assert all(p.grad is None for p in params[1:])


@pytest.mark.parametrize("kind,norm", CONTRACT)
def test_model_in_eval_mode_while_crafting(toy_batch, kind, norm):
    x, y = toy_batch
    model = tiny_net(9)
    rec = Recorder()
    model.insert(0, rec)
    model.train()
    torch.manual_seed(0)
    make_attack(kind, norm, num_steps=3, restarts=2)(model, x, y, EPS[norm])
    assert len(rec.modes) >= 6
    assert not any(rec.modes)
    assert model.training and rec.training


# ------------------------------------------------------------------------------------ strength
@pytest.mark.parametrize("kind,norm", ATTACKS)
def test_attack_increases_mean_loss(trained_toy_net, toy_batch, kind, norm):
    x, y = toy_batch
    torch.manual_seed(0)
    x_adv = make_attack(kind, norm, num_steps=10)(trained_toy_net, x, y, EPS[norm])
    clean, adv = per_example_loss(trained_toy_net, x, y), per_example_loss(trained_toy_net, x_adv, y)
    assert adv.mean() > clean.mean() + 0.05


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_at_least_as_strong_as_pgd(trained_toy_net, toy_batch, norm):
    x, y = toy_batch
    model, pgd_losses, apgd_losses = trained_toy_net, [], []
    for seed in range(3):
        torch.manual_seed(seed)
        pgd_losses.append(per_example_loss(model, make_attack("pgd", norm, num_steps=10)(model, x, y, EPS[norm]), y).mean())
        torch.manual_seed(seed)
        apgd_losses.append(per_example_loss(model, make_attack("apgd", norm, num_steps=10)(model, x, y, EPS[norm]), y).mean())
    pgd_mean, apgd_mean = torch.stack(pgd_losses).mean(), torch.stack(apgd_losses).mean()
    assert apgd_mean >= pgd_mean - 1e-3 * pgd_mean.abs()
    assert apgd_mean > per_example_loss(trained_toy_net, x, y).mean()


@pytest.mark.parametrize("kind,norm", ATTACKS)
def test_restarts_valid_and_not_weaker(trained_toy_net, toy_batch, kind, norm):
    x, y = toy_batch
    eps = EPS[norm]
    torch.manual_seed(0)
    one = make_attack(kind, norm, num_steps=5, restarts=1)(trained_toy_net, x, y, eps)
    torch.manual_seed(0)
    three = make_attack(kind, norm, num_steps=5, restarts=3)(trained_toy_net, x, y, eps)
    assert_in_ball(three, x, eps, norm)
    assert per_example_loss(trained_toy_net, three, y).mean() >= 0.97 * per_example_loss(trained_toy_net, one, y).mean()


class LogitsLog(nn.Module):
    """Wraps a model and keeps every (input, logits) pair it sees."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        out = self.inner(x)
        self.calls.append((x.detach().clone(), out.detach().clone()))
        return out


@pytest.mark.parametrize("restarts", [1, 2])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_misclassified_returns_a_fooling_point(trained_toy_net, norm, restarts):
    x, y = toy_data(32, seed=11)
    eps = EPS[norm] / 3  # small enough that only some examples fall
    model = LogitsLog(trained_toy_net).eval()
    torch.manual_seed(0)
    x_adv = APGD(num_steps=10, restarts=restarts, select="misclassified", threat=THREATS[norm]())(model, x, y, eps)
    assert_in_ball(x_adv, x, eps, norm)
    # map every row the model saw back to its example (the nearest clean input) and note if it was fooled
    fooled_any = torch.zeros(len(y), dtype=torch.bool)
    rows_seen = 0
    for inputs, logits in model.calls:
        owner = torch.cdist(inputs.flatten(1), x.flatten(1)).argmin(1)
        fooled_any[owner[logits.argmax(1) != y[owner]]] = True
        rows_seen += len(inputs)
    assert 0 < fooled_any.sum() < len(y), "test needs a mix of fooled and robust examples"
    assert rows_seen < restarts * 11 * len(y), "fooled examples should stop costing forward passes"
    with torch.no_grad():
        fooled_final = trained_toy_net(x_adv).argmax(1) != y
    assert fooled_final[fooled_any].all()
    assert not fooled_final[~fooled_any].any()


class Trap(nn.Module):
    """A hand-made 3-class model where the highest-loss point of the ε-ball is *not* misclassified.

    With t = Σ(x − 0.5) / scale (t ∈ [−1, 1] on the ε-ball around the grey image, ``scale`` being the
    largest Σδ in the ball), the logits are (0, 0.02 − t²/2, −3 + 2.99·t). Near t = 0 (the random start)
    class 1 wins, so the true class 0 is misclassified with a low loss; the loss grows with t and at
    t = 1 (where gradient ascent goes) class 0 wins again, with a higher loss.
    """

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        t = (x - 0.5).flatten(1).sum(1) / self.scale
        return torch.stack([torch.zeros_like(t), 0.02 - 0.5 * t ** 2, -3 + 2.99 * t], 1) + 0 * self.dummy


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_misclassified_prefers_fooling_iterate_over_highest_loss(norm):
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    n, eps = x[0].numel(), EPS[norm]
    model = Trap(eps * n if norm == "linf" else eps * n ** 0.5).eval()
    results = {}
    for select in ("misclassified", "max_loss"):
        torch.manual_seed(0)
        x_adv = APGD(num_steps=10, select=select, threat=THREATS[norm]())(model, x, y, eps)
        assert_in_ball(x_adv, x, eps, norm)
        with torch.no_grad():
            logits = model(x_adv)
        results[select] = (logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none"))
    fooled, loss = results["misclassified"]
    assert fooled.all()
    # the highest-loss point is correctly classified: the two rules really differ here
    fooled_max, loss_max = results["max_loss"]
    assert not fooled_max.any() and (loss_max > loss).all()


# ------------------------------------------------------------------------------------ factories
def test_build_attack_apgd_defaults():
    attack = build_attack(AttackConfig())
    assert isinstance(attack, APGD)
    assert attack.num_steps == 7 and attack.restarts == 1 and attack.random_start is True
    assert attack.select == "max_loss"
    assert isinstance(attack.threat, Linf)


def test_build_attack_pgd_with_settings():
    cfg = AttackConfig(name="pgd", norm="l2", num_steps=3, rel_step_size=0.1, random_start=False, restarts=2)
    attack = build_attack(cfg)
    assert isinstance(attack, PGD)
    assert (attack.num_steps, attack.rel_step_size, attack.random_start, attack.restarts) == (3, 0.1, False, 2)
    assert isinstance(attack.threat, L2)


def test_build_attack_apgd_l2_restarts():
    attack = build_attack(AttackConfig(name="apgd", norm="l2", num_steps=4, restarts=3, random_start=False))
    assert isinstance(attack, APGD) and isinstance(attack.threat, L2)
    assert (attack.num_steps, attack.restarts, attack.random_start) == (4, 3, False)


def test_build_eval_attacks():
    attacks = build_eval_attacks(EvalConfig(), "linf")
    assert list(attacks) == ["apgd-ce"]
    attack = attacks["apgd-ce"]
    assert isinstance(attack, APGD) and isinstance(attack.threat, Linf)
    assert attack.select == "misclassified" and attack.num_steps == 10 and attack.restarts == 1 and attack.loss == "ce"
    cfg = EvalConfig(attacks=["cheap", "apgd-t", "pgd", "apgd-ce", "strong", "square"], num_steps=5, restarts=2,
                     square_queries=300)
    attacks = build_eval_attacks(cfg, "l2")
    assert list(attacks) == ["apgd-ce", "apgd-t", "pgd", "autoattack", "square"]  # presets expanded, no repeats
    assert attacks["apgd-t"].loss == "dlr-targeted" and attacks["apgd-t"].targets == 9
    assert build_eval_attacks(EvalConfig(attacks=["apgd-t"], targets=3), "linf")["apgd-t"].targets == 3
    pgd = attacks["pgd"]
    assert isinstance(pgd, PGD) and isinstance(pgd.threat, L2) and pgd.select == "misclassified"
    assert (pgd.num_steps, pgd.restarts, pgd.rel_step_size) == (5, 2, 0.25)
    assert attacks["autoattack"] == AutoAttack(norm="l2")
    assert attacks["square"] == AutoAttack(components=("square",), square_queries=300, norm="l2")
    reference = build_eval_attacks(cfg.__class__(attacks=["aa-apgd-ce"], num_steps=7), "linf")["aa-apgd-ce"]
    configured = reference._reference(nn.Linear(3, 4), torch.zeros(1, 3), 8 / 255, seed=0)
    assert configured.attacks_to_run == ["apgd-ce"]
    assert (configured.apgd.n_iter, configured.apgd.n_restarts, configured.apgd.n_iter_2) == (7, 1, 1)
    fab = build_eval_attacks(cfg.__class__(attacks=["fab-t"]), "linf")["fab-t"]
    configured = fab._reference(nn.Linear(3, 10), torch.zeros(1, 3), 8 / 255, seed=0)
    assert configured.attacks_to_run == ["fab-t"]  # AutoAttack's FAB-T: 100 iterations, 9 target classes
    assert (configured.fab.n_iter, configured.fab.n_target_classes) == (100, 9)
    described = describe_attack("apgd-t", attacks["apgd-t"])
    assert described["implementation"] == "robustft APGD" and described["threat"] == "l2"
    assert described["num_steps"] == 5 and described["restarts"] == 2
    assert describe_attack("autoattack", attacks["autoattack"])["implementation"] == "pyautoattack standard"


def test_every_eval_attack_is_registered_with_a_builder():
    assert {"apgd-ce", "apgd-t", "fab-t", "square", "autoattack"} <= set(EVAL_ATTACKS)  # what AutoAttack runs
    assert all(callable(EVAL_ATTACKS[name].build) and EVAL_ATTACKS[name].summary for name in EVAL_ATTACKS)


# ------------------------------------------------------------------------------------ every registered training attack
def _train_attacks() -> list:
    """Every (training attack, norm) the registry builds: a new entry is contract-tested without editing a list."""
    out = []
    for name in TRAIN_ATTACKS:
        for norm in ("linf", "l2"):
            if not TRAIN_ATTACKS.problems(AttackConfig(name=name, norm=norm), load_config(None, [])):
                out.append(pytest.param(name, norm, id=f"{name}-{norm}"))
    return out


@pytest.mark.parametrize("name,norm", _train_attacks())
def test_every_training_attack_keeps_the_contract(trained_toy_net, toy_batch, name, norm):
    assert_training_attack_contract(name, norm, trained_toy_net, toy_batch)
