"""BatchNorm folded into convolutions for the attack passes: the same function, the attack contract kept,
the evaluator's verdicts the model's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustft.attacks import APGD, FMN
from robustft.attacks.base import FoldedBatchNorm
from robustft.config import ModelConfig
from robustft.eval.evaluator import evaluate
from robustft.models import NotFoldableError, build_model, fold_batchnorm
from robustft.models.fold import FoldedCopy, conv_bn_pairs

from helpers import fit_briefly, toy_data


def conv_bn_net(classes: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
    net.train()
    with torch.no_grad():  # running statistics away from (0, 1), so folding has something to fold
        for _ in range(3):
            net(torch.rand(16, 3, 12, 12) * 2 + 0.5)
    return net


def timm_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_efficientnet", pretrained=False), 10)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16))
    return model


@pytest.mark.parametrize("make", [conv_bn_net, timm_model])
def test_the_folded_copy_computes_the_model_in_eval_mode_and_leaves_the_model_alone(make):
    model = make()
    x = torch.rand(6, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model, x)
    assert len(conv_bn_pairs(model)) > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert model.training and not folded.training
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]  # laid out channels-last: faster on CPUs
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(not p.requires_grad for p in folded.parameters()) and all(p.requires_grad for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_kept_copy_follows_the_models_weights_and_statistics():
    model = conv_bn_net()
    x = torch.rand(4, 3, 12, 12)
    kept = FoldedCopy(model, x)
    with torch.no_grad():  # a training step's worth of change: weights and BatchNorm statistics
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.train()
        model(torch.rand(16, 3, 12, 12))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(kept()(x), model(x), rtol=1e-4, atol=1e-5)


class BatchNormOnTheInput(nn.Module):
    """A BatchNorm registered after a convolution but applied to the input: registration order is not data flow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.bn(x)).mean((2, 3)))


def test_a_model_whose_pairs_do_not_fold_is_refused_and_attacked_unfolded(caplog):
    model, x = BatchNormOnTheInput(), torch.rand(4, 3, 8, 8)
    with pytest.raises(NotFoldableError, match="changed the model's outputs"):
        fold_batchnorm(model, x)
    attack = FoldedBatchNorm(APGD(num_steps=2))
    assert attack.folded(model, x) is model and "unfolded" in caplog.text


def test_the_folded_attack_keeps_the_attack_contract():
    model, x, y, eps = conv_bn_net(), torch.rand(8, 3, 12, 12), torch.randint(0, 4, (8,)), 8 / 255
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    attack = FoldedBatchNorm(APGD(num_steps=3))
    torch.manual_seed(1)
    x_adv = attack(model, x, y, eps)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training and all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    assert attack(model, x, y, 0.0) is x and not calls  # ε = 0 is the identity, the model never runs


def test_the_folded_attack_finds_what_the_unfolded_one_finds():
    model, x, y = conv_bn_net(), torch.rand(16, 3, 12, 12), torch.randint(0, 4, (16,))
    model.eval()
    torch.manual_seed(3)
    plain = APGD(num_steps=5)(model, x, y, 16 / 255)
    torch.manual_seed(3)
    folded = FoldedBatchNorm(APGD(num_steps=5))(model, x, y, 16 / 255)
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-4)


def test_a_minimum_norm_point_counts_only_where_the_model_itself_misclassifies_it():
    model, x = conv_bn_net(), torch.rand(6, 3, 12, 12)
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)

    class Claims:
        """A minimum-norm attack that claims radius 0.01 for x itself (which the model classifies correctly)."""

        def min_norm(self, model, x, y):
            return x.clone(), torch.full((len(x),), 0.01)

        def __call__(self, model, x, y, eps):
            return x

    _, radius = FoldedBatchNorm(Claims()).min_norm(model, x, y)
    assert torch.isinf(radius).all()


def test_evaluation_on_the_folded_copy_gives_the_unfolded_evidence():
    x, y = toy_data(200, seed=4)
    model = fit_briefly(conv_bn_net(classes=3), x, y, steps=60)
    x, y = toy_data(40, seed=5)
    attacks = {"fmn": FMN(steps=20), "apgd-ce": APGD(num_steps=5, select="misclassified")}
    grid = [0, 2 / 255, 4 / 255, 8 / 255]
    on = evaluate(model, (x, y), grid, attacks, mode="downward", warm_start=True, bootstrap=0, fold_bn=True)
    off = evaluate(model, (x, y), grid, attacks, mode="downward", warm_start=True, bootstrap=0, fold_bn=False)
    assert on.protocol["fold_bn"] is True and off.protocol["fold_bn"] is False
    np.testing.assert_array_equal(on.correct, off.correct)
    assert 0 < on.correct[-1].sum() < on.correct[0].sum()  # the attacks broke some examples, not all
