"""The paper's backbones and presets: every preset validates and matches its generator; every backbone
builds without weights, normalises as its pretrained weights expect (CLIP mean/std for CLIP towers) and
uses every parameter in its forward pass (as DistributedDataParallel needs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustft.config import PAPER_DATASETS, ModelConfig, load_config
from robustft.experiments.presets import PAPER_BACKBONES, PAPER_EPS, PAPER_PROTOCOL, write_presets
from robustft.models import build_model
from robustft.models.openclip import CLIP_MEAN, CLIP_STD

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "paper"
PRESETS = sorted(PRESET_DIR.glob("*.yaml"))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EXPECTED_NORMALISATION = {
    "vit_b": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # AugReg weights are trained on inputs scaled to [-1, 1]
    "swin_b": IMAGENET, "convnext_b": IMAGENET, "resnet50": IMAGENET,
    "clip_vit_b": (CLIP_MEAN, CLIP_STD), "clip_convnext_b_w": (CLIP_MEAN, CLIP_STD),
}


def test_one_preset_per_backbone_dataset_and_eps():
    assert set(PAPER_PROTOCOL) == set(PAPER_DATASETS)
    assert len(PRESETS) == len(PAPER_BACKBONES) * len(PAPER_PROTOCOL) * len(PAPER_EPS) == 60


def test_presets_are_what_the_generator_writes(tmp_path):
    written = write_presets(tmp_path)
    assert sorted(p.name for p in written) == [p.name for p in PRESETS]
    for path in written:
        assert path.read_text() == (PRESET_DIR / path.name).read_text(), f"re-run scripts/make_presets.py ({path.name})"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_validates_and_follows_the_protocol(path):
    backbone, dataset, eps = path.stem.split("-")
    cfg = load_config(path)
    assert cfg.model.name == PAPER_BACKBONES[backbone]
    assert cfg.data.name == dataset and cfg.data.image_size == 224
    assert (cfg.data.n_val, cfg.data.n_test) == PAPER_PROTOCOL[dataset][1:]
    assert cfg.attack.eps == int(eps.removeprefix("eps")) / 255
    assert (cfg.attack.name, cfg.attack.num_steps, cfg.eval.num_steps) == ("apgd", 7, 10)
    assert (cfg.schedule.kind, cfg.schedule.t1, cfg.schedule.t2, cfg.train.epochs) == ("hinge", 12, 37, 50)
    assert cfg.data.color_jitter == 0.25 and cfg.data.flip and cfg.data.rotation > 0
    assert path.read_text().startswith(f"# robustft train configs/paper/{path.name}")


@pytest.mark.heavy
@pytest.mark.parametrize("backbone", sorted(PAPER_BACKBONES))
def test_paper_backbone_builds_without_weights_with_its_normalisation(backbone):
    if backbone == "clip_convnext_b_w":
        pytest.importorskip("open_clip", reason="the clip extra (open_clip_torch) is installed by scripts/test.sh")
    model = build_model(ModelConfig(name=PAPER_BACKBONES[backbone], pretrained=False), num_classes=7)
    mean, std = EXPECTED_NORMALISATION[backbone]
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(std))
    assert model.head.out_features == 7 and model.head.in_features == model.backbone.num_features
    if backbone in ("resnet50", "clip_convnext_b_w"):  # the convolutional ones run at any size: check the features
        with torch.no_grad():
            assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    # DistributedDataParallel averages only the gradients of parameters that take part in the forward pass
    model.train()(torch.rand(2, 3, 224, 224)).sum().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_open_clip_name_errors():
    pytest.importorskip("open_clip")
    with pytest.raises(ValueError, match="no architecture"):
        build_model(ModelConfig(name="open_clip:not_a_model", pretrained=False), num_classes=3)
    with pytest.raises(ValueError, match="names no pretrained tag"):
        build_model(ModelConfig(name="open_clip:convnext_base_w", pretrained=True), num_classes=3)


@pytest.mark.heavy
def test_open_clip_tower_loads_a_local_clip_checkpoint(tmp_path):
    """Offline use: the whole CLIP state dict (visual.* and text tensors) or the tower's own tensors."""
    pytest.importorskip("open_clip")
    import open_clip
    from safetensors.torch import save_file

    clip = open_clip.create_model("convnext_base_w", pretrained=None)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    torch.save(clip.visual.state_dict(), tmp_path / "tower.pt")
    for file in ("open_clip_model.safetensors", "tower.pt"):
        cfg = ModelConfig(name=PAPER_BACKBONES["clip_convnext_b_w"], checkpoint=str(tmp_path / file))
        model = build_model(cfg, num_classes=3)
        for key, value in clip.visual.state_dict().items():
            assert torch.equal(model.backbone.visual.state_dict()[key], value), (file, key)


def test_open_clip_offline_error_names_the_local_file(monkeypatch):
    open_clip = pytest.importorskip("open_clip")

    def offline(arch, pretrained=None, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")
        raise AssertionError("only the pretrained build is expected here")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="model.checkpoint=PATH .*open_clip_model.safetensors"):
        build_model(ModelConfig(name=PAPER_BACKBONES["clip_convnext_b_w"]), num_classes=3)


def test_open_clip_missing_gives_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "open_clip" else real_import(name, *a, **k))
    with pytest.raises(ImportError, match=r"pip install 'robustft\[clip\]'"):
        build_model(ModelConfig(name=PAPER_BACKBONES["clip_convnext_b_w"], pretrained=False), num_classes=3)
