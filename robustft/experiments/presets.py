"""The paper's configurations as presets: one YAML per backbone × dataset × ε_g under ``configs/paper/``.

The protocol (SPEC §4): 224×224 inputs, the paper's augmentation (flip, ColorJitter 0.25, small rotation),
APGD-CE with 7 steps while training, 50 epochs with the two-hinge schedule T1 = 12, T2 = 37 (fix: add
``--set schedule.kind=fix``), AdamW with a cosine LR, evaluation by APGD-CE 10 steps on 0, 1/255, …, ε_g.
The paper tunes LR and weight decay by ASHA on fix and reuses them for the schedule; the presets hold
starting values, to be tuned with ``robustft tune PRESET --preset paper``. Batch size and warm-up length
are not given by the paper: ours are 128 and 5 epochs. ``scripts/make_presets.py`` writes the files.
"""

from __future__ import annotations

from pathlib import Path

PAPER_BACKBONES = {
    "vit_b": "vit_base_patch16_224.augreg_in1k",
    "swin_b": "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    "convnext_b": "convnext_base.fb_in22k_ft_in1k",
    "resnet50": "resnet50.a1_in1k",
    "clip_vit_b": "vit_base_patch16_clip_224.laion2b",
    "clip_convnext_b_w": "open_clip:convnext_base_w.laion2b_s13b_b82k",
}
"""Short name → model.name of the paper's six backbones (timm ids, and the OpenCLIP image tower)."""

PAPER_PROTOCOL = {
    # name: (classes, n_val, n_test); n_test subsamples the test split (stratified, seeded)
    "fgvc_aircraft": (100, 3333, 1000),
    "caltech256": (257, 771, None),
    "stanford_cars": (196, 1222, 1000),
    "cub200": (200, 600, None),
    "stanford_dogs": (120, 1200, None),
}
"""The paper's datasets: class count, validation size and test subsample (SPEC §4)."""

PAPER_EPS = {"4": "4/255", "8": "8/255"}


def preset_name(backbone: str, dataset: str, eps: str) -> str:
    """File stem of a preset, e.g. ``convnext_b-stanford_cars-eps4``."""
    return f"{backbone}-{dataset}-eps{eps}"


def preset_yaml(backbone: str, dataset: str, eps: str) -> str:
    """The YAML text of one preset, starting with the commands that run it."""
    name = preset_name(backbone, dataset, eps)
    classes, n_val, n_test = PAPER_PROTOCOL[dataset]
    channels_last = "resnet" in backbone or "convnext" in backbone
    return f"""\
# robustft train configs/paper/{name}.yaml --set data.root=/data/{dataset}
# torchrun --nproc_per_node 8 -m robustft train configs/paper/{name}.yaml --set data.root=/data/{dataset}
# Fix (the baseline): add --set schedule.kind=fix --set train.run_name={name}-fix
# {PAPER_BACKBONES[backbone]} → {dataset} ({classes} classes) at ε_g = {PAPER_EPS[eps]}, the paper's protocol.
# LR and weight decay are starting values: tune them with `robustft tune THIS.yaml --preset paper`.
data:
  name: {dataset}
  root: null
  split_dir: null
  image_size: 224
  n_val: {n_val}
  n_test: {'null' if n_test is None else n_test}
  batch_size: 128
  eval_batch_size: 256
  flip: true
  color_jitter: 0.25
  rotation: 10
  num_workers: 8
model:
  name: {PAPER_BACKBONES[backbone]}
  pretrained: true
attack:
  eps: {PAPER_EPS[eps]}
  norm: linf
  name: apgd
  num_steps: 7
objective:
  name: adversarial
schedule:
  kind: hinge
  t1: 12
  t2: 37
optim:
  lr: 1.0e-4
  weight_decay: 0.05
  warmup_epochs: 5
train:
  epochs: 50
  precision: auto
  channels_last: {str(channels_last).lower()}
  out_dir: runs/paper
  delay_threshold: 0.05
  val_adv_n: 512
eval:
  eps_step: 1/255
  attacks: [apgd-ce]
  num_steps: 10
  n: null
"""


def write_presets(out_dir: str | Path) -> list[Path]:
    """Write every preset into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for backbone in PAPER_BACKBONES:
        for dataset in PAPER_PROTOCOL:
            for eps in PAPER_EPS:
                path = out / f"{preset_name(backbone, dataset, eps)}.yaml"
                path.write_text(preset_yaml(backbone, dataset, eps))
                paths.append(path)
    return paths
