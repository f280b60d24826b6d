"""Run configuration: frozen dataclasses per section, YAML load/save, ``--set`` overrides, validation.

A config file is YAML with one mapping per section (``data``, ``model``, ``attack``, ``objective``,
``schedule``, ``optim``, ``train``, ``eval``); every key is optional and falls back to the defaults
below. ε values are in pixel units (images live in [0, 1]) and may be written ``8/255`` or ``0.0314``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

EPS_KEYS = {("attack", "eps"), ("eval", "eps_step"), ("eval", "eps_grid")}


class ConfigError(ValueError):
    """One or more configuration problems; the message lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


def parse_eps(value: Any) -> float:
    """Parse an ε in pixel units from ``8/255``, ``"0.03"`` or a number, without ``eval``.

    Raises:
        ValueError: the value is not a number or fraction, is negative, or exceeds 1 (pixel units).
    """
    if isinstance(value, bool):
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?", value)
        if not m:
            raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
        num, den = float(m.group(1)), float(m.group(2)) if m.group(2) else 1.0
        if den == 0:
            raise ValueError(f"ε {value!r} divides by zero")
        eps = num / den
    else:
        raise ValueError(f"ε must be a number like 8/255 or 0.031, got {value!r}")
    if eps < 0:
        raise ValueError(f"ε must be >= 0, got {value!r}")
    if eps > 1:
        raise ValueError(
            f"ε = {value!r} is larger than 1, but ε is in pixel units (images in [0, 1]); "
            f"did you mean {value}/255?"
        )
    return eps


def format_eps(eps: float) -> str | float:
    """Write ε as ``k/255`` when it is one exactly (round-trips through :func:`parse_eps`)."""
    k = round(eps * 255, 6)
    if k == int(k) and int(k) / 255 == eps:
        return f"{int(k)}/255"
    return eps


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion_mnist"
    """Dataset: ``fashion_mnist``, ``digits`` or ``imagefolder``."""
    root: str | None = None
    """Folder of the data: for ``imagefolder`` it holds ``train/`` and ``test/`` (and optionally ``val/``)
    with one sub-folder per class; for ``fashion_mnist`` it overrides where the idx files are looked for."""
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
    """Training batch size, in examples."""
    eval_batch_size: int = 256
    """Batch size for validation and evaluation, in examples."""
    flip: bool = True
    """Random horizontal flip during training."""
    pad_crop: int = 0
    """Pad by this many pixels and randomly crop back during training; 0 turns it off."""
    cache_dir: str = "~/.cache/robustft"
    """Where downloaded datasets are kept."""
    download: bool = True
    """Allow downloading a dataset that is not found locally."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "efficientnet_lite0"
    """Backbone: ``efficientnet_lite0`` (embedded ImageNet weights, works offline) or any timm model id."""
    pretrained: bool = True
    """Load pretrained weights (embedded ones, or timm's hub for other backbones)."""
    checkpoint: str | None = None
    """Local backbone weights (.safetensors, or a torch file loaded with weights_only); overrides the hub."""
    num_classes: int | None = None
    """Classes of the new linear head; null takes them from the dataset."""
    drop_rate: float = 0.0
    """Dropout before the head, probability."""
    bn_momentum: float | None = 0.1
    """BatchNorm momentum set on every BatchNorm layer (PyTorch convention); null keeps the backbone's."""


@dataclass(frozen=True)
class AttackConfig:
    eps: float = 8 / 255
    """Target radius ε_g of the threat model, pixel units (e.g. 8/255)."""
    norm: str = "linf"
    """Threat model: ``linf`` or ``l2``."""
    name: str = "apgd"
    """Training attack: ``apgd`` (APGD-CE, step-size free) or ``pgd``."""
    num_steps: int = 7
    """Attack iterations (gradient evaluations) per restart."""
    rel_step_size: float = 0.25
    """PGD step size as a fraction of the current ε (APGD starts at 2ε and needs none)."""
    random_start: bool = True
    """Start from a uniformly random point of the ε-ball."""
    restarts: int = 1
    """Random restarts; the highest-loss result per example is kept."""


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
    log_every: int = 50
    """Write a step row to metrics.jsonl every this many optimiser steps."""
    evaluate: bool = True
    """Run the final evaluation (eval section) on the test split after training."""
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
    Names: apgd-ce, apgd-dlr, apgd-t, pgd, square, autoattack, aa-apgd-ce; presets: cheap (= apgd-ce,
    for monitoring), strong (= autoattack, for final numbers)."""
    num_steps: int = 10
    """Iterations of robustft's own attacks (apgd-ce, apgd-dlr, apgd-t, pgd) and of aa-apgd-ce."""
    restarts: int = 1
    """Random restarts of robustft's own attacks (apgd-t: per target class)."""
    square_queries: int = 5000
    """Queries of the square attack (model evaluations per example)."""
    mode: str = "incremental"
    """``incremental`` (attack at each ε only the examples still correct at the previous ε; monotone)
    or ``independent`` (attack every clean-correct example at every ε)."""
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
    bootstrap: int = 1000
    """Bootstrap resamples of the test examples for the 95 % interval of E.adv (Clean and Adv. use Wilson
    score intervals); 0 turns the intervals off."""


EVAL_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "pgd", "square", "autoattack", "aa-apgd-ce")
"""Names of the evaluation attacks (built by ``robustft.attacks.build_eval_attacks``)."""
EVAL_PRESETS = {"cheap": ["apgd-ce"], "strong": ["autoattack"]}


def evaluation_name(e: EvalConfig) -> str:
    """The folder name of an evaluation under ``RUN/eval/``: its attacks, and the mode if independent."""
    return "+".join(expand_attacks(list(e.attacks))) + ("-independent" if e.mode == "independent" else "")


def parse_eps_grid(spec: str) -> list[float]:
    """``START:STOP:STEP`` (STOP included), e.g. ``0:8/255:1/255``, or a comma list ``0,4/255,8/255``.

    Raises:
        ValueError: the spec is malformed or the step is not positive.
    """
    if ":" not in spec:
        return [parse_eps(v) for v in spec.split(",") if v.strip()]
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"ε grid {spec!r}: expected START:STOP:STEP such as 0:8/255:1/255, or a comma list")
    start, stop, step = (parse_eps(v) for v in parts)
    if step <= 0 or stop < start:
        raise ValueError(f"ε grid {spec!r}: need STEP > 0 and STOP >= START")
    k = int((stop - start) / step + 1e-9)
    grid = [start + i * step for i in range(k + 1)]
    return grid if stop - grid[-1] <= 1e-12 else grid + [stop]


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
    attack: AttackConfig = field(default_factory=AttackConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with ``changes`` applied to one section (values are not re-validated)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


SECTIONS: dict[str, type] = {f.name: f.default_factory().__class__ for f in dataclasses.fields(Config)}


# ---------------------------------------------------------------------------------------------- parsing
def _allowed_types(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _coerce(value: Any, annotation: Any, key: str, is_eps: bool) -> Any:
    """Check ``value`` against a field's annotation, converting where it is lossless."""
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{key}: null is not allowed here")
    if any(typing.get_origin(t) is list for t in allowed):
        if isinstance(value, str) and list[str] in allowed:  # "apgd-ce,autoattack"
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list such as [0, 4/255, 8/255], got {value!r}")
        return [parse_eps(v) if is_eps else v for v in value]
    if is_eps:
        return parse_eps(value)
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if str in allowed and isinstance(value, str):
        return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed if t is not type(None))
    raise ValueError(f"{key}: expected {names}, got {value!r}")


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Read configs written by earlier versions: ``eval.attack: NAME`` became ``eval.attacks: [NAME]``."""
    ev = raw.get("eval")
    if isinstance(ev, dict) and "attack" in ev and "attacks" not in ev:
        ev = {k: v for k, v in ev.items() if k != "attack"} | {"attacks": [ev["attack"]]}
        raw = {**raw, "eval": ev}
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts; raises :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"the config must be a mapping of sections, got {type(raw).__name__}"])
    sections: dict[str, Any] = {}
    for name, values in _migrate(raw).items():
        if name not in SECTIONS:
            problems.append(_unknown_key(name, list(SECTIONS)))
            continue
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{name}: expected a mapping of keys, got {values!r}")
            continue
        cls = SECTIONS[name]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                problems.append(_unknown_key(f"{name}.{key}", list(hints)))
                continue
            try:
                kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", (name, key) in EPS_KEYS)
            except ValueError as err:
                msg = str(err)
                problems.append(msg if msg.startswith(f"{name}.{key}") else f"{name}.{key}: {msg}")
        sections[name] = cls(**kwargs)
    try:  # values that parsed are validated too, so one error message lists every problem
        validate(Config(**sections))
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    return Config(**sections)


def validate(cfg: Config) -> None:
    """Check values and their combinations; raises :class:`ConfigError` naming every bad key."""
    p: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            p.append(msg)

    d, m, a, s, o, t, e = cfg.data, cfg.model, cfg.attack, cfg.schedule, cfg.optim, cfg.train, cfg.eval
    need(d.name in ("fashion_mnist", "digits", "imagefolder"),
         f"data.name: unknown dataset {d.name!r}; choose fashion_mnist, digits or imagefolder")
    need(d.name != "imagefolder" or bool(d.root), "data.root: imagefolder needs data.root (a folder with train/ and test/)")
    need(d.image_size >= 8, f"data.image_size: must be >= 8 pixels, got {d.image_size}")
    for key in ("n_train", "n_test"):
        v = getattr(d, key)
        need(v is None or v > 0, f"data.{key}: must be positive or null, got {v}")
    need(d.n_val >= 0, f"data.n_val: must be >= 0, got {d.n_val}")
    need(d.batch_size > 0, f"data.batch_size: must be positive, got {d.batch_size}")
    need(d.eval_batch_size > 0, f"data.eval_batch_size: must be positive, got {d.eval_batch_size}")
    need(d.pad_crop >= 0, f"data.pad_crop: must be >= 0 pixels, got {d.pad_crop}")
    need(m.num_classes is None or m.num_classes >= 2, f"model.num_classes: must be >= 2 or null, got {m.num_classes}")
    need(0 <= m.drop_rate < 1, f"model.drop_rate: must be in [0, 1), got {m.drop_rate}")
    need(m.bn_momentum is None or 0 < m.bn_momentum <= 1, f"model.bn_momentum: must be in (0, 1] or null, got {m.bn_momentum}")
    need(a.norm in ("linf", "l2"), f"attack.norm: unknown norm {a.norm!r}; choose linf or l2")
    need(a.name in ("apgd", "pgd"), f"attack.name: unknown attack {a.name!r}; choose apgd or pgd")
    need(a.num_steps >= 1, f"attack.num_steps: must be >= 1, got {a.num_steps}")
    need(a.restarts >= 1, f"attack.restarts: must be >= 1, got {a.restarts}")
    need(a.rel_step_size > 0, f"attack.rel_step_size: must be positive, got {a.rel_step_size}")
    need(cfg.objective.name in ("standard", "adversarial", "trades"),
         f"objective.name: unknown objective {cfg.objective.name!r}; choose standard, adversarial or trades")
    need(cfg.objective.beta >= 0, f"objective.beta: must be >= 0, got {cfg.objective.beta}")
    need(cfg.objective.trades_inner in ("kl", "ce"),
         f"objective.trades_inner: {cfg.objective.trades_inner!r} is not kl or ce")
    _validate_schedule(s, t.epochs, need)
    need(s.kind != "auto" or d.n_val > 0, "schedule.kind: auto watches validation accuracy and needs data.n_val > 0")
    for key in ("lr", "weight_decay", "head_lr", "head_weight_decay"):
        v = getattr(o, key)
        need(v is None or v >= 0, f"optim.{key}: must be >= 0, got {v}")
    need(o.lr > 0, f"optim.lr: must be positive, got {o.lr}")
    need(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1/beta2: must be in [0, 1), got {o.beta1}, {o.beta2}")
    need(0 <= o.warmup_epochs <= t.epochs, f"optim.warmup_epochs: must be in [0, train.epochs], got {o.warmup_epochs}")
    need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
    need(o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip: must be positive or null, got {o.grad_clip}")
    need(t.epochs >= 1, f"train.epochs: must be >= 1, got {t.epochs}")
    need(t.val_adv_n >= 0, f"train.val_adv_n: must be >= 0, got {t.val_adv_n}")
    need(0 <= t.delay_threshold < 1, f"train.delay_threshold: must be in [0, 1), got {t.delay_threshold}")
    need(t.log_every >= 1, f"train.log_every: must be >= 1, got {t.log_every}")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", t.device) is not None,
         f"train.device: {t.device!r} is not auto, cpu, cuda, cuda:N or mps")
    unknown = [a for a in expand_attacks(list(e.attacks)) if a not in EVAL_ATTACKS]
    need(not unknown and len(e.attacks) > 0, f"eval.attacks: unknown attack(s) {unknown or '(none given)'}; "
         f"choose from {', '.join(EVAL_ATTACKS)} or a preset ({', '.join(EVAL_PRESETS)})")
    for key in ("square_queries", "check_n", "check_queries"):
        need(getattr(e, key) >= 1, f"eval.{key}: must be >= 1, got {getattr(e, key)}")
    need(e.bootstrap >= 0, f"eval.bootstrap: must be >= 0 (0 turns the intervals off), got {e.bootstrap}")
    need(e.eps_weights is None or all(w >= 0 for w in e.eps_weights) and sum(e.eps_weights) > 0,
         f"eval.eps_weights: must be non-negative with a positive sum, got {e.eps_weights}")
    need(e.num_steps >= 1, f"eval.num_steps: must be >= 1, got {e.num_steps}")
    need(e.restarts >= 1, f"eval.restarts: must be >= 1, got {e.restarts}")
    need(e.mode in ("incremental", "independent"), f"eval.mode: {e.mode!r} is not incremental or independent")
    need(e.eps_step > 0, f"eval.eps_step: must be positive, got {e.eps_step}")
    need(e.n is None or e.n > 0, f"eval.n: must be positive or null, got {e.n}")
    if p:
        raise ConfigError(p)


SCHEDULE_KINDS = ("fix", "hinge", "warmup", "switch", "linear", "uniform", "piecewise", "auto")
DEFAULT_HINGES = {"hinge": (0.25, 0.75), "warmup": (0, 0.75), "switch": (0.5, None)}
"""Default (t1, t2) of the kinds whose hinges are set by hand: integers are epochs, floats fractions."""


def to_epochs(value: int | float, epochs: int) -> float:
    """A hinge given as whole epochs (int) or as a fraction of training (float in [0, 1]), in epochs."""
    return float(value) if isinstance(value, int) else value * epochs


def hinges_in_epochs(s: ScheduleConfig, epochs: int) -> tuple[float, float]:
    """(t1, t2) of a hinge, warmup or switch schedule in epochs, each kind's defaults filled in."""
    d1, d2 = DEFAULT_HINGES[s.kind]
    t1 = to_epochs(s.t1 if s.t1 is not None else d1, epochs)
    return (t1, t1) if s.kind == "switch" else (t1, to_epochs(s.t2 if s.t2 is not None else d2, epochs))


def _validate_schedule(s: ScheduleConfig, epochs: int, need: Any) -> None:
    need(s.kind in SCHEDULE_KINDS, f"schedule.kind: unknown schedule {s.kind!r}; choose {', '.join(SCHEDULE_KINDS)}")
    need(s.granularity in ("epoch", "step"), f"schedule.granularity: {s.granularity!r} is not epoch or step")
    hinges_ok = True
    for key in ("t1", "t2", "latest_t1"):
        v = getattr(s, key)
        if v is None:
            continue
        ok = 0.0 <= v <= 1.0 if isinstance(v, float) else 0 <= v <= epochs
        hinges_ok &= ok
        if isinstance(v, float):
            need(ok, f"schedule.{key}: a float is a fraction of training and must be in [0, 1]; "
                     f"got {v} (write whole epochs as an integer)")
        else:
            need(ok, f"schedule.{key}: {v} epochs is outside [0, train.epochs={epochs}]")
    no_hinges = ("fix", "linear", "uniform", "piecewise")
    need(s.kind not in no_hinges or (s.t1 is None and s.t2 is None),
         f"schedule.t1/t2: the {s.kind} schedule takes no hinges")
    need(s.kind != "warmup" or s.t1 in (None, 0, 0.0), "schedule.t1: warmup starts at 0; set t2 only")
    need(s.kind == "auto" or s.latest_t1 is None, "schedule.latest_t1: only the auto schedule takes it")
    need(s.kind != "auto" or s.t1 is None,
         "schedule.t1: auto starts its ramp when validation accuracy stops improving; set t2 (the ramp's end) only")
    need(s.kind != "switch" or s.t2 is None, "schedule.t2: switch has one hinge; set t1 only")
    if s.kind in ("hinge", "warmup") and hinges_ok:
        t1, t2 = hinges_in_epochs(s, epochs)
        need(t2 >= t1, f"schedule.t1/t2: the ramp ends (t2 = {t2:g} epochs) before it starts (t1 = {t1:g} "
                       f"epochs){'; t2 defaults to 0.75 of training' if s.t2 is None else ''}")
    need((s.kind == "piecewise") == (s.points is not None),
         "schedule.points: piecewise needs points, and only piecewise takes them")
    if s.points is not None:
        _validate_points(s.points, need)
    need(s.patience >= 1, f"schedule.patience: must be >= 1 epoch, got {s.patience}")
    need(s.tolerance >= 0, f"schedule.tolerance: must be >= 0, got {s.tolerance}")
    need(s.tolerance_mode in ("absolute", "relative"),
         f"schedule.tolerance_mode: {s.tolerance_mode!r} is not absolute or relative")


def _validate_points(points: list[Any], need: Any) -> None:
    pairs = all(isinstance(p, (list, tuple)) and len(p) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in points)
    need(pairs and len(points) > 0, f"schedule.points: expected [progress, multiplier] pairs such as "
                                    f"[[0, 0], [0.5, 1]], got {points!r}")
    if not pairs or not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    need(all(0 <= x <= 1 for x in xs) and all(b > a for a, b in zip(xs, xs[1:])),
         f"schedule.points: progress values must increase within [0, 1] (fractions of training), got {xs}")
    need(all(y >= 0 for y in ys), f"schedule.points: multipliers must be >= 0, got {ys}")


# ---------------------------------------------------------------------------------------------- files
def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars) to a nested dict copy."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            problems.append(f"--set {item!r}: expected section.key=value, e.g. attack.eps=8/255")
            continue
        section, name = parts
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        out.setdefault(section, {})
        if isinstance(out[section], dict):
            out[section][name] = parsed
        else:
            out[section] = {name: parsed}
    if problems:
        raise ConfigError(problems)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict of a config; ε values written as ``k/255`` where exact."""
    out = dataclasses.asdict(cfg)
    for section, key in EPS_KEYS:
        v = out[section][key]
        out[section][key] = [format_eps(x) for x in v] if isinstance(v, list) else (
            None if v is None else format_eps(v))
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML; :func:`load_config` on it gives an equal config."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
