"""Robustness over an ε grid: which test examples survive every attack at each ε.

:func:`evaluate` reads as "for each ε the walk names, for each attack, attack the examples the walk names
there, record": the walk (``incremental``, ``downward`` or ``independent``; :mod:`robustft.eval.walks`) says
which ε comes next, which examples to attack, which count as settled and where each attack starts; the state
(:mod:`robustft.eval.state`) carries the evidence from one ε to the next and is saved after each ε, so a killed
evaluation resumes with the same result. In every walk an example misclassified on clean inputs counts as
wrong at every ε, as in AutoAttack. At each ε the attacks run in order, each on the examples the previous ones
left standing, so a row of the evidence matrix is the worst case over all attacks, and each ε has its own seed.
A minimum-norm attack (FMN) runs once, before the grid, on the clean-correct examples: an example it breaks at
radius r counts as broken at every ε ≥ r without a grid attack, and the radii give the curve between grid
points (``RobustnessResult.eps_star``). Under torchrun each process attacks its share of the examples and the
evidence is gathered; process 0 saves the state and runs the sanity checks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.attacks import Attack, build_eval_attacks
from robustft.attacks.base import FoldedBatchNorm, MinNormAttack, is_min_norm
from robustft.config import EvalConfig, EvalSettings, format_eps
from robustft.config.eps import eps_grid_argument
from robustft.data import ImageSource, as_streamed_source, eval_batches
from robustft.errors import ConfigError
from robustft.eval.checks import SanityChecks
from robustft.eval.metrics import expected_robustness
from robustft.eval.result import RobustnessResult
from robustft.eval.state import EvalState, fingerprint
from robustft.eval.walks import WALKS, Target, Walk
from robustft.models.fold import conv_bn_pairs
from robustft.models.modes import modes_kept

log = logging.getLogger(__name__)


def default_eps_grid(eps_target: float, step: float = 1 / 255) -> list[float]:
    """0, step, 2·step, …, ε_g (ε_g included even when it is not a multiple of the step)."""
    k = int(np.floor(eps_target / step + 1e-9))
    grid = [i * step for i in range(k + 1)]
    if eps_target - grid[-1] > 1e-12:
        grid.append(eps_target)
    grid[-1] = eps_target
    return grid


def evaluate(model: nn.Module, data: Any, eps_grid: Sequence[float] | str,
             attacks: Mapping[str, Attack] | Sequence[str] = ("apgd-ce",), *, device: torch.device | None = None,
             image_size: int | None = None, batch_size: int = 256, mode: str | None = None, seed: int = 0,
             protocol: dict | None = None, state_path: Path | None = None, checks: SanityChecks | bool | None = True,
             weights: list[float] | None = None, bootstrap: int = 1000, norm: str | None = None,
             warm_start: bool | None = None, fold_bn: bool = True,
             at_target: Sequence[str] | None = None) -> RobustnessResult:
    """Attack ``data`` at every ε of the grid with every attack; returns the evidence and the protocol.

    Args:
        model: any module taking [0, 1] pixels and returning logits; it runs in eval mode, and every module is
            back in the training or eval mode it had when this returns.
        data: an image source, ``(images, labels)`` tensors, or a DataLoader or other iterable of ``(images,
            labels)`` batches; images float in [0, 1] (or robustft's uint8 sources). A DataLoader over a map-style
            dataset (sequential, shuffled or subset sampling, no ``drop_last``) is streamed: its examples are
            read by position, a batch at a time (its ``collate_fn``), whenever the walk attacks them, so only the
            labels stay in memory, and the dataset's transform must be deterministic. The walk needs every
            example by position (each ε attacks what the previous left standing; resume, warm starts and the
            checks address examples by position), so any other iterable is read once, whole, into memory.
        eps_grid: ε values in pixel units, each in [0, 1] (the config's rule: 8 is refused with "did you mean
            8/255?"), or a ``START:STOP:STEP`` string such as ``"0:8/255:1/255"``.
        attacks: name → attack, run in this order at each ε (worst case over all of them); or evaluation
            attack names (``apgd-ce``, ``apgd-t``, ``fmn``, ``square``, ``autoattack``, the presets ``cheap``,
            ``strong`` and ``curve``; docs/evaluation.md) built with their default settings.
            A minimum-norm attack (``fmn``) runs once per clean-correct example, before the grid: an
            example it breaks at radius ε* counts as broken at every ε ≥ ε*.
        device: where to attack (default: the model's).
        image_size: side of the images the model takes (default: the data's).
        norm: the threat model (``linf`` or ``l2``): of the attacks given by name, and of every sanity check
            whatever the attacks are. None: the attack objects' own (their ``threat`` or ``norm``), else linf;
            attack objects in another norm than ``norm`` are refused.
        mode: ``incremental``, ``downward`` or ``independent`` (see the module docstring). None: as the attack
            names' preset says (downward with ``curve``), else incremental.
        seed: seeds each ε (as ``seed + index``) without disturbing the caller's random state.
        protocol: extra facts recorded with the result (attack descriptions, split, checkpoint, ...).
        state_path: where the evidence is saved after each ε; an evaluation with the same protocol found
            there is resumed.
        checks: the sanity checks run on the finished result (:mod:`robustft.eval.checks`; every outcome is
            in ``result.checks``, the raised ones in ``result.flags``): True (the default) runs the config
            path's defaults (``SanityChecks.from_config`` of the attack names' settings, e.g. the AutoAttack
            check of the ``curve`` preset); a :class:`SanityChecks` runs those (its ``norm`` unset: the
            evaluation's); False or None runs none.
        weights: density of ε at the grid points for the expected robustness (None: uniform).
        bootstrap: resamples for the confidence intervals.
        warm_start: each attack that accepts a starting point (``x_init``) starts an example from a point
            of the ε walked before instead of a random point (further restarts still start at random):
            incremental, its own highest-loss point at ε_{k−1}; downward, the point that broke the example at
            ε_{k+1} (a grid attack's or the minimum-norm pass's), and a warm run that fails is followed by a
            cold one. None: as the attack names' preset says (on with ``curve``), else off.
        at_target: names of attacks that run at ε_g only (below it the other attacks decide); None: as the
            attack names' preset says (``fab-t`` and ``square`` with ``aa-curve``), else none.
        fold_bn: the attacks run on a copy of the model with BatchNorm folded into the convolutions (the same
            function in eval mode up to float rounding, cheaper; :class:`robustft.attacks.base.FoldedBatchNorm`);
            whether an attacked point is misclassified is always decided by ``model`` itself. Recorded in the
            protocol as done or not (a model without BatchNorm after a convolution is attacked as it is).

    ε = 0 is added to the grid if missing (its row is clean accuracy).

    Raises:
        ConfigError: an invalid argument (an ε out of [0, 1], an unknown mode or norm, attacks in another
            norm, ...), named with its fix.
    """
    return _run(_plan(model, data, eps_grid, attacks, device=device, image_size=image_size, batch_size=batch_size,
                      mode=mode, seed=seed, protocol=protocol, state_path=state_path, checks=checks, weights=weights,
                      bootstrap=bootstrap, norm=norm, warm_start=warm_start, fold_bn=fold_bn, at_target=at_target))


def _run(plan: _Plan) -> RobustnessResult:
    """Walk ``plan``'s grid: for each ε the walk names, for each attack, attack the examples the walk names there
    and record (the state saved after each ε); then the result and its checks."""
    target, grid, walk = plan.target, plan.grid, plan.walk
    labels = target.source.labels.numpy().copy()
    key = fingerprint(plan.protocol, labels)
    state = EvalState.resume(plan.state_path, key, len(grid), len(labels))
    order = walk.order(len(grid))
    with modes_kept(target.model):  # the caller's modes come back, even on error
        target.model.eval()
        with torch.random.fork_rng(devices=[target.device] if target.device.type == "cuda" else []):
            for i in range(state.done, len(order)):
                e, prev = order[i], order[i - 1] if i > 0 else -1
                torch.manual_seed(plan.seed + e)
                # the examples counted correct before this ε's attacks, and those settled as robust unattacked
                row, settled = walk.attacked(state, e, prev)
                if grid[e] > 0:
                    _min_norm(target, walk, plan.attacks, state, e, grid[e], row, settled)
                for k, name, attack in _steps(plan.attacks, grid, e, plan.at_target):
                    _attack_step(target, walk, state, (e, prev, grid[e]), (k, name, attack), row, settled)
                if walk.warm and grid[e] > 0:
                    state.starts_at = e
                state.correct[e] = row
                log.info("eval ε=%s: accuracy %.4f", format_eps(grid[e]), row.mean())
                if plan.state_path is not None and target.shard.main:
                    state.done = i + 1
                    state.save(plan.state_path, key)
        result = RobustnessResult(grid, state.correct, labels, plan.protocol, breaker=state.breaker,
                                  weights=plan.weights, bootstrap=plan.bootstrap, radii=state.radii, costs=state.costs)
        if plan.checks is not None and target.shard.main:
            _run_checks(plan.checks, target, result)
        return result


@dataclass(frozen=True)
class _Plan:
    """An evaluation's arguments resolved and validated: the target (the model on the examples, where, at what
    size, in what batches), the grid (with 0), the attacks in order (on the folded copy where folded), the walk,
    the attacks run at ε_g only, the checks, the protocol recorded with the result, the seed, the density of ε,
    the bootstrap resamples, and where the state is saved."""

    target: Target
    grid: list[float]
    attacks: Mapping[str, Attack]
    walk: Walk
    at_target: list[str]
    checks: SanityChecks | None
    protocol: dict[str, Any]
    seed: int
    weights: list[float] | None
    bootstrap: int
    state_path: Path | None


def _plan(model: nn.Module, data: Any, eps_grid: Sequence[float] | str, attacks: Mapping[str, Attack] | Sequence[str],
          *, device: torch.device | None, image_size: int | None, batch_size: int, mode: str | None, seed: int,
          protocol: dict | None, state_path: Path | None, checks: SanityChecks | bool | None,
          weights: list[float] | None, bootstrap: int, norm: str | None, warm_start: bool | None, fold_bn: bool,
          at_target: Sequence[str] | None) -> _Plan:
    """:func:`evaluate`'s arguments as a :class:`_Plan` (see there for each; None: as the attack names' preset
    says, else the default).

    Raises:
        ConfigError: an invalid argument, named with its fix.
    """
    grid = sorted(set([0.0] + eps_grid_argument(eps_grid)))
    named = None if isinstance(attacks, Mapping) else \
        EvalConfig(attacks=[attacks] if isinstance(attacks, str) else list(attacks))
    norm = _threat_norm(norm, None if named is not None else cast(Mapping[str, Attack], attacks))
    source = as_streamed_source(data)
    # names: presets bring their own settings (the curve preset: warm starts, the AutoAttack check)
    attacks = build_eval_attacks(named, norm) if named is not None else cast(Mapping[str, Attack], attacks)
    preset = named.settings if named is not None else EvalSettings()
    warm_start = preset.warm_start if warm_start is None else warm_start
    mode = preset.mode if mode is None else mode
    at_target = list(preset.at_target if at_target is None else at_target)
    unknown = sorted(set(at_target) - set(attacks))
    if unknown:
        raise ConfigError(f"at_target: {', '.join(unknown)} not among the attacks ({', '.join(attacks)})")
    if mode not in WALKS:
        raise ConfigError(f"mode must be one of {', '.join(WALKS)}; got {mode!r}")
    if not attacks:
        raise ConfigError("attacks: evaluate needs at least one attack, e.g. attacks=['apgd-ce']")
    try:
        expected_robustness(grid, [0.0] * len(grid), weights)
    except ValueError as err:
        raise ConfigError(f"weights: for the grid {[format_eps(e) for e in grid]}: {err}") from None
    names = list(attacks)
    fold_bn = fold_bn and bool(conv_bn_pairs(model))
    if fold_bn:  # attacked on the folded copy; every verdict is the model's own
        attacks = {name: FoldedBatchNorm(attack) for name, attack in attacks.items()}
    walk = WALKS[mode](warm=bool(warm_start))
    protocol = {"mode": mode, "seed": seed, "norm": norm, "grid": [format_eps(e) for e in grid],
                "attack_order": names, "start": "warm" if walk.warm else "cold", "fold_bn": bool(fold_bn),
                **({"at_target": at_target} if at_target else {}), **(protocol or {})}
    image_size = image_size if image_size is not None else int(source.read(torch.arange(1)).shape[-1])
    target = Target(model, source, device if device is not None else next(model.parameters()).device, image_size,
                    batch_size, ddp.current(), _image_shape(source, image_size) if walk.warm else ())
    return _Plan(target, grid, attacks, walk, at_target, _sanity_checks(checks, named, norm), protocol, seed, weights,
                 bootstrap, state_path)


def _run_checks(checks: SanityChecks, target: Target, result: RobustnessResult) -> None:
    """Run the sanity checks on the finished ``result`` into ``result.checks``, and record their cost."""
    started = time.perf_counter()
    result.checks = checks(target.model, target.source, result, device=target.device, image_size=target.image_size,
                           batch_size=target.batch_size)
    took = time.perf_counter() - started
    result.costs.append({"eps": None, "attack": "checks", "examples": int(result.correct.shape[1]),
                         "seconds": round(took, 3)})
    log.info("sanity checks: %.0f s", took)


def _image_shape(source: ImageSource, image_size: int) -> tuple[int, ...]:
    """The shape of one image of ``source`` as the model takes it."""
    return tuple(next(iter(eval_batches(source.subset(np.arange(1)), image_size, 1)))[0].shape[1:])


def _steps(attacks: Mapping[str, Attack], grid: Sequence[float], e: int,
           at_target: Sequence[str]) -> list[tuple[int, str, Attack | None]]:
    """(k, name, attack) of each attack run at grid index ``e``, k its 1-based place in the attack order (the
    breaker it records): none but the clean pass (k = 0) at ε = 0; the grid attacks, less the minimum-norm ones
    (run once, :func:`_min_norm`) and, below ε_g, those that run at ε_g only."""
    if grid[e] == 0:
        return [(0, "clean", None)]
    return [(k + 1, n, a) for k, (n, a) in enumerate(attacks.items())
            if not is_min_norm(a) and (e == len(grid) - 1 or n not in at_target)]


def _attack_step(target: Target, walk: Walk, state: EvalState, at: tuple[int, int, float],
                 step: tuple[int, str, Attack | None], row: np.ndarray, settled: np.ndarray) -> None:
    """Run one attack (``step``: its breaker index, name and object) at grid index ``e`` (``at``: e, the index
    walked before it, and ε) on the examples of ``row`` not ``settled``, from the walk's warm starts; strike
    the examples it breaks from ``row`` and keep its points where the walk wants them."""
    (e, prev, eps), (k, name, attack) = at, step
    todo = np.flatnonzero(row & ~settled)
    slot, keep = walk.slot(name), walk.keeps(attack)
    started = time.perf_counter()
    alive, points = target.attack_share(target.mine(todo), eps, name, attack, walk.starts(state, slot, attack, prev),
                                        keep, walk.retry_cold)
    if attack is not None and len(todo):
        state.cost(format_eps(eps), name, len(todo), time.perf_counter() - started)
    alive = ddp.all_gather_array(alive)
    if keep:
        walk.remember(state, slot, todo, alive, torch.from_numpy(ddp.all_gather_array(points.numpy())))
    row[todo[~alive]] = False
    state.breaker[e, todo[~alive]] = k


def _min_norm(target: Target, walk: Walk, attacks: Mapping[str, Attack], state: EvalState, e: int, eps: float,
              row: np.ndarray, settled: np.ndarray) -> None:
    """The minimum-norm pass (once, at the first ε > 0 walked, when any attack is one; its points become the
    walk's warm starts where it keeps them), then its verdict at grid index ``e``: an example of ``row`` not
    ``settled`` that it broke within ``eps`` is wrong here without a grid attack."""
    if state.radii is None and any(is_min_norm(a) for a in attacks.values()):
        started = time.perf_counter()
        state.radii, state.radius_by, found = _min_norm_pass(target, attacks, state.correct[0],
                                                             walk.min_norm_slot is not None)
        state.cost(None, "+".join(n for n, a in attacks.items() if is_min_norm(a)), int(state.correct[0].sum()),
                   time.perf_counter() - started)
        if found is not None and walk.min_norm_slot is not None:  # where the walk first attacks them, it starts here
            broken = np.flatnonzero(np.isfinite(state.radii))
            state.keep_start(walk.min_norm_slot, broken, found[torch.from_numpy(broken)])
    if state.radii is not None and state.radius_by is not None:
        hit = row & ~settled & (state.radii <= eps * (1 + 1e-6))
        row[hit], state.breaker[e, hit] = False, state.radius_by[hit]


def _min_norm_pass(target: Target, attacks: Mapping[str, Attack], clean: np.ndarray,
                   keep: bool) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """(radii, by, points): per example the smallest radius any minimum-norm attack found (+inf: none;
    clean-wrong examples are not attacked), the 1-based index in the attack order of the attack that found
    it, and, with ``keep``, the misclassified points at those radii (on the CPU; else None)."""
    radii, by = np.full(len(clean), np.inf), np.full(len(clean), -1, dtype=np.int8)
    points: torch.Tensor | None = None
    todo = np.flatnonzero(clean)
    mine = target.mine(todo)
    for k, (name, attack) in enumerate(attacks.items()):
        if not is_min_norm(attack):
            continue
        with tqdm(total=len(mine), desc=f"eval {name} (minimum norm)", unit="img",
                  disable=None if target.shard.main else True, leave=False) as bar:
            mine_found, mine_points = target.radii(mine, cast(MinNormAttack, attack), bar, keep)
        found = ddp.all_gather_array(mine_found)
        better = found < radii[todo]
        radii[todo[better]], by[todo[better]] = found[better], k + 1
        if keep:
            got = torch.from_numpy(ddp.all_gather_array(mine_points.reshape(len(mine), *target.shape).numpy()))
            if points is None:
                points = torch.zeros((len(clean), *target.shape))
            points[torch.from_numpy(todo[better])] = got[torch.from_numpy(better)]
        log.info("eval %s: a misclassified point found for %d of %d examples", name, int(np.isfinite(found).sum()),
                 len(todo))
    return radii, by, points


NORMS = ("linf", "l2")


def _threat_norm(norm: str | None, objects: Mapping[str, Attack] | None) -> str:
    """The evaluation's norm: ``norm``, else the one the attack ``objects`` share (linf when they do not say).

    Raises:
        ConfigError: an unknown norm, or attack objects in another norm than ``norm`` or in several.
    """
    if norm is not None and norm not in NORMS:
        raise ConfigError(f"norm: {norm!r} is not {' or '.join(NORMS)}")
    own = {name: n for name, a in (objects or {}).items() if (n := _attack_norm(a)) is not None}
    found = sorted(set(own.values()))
    if len(found) > 1:
        which = ", ".join(f"{k}: {v}" for k, v in own.items())
        raise ConfigError(f"attacks: they attack in different norms ({which}); evaluate one threat model at a time")
    if norm is not None and found and found != [norm]:
        raise ConfigError(f"norm: {norm!r}, but the attack(s) {', '.join(own)} attack in the {found[0]} ball; pass "
                          f"norm={found[0]!r} (or None: the attacks' own), or attacks in the {norm} ball")
    return norm or (found[0] if found else "linf")


def _attack_norm(attack: Attack) -> str | None:
    """The norm an attack object attacks in (its threat model's name, or AutoAttack's ``norm``), if it says."""
    threat = getattr(attack, "threat", None)
    name = getattr(threat, "name", None) if threat is not None else getattr(attack, "norm", None)
    return name.lower() if isinstance(name, str) else None


def _sanity_checks(checks: SanityChecks | bool | None, named: EvalConfig | None, norm: str) -> SanityChecks | None:
    """The checks ``evaluate(checks=...)`` runs, in the evaluation's ``norm``: True, the config path's defaults
    (those of the attack names' settings); a :class:`SanityChecks`, those; False or None, none.

    Raises:
        ConfigError: a value of another type, or checks set to another norm than the evaluation's.
    """
    if checks is None or checks is False:
        return None
    if checks is True:
        return SanityChecks.from_config(named or EvalConfig(), norm)
    if not isinstance(checks, SanityChecks):
        raise ConfigError(f"checks: True (the defaults), False (none) or a SanityChecks, got {checks!r}")
    if checks.norm is not None and checks.norm != norm:
        raise ConfigError(f"checks: SanityChecks(norm={checks.norm!r}) in an evaluation in {norm}; leave its norm "
                          f"unset (it follows the evaluation) or pass norm={checks.norm!r}")
    return dataclasses.replace(checks, norm=norm)
