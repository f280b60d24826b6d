"""Perturbations carried across epochs (attack.carry): they move with each example's augmentation, keep the
attack contract, and a killed run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from robustft.config import ConfigError, load_config
from robustft.data.loader import apply_augmentation, draw_augmentation
from robustft.objectives import build_objective
from robustft.train import checkpoint
from robustft.train.carry import CarriedPerturbations, move_back, move_with

from helpers import assert_same_tensors, run_killed_and_resumed, with_overrides, without_time


def test_a_perturbation_moves_with_the_flip_and_crop_of_its_example():
    g = torch.Generator().manual_seed(0)
    x, delta = torch.rand(16, 3, 12, 12, generator=g), torch.rand(16, 3, 12, 12, generator=g) - 0.5
    aug = draw_augmentation(16, torch.Generator().manual_seed(1), flip=True, pad_crop=2)
    assert aug.flip is not None and aug.flip.any() and not aug.flip.all()
    # the augmented image of x + δ is the augmented image of x plus δ moved with it
    torch.testing.assert_close(apply_augmentation(x + delta, aug), apply_augmentation(x, aug) + move_with(delta, aug))
    # moved back, δ is whole where the crop showed it and zero where the crop showed padding instead
    shown = move_back(move_with(torch.ones_like(delta), aug), aug)
    torch.testing.assert_close(move_back(move_with(delta, aug), aug), delta * shown)
    assert shown.sum() < shown.numel() and set(shown.unique().tolist()) == {0.0, 1.0}


def test_colour_jitter_and_rotation_are_refused_by_the_config_and_the_move():
    with pytest.raises(ConfigError, match="attack.carry: carried perturbations follow flips and crops only"):
        load_config(None, ["attack.carry=true", "data.rotation=10"])
    with pytest.raises(ConfigError, match="attack.carry: carried perturbations are for objective.name=adversarial"):
        load_config(None, ["attack.carry=true", "objective.name=trades"])
    aug = draw_augmentation(2, torch.Generator().manual_seed(0), rotation=10.0)
    with pytest.raises(ValueError, match="flips and crops only"):
        move_with(torch.zeros(2, 3, 4, 4), aug)


def test_starts_are_carried_points_or_fresh_ones_inside_the_ball():
    memory, eps = CarriedPerturbations.empty(8, (3, 6, 6)), 8 / 255
    x, index = torch.rand(4, 3, 6, 6), torch.tensor([5, 1, 7, 2])
    aug = draw_augmentation(4, torch.Generator().manual_seed(0), flip=True)
    fresh = memory.starts(x, index, aug, eps)
    assert ((fresh - x).abs() <= eps + 1e-6).all() and fresh.min() >= 0 and fresh.max() <= 1
    x_adv = (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    memory.update(x, x_adv, index, aug)
    assert memory.seen.tolist() == [False, True, True, False, False, True, False, True]
    torch.testing.assert_close(memory.starts(x, index, aug, eps), x_adv, atol=1e-3, rtol=0)  # float16 memory


def test_the_carrying_objective_keeps_the_attack_contract(tiny_config):
    cfg = with_overrides(tiny_config, ["attack.carry=true"])
    objective = build_objective(cfg)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).train()
    x, y, eps = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,)), 8 / 255
    start = (x + eps).clamp(0, 1)
    out = objective(model, x, y, eps, x_init=start)
    assert out.x_adv is not None and ((out.x_adv - x).abs() <= eps + 1e-6).all()
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1 and model.training
    assert all(p.grad is None for p in model.parameters())  # the attack leaves parameter gradients alone
    clean = objective(model, x, y, 0.0, x_init=start)
    assert clean.x_adv is None and clean.logits_adv is None  # ε = 0: no attack runs


def test_a_run_with_carried_perturbations_killed_and_resumed_ends_bit_identical(tiny_config, monkeypatch):
    cfg = with_overrides(tiny_config, ["attack.carry=true", "train.evaluate=false", "data.pad_crop=2",
                                       "data.flip=true", "schedule.t1=0", "schedule.t2=1"])
    straight, resumed = run_killed_and_resumed(cfg, monkeypatch, die_after=1)
    a, b = checkpoint.load_checkpoint(straight.checkpoint_path), checkpoint.load_checkpoint(resumed.checkpoint_path)
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["carry"], b["carry"])
    assert a["carry"]["seen"].all() and a["carry"]["delta"].abs().max() > 0
    assert without_time(straight) == without_time(resumed)
