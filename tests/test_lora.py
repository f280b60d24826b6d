"""LoRA adapters: a fresh adapter changes nothing, merging keeps the function and the plain state dict, only
linears and pointwise convolutions are wrapped, gradients reach the input and the factors, and the update is
peft's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from robustft.config import ModelConfig
from robustft.errors import ConfigError
from robustft.models import build_model
from robustft.models.lora import (
    LoRAConv2d,
    LoRALinear,
    add_lora,
    is_lora,
    is_pointwise,
    lora_parameter_names,
    merge_lora,
)


def efficientnet(seed: int = 0) -> nn.Module:
    """A RobustClassifier on timm's test_efficientnet, in eval mode."""
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="test_efficientnet", pretrained=False), 10).eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.GELU(), nn.Linear(32, 5))


def cnn(stride: int = 2) -> nn.Module:
    """A 3×3 conv, a pointwise conv with ``stride``, a depthwise conv, a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1, stride=stride),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 5))


def perturb(model: nn.Module, seed: int = 1) -> None:
    """Move every B factor away from zero, so the adapters change the function."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, 0.1)


def pixels(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("build, size", [(efficientnet, 16), (mlp, 8), (cnn, 8)], ids=["efficientnet", "mlp", "cnn"])
def test_fresh_adapters_give_the_plain_logits_exactly(build, size):
    model = build()
    x = pixels(size=size)
    with torch.no_grad():
        before = model(x)
        names = add_lora(model, rank=4, alpha=16)
        after = model(x)
    assert names and all(is_lora(model.get_submodule(n)) for n in names)
    assert torch.equal(after, before)


def test_merge_gives_the_adapted_logits_and_the_plain_state_dict():
    model, x = efficientnet(), pixels(size=16)
    plain_keys = list(model.state_dict())
    names = add_lora(model, rank=4, alpha=8)
    perturb(model)
    with torch.no_grad():
        adapted = model(x)
        assert merge_lora(model) == len(names)
        merged = model(x)
    assert (merged - adapted).abs().max() < 1e-5
    assert not any(is_lora(m) for m in model.modules())
    assert list(model.state_dict()) == plain_keys

    fresh = efficientnet(seed=7)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), merged, rtol=0, atol=1e-6)


def test_merge_keeps_the_base_layer_type_and_the_update():
    model, x = cnn(), pixels()
    add_lora(model, rank=2)
    perturb(model)
    with torch.no_grad():
        adapted = model(x)
        assert merge_lora(model) == 2
        assert merge_lora(model) == 0
        merged = model(x)
    assert type(model[2]) is nn.Conv2d and type(model[7]) is nn.Linear
    assert (merged - adapted).abs().max() < 1e-5


def test_only_linears_and_pointwise_convs_are_wrapped():
    model = efficientnet()
    plain = dict(model.named_modules())
    pointwise = {n for n, m in plain.items() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.groups == 1}
    names = add_lora(model, rank=2, skip=("head",))

    assert set(names) == pointwise and "backbone.blocks.3.0.conv_pw" in names
    assert isinstance(model.backbone.conv_stem, nn.Conv2d)  # 3×3 stem
    assert isinstance(model.backbone.blocks[3][0].conv_dw, nn.Conv2d)  # depthwise
    assert isinstance(model.backbone.blocks[3][0].conv_pw, LoRAConv2d)
    assert type(model.head) is nn.Linear
    for name in names:
        assert is_pointwise(model.get_submodule(name).base)
    assert set(lora_parameter_names(model)) == {f"{n}.{p}" for n in names for p in ("lora_a", "lora_b")}
    assert "backbone.blocks.3.0.conv_pw.base.weight" in dict(model.named_parameters())


def test_targets_and_skip_choose_the_layers():
    assert add_lora(efficientnet(), targets="linear") == ["head"]
    assert add_lora(cnn(), targets=("pointwise",)) == ["2"]
    model = nn.Sequential()
    model.add_module("head", nn.Linear(4, 4))
    model.add_module("header", nn.Linear(4, 4))
    assert add_lora(model, skip="head") == ["header"]  # a prefix matches whole names, not their beginnings


def test_wrappers_keep_shapes_dtype_and_scale():
    layer = LoRALinear(nn.Linear(6, 3), rank=2, alpha=3.0)
    assert layer.lora_a.shape == (2, 6) and layer.lora_b.shape == (3, 2) and layer.scale == 1.5
    assert not layer.lora_b.any() and layer.lora_a.abs().max() <= 1 / 6 ** 0.5  # kaiming_uniform_(a=√5) bound
    conv = LoRAConv2d(nn.Conv2d(6, 3, 1, stride=2).double(), rank=4, alpha=4.0)
    assert conv.lora_a.shape == (4, 6) and conv.lora_a.dtype == torch.float64 and conv.scale == 1.0
    assert conv(torch.rand(1, 6, 5, 5, dtype=torch.float64)).shape == (1, 3, 3, 3)


def test_input_and_factor_gradients_flow():
    model, x = efficientnet(), pixels(size=16)
    y = torch.arange(len(x)) % 10
    add_lora(model, rank=2)
    perturb(model)  # with B = 0 the gradient of A is zero
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        if name.endswith(("lora_a", "lora_b")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_torch_func_input_gradient_matches_autograd():
    model, x = cnn(), pixels()
    y = torch.arange(len(x)) % 5
    add_lora(model, rank=2)
    perturb(model)
    params = dict(model.named_parameters())
    by_func = grad(lambda x: F.cross_entropy(functional_call(model, params, (x,)), y))(x)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    assert x.grad is not None
    torch.testing.assert_close(by_func, x.grad)


def test_channels_last_gives_the_same_logits_and_gradients():
    model, x = efficientnet(), pixels(size=16)
    add_lora(model, rank=2)
    perturb(model)
    with torch.no_grad():
        contiguous = model(x)
    model = model.to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_(True)
    logits = model(x_cl)
    logits.sum().backward()
    torch.testing.assert_close(logits.detach(), contiguous, rtol=1e-5, atol=1e-5)
    assert x_cl.grad is not None and x_cl.grad.abs().sum() > 0


def test_multihead_attention_projection_is_left_alone():
    torch.manual_seed(0)

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0])

    model = Attend()
    assert add_lora(model, rank=2) == ["fc"]
    assert model(torch.rand(2, 4, 8)).shape == (2, 4, 3)


def test_peft_parity():
    peft = pytest.importorskip("peft")
    rank, alpha = 4, 12
    ours, theirs = cnn(stride=2), cnn(stride=2)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=["2", "7"])
    peft.inject_adapter_in_model(config, theirs)
    assert add_lora(ours, rank=rank, alpha=alpha) == ["2", "7"]
    torch.manual_seed(1)
    with torch.no_grad():
        for index in (2, 7):
            layer, mine = theirs[index], ours[index]
            layer.lora_B["default"].weight.normal_(0, 0.1)
            assert layer.scaling["default"] == mine.scale
            mine.lora_a.copy_(layer.lora_A["default"].weight.reshape(rank, -1))
            mine.lora_b.copy_(layer.lora_B["default"].weight.reshape(-1, rank))
            torch.testing.assert_close(mine.delta_weight().view_as(layer.base_layer.weight),
                                       layer.get_delta_weight("default"), rtol=0, atol=1e-7)
        x = pixels()
        assert not torch.allclose(theirs(x), cnn(stride=2)(x), atol=1e-3)  # the adapters do change the function
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


def test_clear_errors():
    with pytest.raises(ConfigError, match="rank: want an integer ≥ 1, got 0"):
        add_lora(mlp(), rank=0)
    with pytest.raises(ValueError, match="target 'depthwise': not one of linear, pointwise"):
        add_lora(mlp(), targets=("linear", "depthwise"))
    with pytest.raises(ConfigError, match=r"no layer to adapt in Sequential.*holds .*Conv2d.*3×3 depthwise"):
        add_lora(nn.Sequential(nn.Conv2d(3, 3, 3, groups=3), nn.ReLU()))
    with pytest.raises(ConfigError, match=r"outside 1; it holds .*Linear"):
        add_lora(nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 2))), skip=("1",))
    model = mlp()
    add_lora(model)
    with pytest.raises(ConfigError, match="LoRALinear"):  # the wrappers' own layers are not wrapped again
        add_lora(model)
