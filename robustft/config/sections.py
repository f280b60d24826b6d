"""The config sections: frozen dataclasses whose fields carry their unit in a docstring."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from robustft.errors import ConfigError  # noqa: F401  (re-exported: robustft.config.ConfigError)

EPS_KEYS = {("attack", "eps"), ("eval", "eps_step"), ("eval", "eps_grid")}


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion_mnist"
    """Dataset: ``fashion_mnist``, ``digits``, ``imagefolder``, or one of the paper's: ``fgvc_aircraft``,
    ``caltech256``, ``stanford_cars``, ``cub200``, ``stanford_dogs`` (layouts in robustft/data/paper.py)."""
    root: str | None = None
    """Folder of the data: for ``imagefolder`` it holds ``train/`` and ``test/`` (and optionally ``val/``)
    with one sub-folder per class; for ``fashion_mnist`` it overrides where the idx files are looked for; for
    the paper's datasets it is the extracted archive (null: ``cache_dir``, downloaded where torchvision can)."""
    split_dir: str | None = None
    """Folder of split files ``train.json``, ``val.json``, ``test.json`` (relative image path → label, the
    public VPT format) for caltech256, cub200 and stanford_dogs; null uses the documented seeded split."""
    image_size: int = 32
    """Side of the square images fed to the model, in pixels."""
    n_train: int | None = None
    """Training examples kept (stratified, seeded); null keeps all."""
    n_val: int = 1000
    """Validation examples, split off the training set (stratified, seeded) unless the data has its own."""
    n_test: int | None = None
    """Test examples kept (stratified, seeded); null keeps all."""
    split_seed: int = 42
    """Seed of the validation split and of the subsets."""
    batch_size: int = 64
    """Training batch size per optimiser step, in examples, summed over all processes (the effective batch)."""
    micro_batch_size: int | None = None
    """Examples per forward/backward pass and process; gradients are accumulated up to ``batch_size``. Null
    uses batch_size / processes. Runs with the same micro_batch_size on 1 or N processes are the same run."""
    eval_batch_size: int = 256
    """Batch size for validation and evaluation, in examples."""
    flip: bool = True
    """Random horizontal flip during training."""
    pad_crop: int = 0
    """Pad by this many pixels and randomly crop back during training; 0 turns it off."""
    color_jitter: float = 0.0
    """Random brightness, contrast and saturation factors in [1 − c, 1 + c] during training (torchvision's
    ColorJitter(c, c, c); the paper uses 0.25); 0 turns it off."""
    rotation: float = 0.0
    """Random rotation in [−r, r] degrees during training (the paper's "small rotation"; its presets use 10);
    0 turns it off."""
    num_workers: int = 0
    """Threads decoding image files ahead of the training loop; 0 reads in the loop (fine for in-memory data)."""
    cache_dir: str = "~/.cache/robustft"
    """Where downloaded datasets are kept."""
    download: bool = True
    """Allow downloading a dataset that is not found locally."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "efficientnet_lite0"
    """Backbone: ``efficientnet_lite0`` (embedded ImageNet weights, works offline), any timm model id, or an
    OpenCLIP image tower ``open_clip:ARCH.TAG`` (the ``clip`` extra), e.g.
    ``open_clip:convnext_base_w.laion2b_s13b_b82k``."""
    pretrained: bool = True
    """Load pretrained weights (embedded ones, or timm's hub for other backbones)."""
    checkpoint: str | None = None
    """Local backbone weights (.safetensors, or a torch file loaded with weights_only); overrides the hub."""
    num_classes: int | None = None
    """Classes of the new linear head; null takes them from the dataset."""
    drop_rate: float = 0.0
    """Dropout before the head, probability."""
    activation: str | None = None
    """Replace the backbone's ReLU and ReLU6 activations with a smooth one: ``silu``, ``gelu`` or ``softplus``
    (smooth adversarial training, Xie et al. 2020: smooth activations give attacks, and so adversarial
    training, better gradients); null keeps the backbone's. The pretrained weights are kept as they are."""
    bn_momentum: float | None = 0.1
    """BatchNorm momentum set on every BatchNorm layer (PyTorch convention); null keeps the backbone's."""


@dataclass(frozen=True)
class FinetuneConfig:
    mode: str = "full"
    """What is trained: ``full`` (every weight, the paper's), ``linear`` (the head alone, on the frozen
    backbone's features, its normalisation statistics frozen too), ``bitfit`` (the head, every bias and the
    normalisation layers' weights), ``lora`` (the head and low-rank adapters on the backbone's linear and 1×1
    convolution layers; robustft/models/lora.py). Frozen weights get no optimiser state."""
    rank: int | None = None
    """lora: rank of each adapter; null: 8."""
    alpha: float | None = None
    """lora: the adapter's update is alpha/rank · B·A; null: alpha = rank (scale 1)."""
    targets: list[str] | None = None
    """lora: the layers adapted, ``linear`` and/or ``pointwise`` (1×1 convolutions); null: both."""
    head: str = "random"
    """How the new head starts: ``random`` (the paper's), ``linear_probe`` (LP-FT, Kumar et al. 2022: the first
    probe_epochs train the head alone, clean, on the frozen backbone) or ``robust_linear_probe`` (RoLI, Hua et
    al. 2024: the same with the training attack at ε_g); the fine-tuning of ``mode`` follows."""
    probe_epochs: int | None = None
    """linear_probe, robust_linear_probe: the epochs of probing, the first of ``train.epochs`` (they count in the
    run's budget; the ε schedule's epochs are the run's); null: 5."""


@dataclass(frozen=True)
class AttackConfig:
    eps: float = 8 / 255
    """Target radius ε_g of the threat model, pixel units (e.g. 8/255)."""
    norm: str = "linf"
    """Threat model: ``linf`` or ``l2``."""
    name: str = "apgd"
    """Training attack: ``apgd`` (APGD-CE, step-size free), ``pgd``, ``fgsm`` (one step from a random start,
    FGSM-RS) or ``nfgsm`` (N-FGSM: one step from x plus noise in [−kε, kε], not projected back to the ε-ball;
    robustft/attacks/fgsm.py). apgd, pgd and fgsm return points inside the ε-ball; nfgsm by design reaches
    (noise_mult + rel_step_size)·ε."""
    num_steps: int = 7
    """Attack iterations (gradient evaluations) per restart of ``apgd`` and ``pgd`` (fgsm and nfgsm take one)."""
    rel_step_size: float | None = None
    """Step size as a fraction of the current ε; null uses the attack's own default: 0.25 for pgd, 1.25 for
    fgsm (Wong et al.), 1.0 for nfgsm (de Jorge et al.). APGD starts at 2ε and needs none."""
    noise_mult: float = 2.0
    """``nfgsm`` only: half-width of the uniform start noise, as a multiple of ε (k; 2 in de Jorge et al.)."""
    random_start: bool = True
    """Start from a uniformly random point of the ε-ball (apgd, pgd, fgsm)."""
    restarts: int = 1
    """Random restarts of apgd and pgd; the highest-loss result per example is kept."""
    carry: bool = False
    """Start each training example's attack from its perturbation of the previous epoch, moved with the
    example's flip and crop (ATTA, Zheng et al. 2020; robustft/train/carry.py): a few steps per epoch add up
    across epochs. apgd and pgd, objective adversarial, no colour jitter or rotation; one process."""
    fold_bn: bool = True
    """Craft the training attack on a copy of the model with BatchNorm folded into the convolutions (eval
    mode, where the attack runs: the same function up to float rounding, each attack about 0.85–0.9× the
    cost, BENCHMARKS.md); models without BatchNorm after a convolution are attacked as they are."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keys that a kind registered elsewhere adds to this section, beyond the fields above (its registry entry's
    ``keys`` and ``defaults``): written flat in YAML (``attack: {name: NAME, KEY: VALUE}``) and read here, each kind's
    defaults filled in when the config is loaded; empty for the kinds robustft ships."""


@dataclass(frozen=True)
class ObjectiveConfig:
    name: str = "adversarial"
    """``standard`` (cross-entropy on clean inputs), ``adversarial`` (Madry: cross-entropy on attacked
    inputs) or ``trades`` (clean cross-entropy + beta · KL(clean ‖ attacked))."""
    beta: float = 6.0
    """``trades`` only: weight of the KL term, dimensionless (6, the original's CIFAR-10 value; 1 weighs
    both terms alike; larger trades clean accuracy for robustness)."""
    trades_inner: str = "kl"
    """``trades`` only: the inner maximisation: ``kl`` (the original: PGD on the KL divergence, attack.num_steps
    steps of attack.rel_step_size × ε) or ``ce`` (the training attack on cross-entropy, attack.name)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keys that a kind registered elsewhere adds to this section, beyond the fields above (its registry entry's
    ``keys`` and ``defaults``): written flat in YAML (``objective: {name: NAME, KEY: VALUE}``) and read here, each kind's
    defaults filled in when the config is loaded; empty for the kinds robustft ships."""


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "hinge"
    """ε schedule, ε(t) = α(t)·ε_g (formulas in robustft/schedules.py): ``fix`` (α = 1), ``hinge``
    (Epsilon-Scheduling: 0 until t1, linear to 1 at t2), ``warmup`` (hinge with t1 = 0), ``switch`` (hinge
    with t1 = t2), ``linear`` (0 at the start to 1 at the end of training), ``uniform`` (α ~ U[0, 1] drawn
    once per epoch or step, seeded by train.seed), ``piecewise`` (linear through ``points``) or ``auto``
    (0 until validation clean accuracy stops improving, then linear to 1 at t2)."""
    t1: int | float | None = None
    """First hinge: an integer number of epochs, or a float fraction of training in [0, 1]
    (default 0.25 for hinge, 0.5 for switch)."""
    t2: int | float | None = None
    """Second hinge (end of the ramp), same units as t1 (default 0.75; for auto, the end of training: the last
    epoch)."""
    granularity: str = "epoch"
    """``epoch`` (ε constant within an epoch, as in the paper) or ``step`` (updated every optimiser step)."""
    points: list[list[float]] | None = None
    """``piecewise`` only: [progress, α] pairs, progress a fraction of training in [0, 1] (increasing),
    α ≥ 0 the multiplier of ε_g, e.g. [[0, 0], [0.25, 0], [0.75, 1], [1, 1]] (the default hinge)."""
    patience: int = 5
    """``auto`` only: epochs without improvement of validation clean accuracy before the ramp starts."""
    tolerance: float = 0.02
    """``auto`` only: the least gain that counts as an improvement (see tolerance_mode)."""
    tolerance_mode: str = "absolute"
    """``auto`` only: ``absolute`` (tolerance in accuracy, 0.02 = 2 points) or ``relative`` (a fraction of
    the best accuracy so far, 0.02 = 2 %)."""
    latest_t1: int | float | None = None
    """``auto`` only: the ramp starts after this epoch (integer, or float fraction of training) even if
    validation accuracy is still improving, so a short run keeps a ramp; null never forces it (the paper)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keys that a kind registered elsewhere adds to this section, beyond the fields above (its registry entry's
    ``keys`` and ``defaults``): written flat in YAML (``schedule: {kind: NAME, KEY: VALUE}``) and read here, each kind's
    defaults filled in when the config is loaded; empty for the kinds robustft ships."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    """AdamW learning rate of the backbone, per optimiser step (peak of the cosine schedule)."""
    head_lr: float | None = None
    """Learning rate of the new head; null uses ``lr``."""
    weight_decay: float = 0.05
    """Decoupled weight decay of the backbone (never applied to norms and biases)."""
    head_weight_decay: float | None = None
    """Weight decay of the head; null uses ``weight_decay``."""
    beta1: float = 0.9
    """AdamW β1."""
    beta2: float = 0.999
    """AdamW β2."""
    warmup_epochs: float = 1.0
    """Linear LR warm-up length, in epochs (may be fractional)."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the cosine decay, as a fraction of the peak."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; null turns clipping off."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    """Training length, in epochs."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation and attacks."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    run_name: str | None = None
    """Run directory name; null uses the config file's name."""
    val_adv_n: int = 256
    """Validation examples attacked (at ε_g, with the training attack) after every epoch; 0 turns it off."""
    monitor_n: int = 128
    """Validation examples of the catastrophic-overfitting monitor (robustft/train/monitor.py): after every
    epoch at ε > 0, accuracy on them under the training attack and under APGD-CE at the epoch's ε; 0 turns it
    off."""
    monitor_steps: int = 10
    """Iterations of the monitor's reference attack, APGD-CE (at least 10)."""
    overfit_gap: float = 0.10
    """Accuracy gap (0.10 = 10 points) between the training attack and the reference attack above which an
    epoch raises ``catastrophic_overfitting``."""
    on_overfit: str = "warn"
    """What a raised ``catastrophic_overfitting`` does: ``warn`` (log it, train on) or ``stop`` (end training
    before checkpointing that epoch, so the run keeps and evaluates the last good checkpoint)."""
    ema_decay: float | None = None
    """Decay of an exponential moving average of the weights (e.g. 0.99 ≈ the last 100 steps, with warm-up;
    robustft/train/ema.py); validation, the monitor, checkpoint selection and the evaluation use the
    averaged weights. Null turns it off."""
    select: str = "final"
    """Which weights are evaluated: ``final`` (the last epoch's, the paper's choice) or ``best_robust`` (the
    epoch with the highest monitor accuracy under APGD-CE among epochs trained at ε_g; needs the monitor)."""
    log_every: int = 50
    """Write a step row to metrics.jsonl every this many optimiser steps."""
    evaluate: bool = True
    """Run the final evaluation (eval section) on the test split after training."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` (autocast for the training forward passes; faster on recent GPUs, slower on most
    CPUs) or ``auto`` (bf16 on CUDA devices that support it, else fp32). Evaluation always runs in fp32."""
    attack_fp32: bool = True
    """With bf16: craft the training attack in fp32, so mixed precision does not weaken it."""
    channels_last: bool | str = "auto"
    """Keep the model and batches in channels-last memory layout: ``true``, ``false`` or ``auto`` (channels-last
    for models with 2-D convolutions: 2.2–2.4× faster training and attack steps for EfficientNet-Lite0 on CPU,
    BENCHMARKS.md, and the usual choice for convolutions on GPUs; the default layout otherwise)."""
    compile: bool = False
    """Compile the model's forward pass with ``torch.compile`` (training and attacks; evaluation stays eager)."""
    delay_threshold: float = 0.05
    """Validation clean accuracy (fraction) whose first crossing defines the delay time; the paper's 0.05
    suits 100–200 classes, raise it above chance (1/classes) for fewer."""


@dataclass(frozen=True)
class EvalConfig:
    eps_grid: list[float] | None = None
    """ε values to evaluate, pixel units; null uses 0, eps_step, ..., ε_g."""
    eps_step: float = 1 / 255
    """Spacing of the default grid, pixel units."""
    eps_weights: list[float] | None = None
    """Relative weight (density) of each grid ε in the expected robustness, one per grid point including
    ε = 0; null weighs ε uniformly on [0, ε_g], the paper's metric."""
    attacks: list[str] = field(default_factory=lambda: ["apgd-ce"])
    """Evaluation attacks, run in order; an example counts as robust at ε only if it survives all of them.
    Names: apgd-ce, apgd-dlr, apgd-t, pgd, fmn, fab-t, square, autoattack, aa-apgd-ce; presets: cheap (=
    apgd-ce, for monitoring), strong (= autoattack, for final numbers), curve (= a minimum-norm fmn pass joined
    with apgd-ce + apgd-t at 100 iterations on the grid walked downward, warm-started, checked against
    AutoAttack at ε_g: AutoAttack-grade curves at small radii), aa-curve (= curve + AutoAttack's fab-t and
    square at ε_g on what the gradient attacks leave standing: every attack AutoAttack runs, for large radii
    where gradients alone miss examples; see at_target)."""
    num_steps: int | None = None
    """Iterations of robustft's own attacks (apgd-ce, apgd-dlr, apgd-t, pgd) and of aa-apgd-ce; null: 100 with
    the curve preset (AutoAttack's budget), 10 otherwise."""
    restarts: int = 1
    """Random restarts of robustft's own attacks (apgd-t: per target class)."""
    targets: int = 9
    """apgd-t: how many of the most likely wrong classes are attacked in turn, each with num_steps steps
    (9, AutoAttack's, covers every wrong class of a 10-class task; fewer cost proportionally less)."""
    square_queries: int = 5000
    """Queries of the square attack (model evaluations per example)."""
    mode: str | None = None
    """``incremental`` (walk the grid upward, attacking at each ε only the examples still correct at the
    previous ε), ``downward`` (attack every clean-correct example at ε_g, then walk down, attacking at each ε
    only the examples broken at the ε above: one found robust in the larger ball counts robust in the
    smaller one) or ``independent`` (every clean-correct example at every ε); the first two are monotone by
    construction. null: downward with the curve preset, incremental otherwise."""
    warm_start: bool | None = None
    """Start each attack at ε_k from a point of the ε walked before it (true) or at random (false): upward,
    each attack's own highest-loss point of ε_{k−1}; downward, the point that broke the example at ε_{k+1}.
    null: true with the curve preset, false otherwise."""
    warm_steps: int | None = None
    """Iterations of a warm-started attack (its first step is ε/4: it starts near a point of the ε walked
    before, see BENCHMARKS.md); null: 20 with the curve preset, 5 otherwise."""
    fmn_steps: int = 100
    """Iterations of the minimum-norm attack (fmn), run once per clean-correct example."""
    at_target: list[str] | None = None
    """Attacks (names among ``attacks``, presets expanded) that run at ε_g only; below it the other attacks
    decide. null: the preset's (aa-curve: fab-t and square, which AutoAttack needs at large radii and which cost
    most; BENCHMARKS.md), else none; [] runs every attack at every ε."""
    fold_bn: bool = True
    """Attack a copy of the model with BatchNorm folded into the convolutions (the same function in eval mode up
    to float rounding, about 0.9× the cost per pass on the embedded backbone, and laid out channels-last,
    BENCHMARKS.md); whether an
    attacked point is misclassified is decided by the model itself."""
    n: int | None = 1000
    """Test examples evaluated (stratified subset of the test split); null uses all."""
    seed: int = 0
    """Seed of the evaluation attacks' random starts."""
    checks: bool = True
    """Run the sanity checks against false robustness (see robustft/eval/checks.py)."""
    check_n: int = 100
    """Examples used by the costlier checks (black-box attack, very large ε)."""
    check_queries: int = 1000
    """Queries of the black-box (Square) attack in the gradient-masking check."""
    check_autoattack: int | None = None
    """Examples on which the reference AutoAttack runs at ε_g to check the evaluation (its gap is the
    ``autoattack`` flag); 0 turns the check off; null: 100 with the curve preset, 0 otherwise."""
    bootstrap: int = 1000
    """Bootstrap resamples of the test examples for the 95 % interval of E.adv (Clean and Adv. use Wilson
    score intervals); 0 turns the intervals off."""

    def __post_init__(self) -> None:
        _ = self.settings  # resolved once, when the section is made (a replace() makes and resolves a new one)

    @functools.cached_property
    def settings(self) -> EvalSettings:
        """The keys a preset may set, resolved: :class:`EvalSettings` (read these, never the null fields)."""
        return EvalSettings.of(self)


PAPER_DATASETS = ("fgvc_aircraft", "caltech256", "stanford_cars", "cub200", "stanford_dogs")
"""The paper's fine-grained datasets, read from a local root in their published layouts (robustft/data/paper.py)."""
EVAL_MODES = ("incremental", "downward", "independent")
"""How an evaluation walks its ε grid (``eval.mode``; robustft/eval/evaluator.py)."""
EVAL_PRESETS = {"cheap": ["apgd-ce"], "strong": ["autoattack"], "curve": ["fmn", "apgd-ce", "apgd-t"],
                "aa-curve": ["fmn", "apgd-ce", "apgd-t", "fab-t", "square"]}
_DOWNWARD_100 = {"mode": "downward", "warm_start": True, "num_steps": 100, "warm_steps": 20, "check_autoattack": 100}
EVAL_PRESET_SETTINGS: dict[str, dict[str, Any]] = {"curve": _DOWNWARD_100,
                                                   "aa-curve": {**_DOWNWARD_100, "at_target": ["fab-t", "square"]}}
"""What a preset sets besides its attacks, where the config leaves the key null."""


@dataclass(frozen=True)
class EvalSettings:
    """The keys of an ``eval`` section that a preset may set, resolved (:attr:`EvalConfig.settings`): each the
    section's value where it is set, else the value of the first preset among its attacks that sets it, else the
    plain default written here."""

    mode: str = "incremental"
    warm_start: bool = False
    num_steps: int = 10
    warm_steps: int = 5
    at_target: tuple[str, ...] = ()
    check_autoattack: int = 0

    @classmethod
    def of(cls, e: EvalConfig) -> EvalSettings:
        """``e``'s settings: its own values, else its presets', else the defaults."""
        found: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = getattr(e, f.name)
            if value is None:
                value = next((EVAL_PRESET_SETTINGS[n][f.name] for n in e.attacks
                              if f.name in EVAL_PRESET_SETTINGS.get(n, {})), f.default)
            found[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**found)


def evaluation_name(e: EvalConfig) -> str:
    """The folder name of an evaluation under ``RUN/eval/``: its attacks, and the mode and the attacks run at
    ε_g only where they are not the attacks' defaults (incremental and none, or the preset's)."""
    preset = EvalSettings.of(dataclasses.replace(e, mode=None, at_target=None))
    mode, at_target = e.settings.mode, list(e.settings.at_target)
    name = "+".join(expand_attacks(list(e.attacks))) + ("" if mode == preset.mode else f"-{mode}")
    if at_target != list(preset.at_target):
        name += "-at-target-" + "+".join(at_target) if at_target else "-every-eps"
    return name


def expand_attacks(names: list[str]) -> list[str]:
    """Attack names with presets expanded and duplicates dropped, order kept."""
    out: list[str] = []
    for name in names:
        for n in EVAL_PRESETS.get(name, [name]):
            if n not in out:
                out.append(n)
    return out


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with ``changes`` applied to one section (values are not re-validated)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


SECTIONS: dict[str, type] = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}


