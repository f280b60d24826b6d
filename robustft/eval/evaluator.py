"""Robustness over an ε grid: which test examples survive every attack at each ε.

Three ways to walk the grid. ``incremental`` walks it upward and attacks at each ε only the examples
still correct at the previous ε: an adversarial example inside a small ball is inside every larger one,
so the curve is monotone by construction and the cost falls as accuracy falls. ``downward`` attacks every
clean-correct example at ε_g, then walks down and attacks at each ε only the examples broken at the ε
above: an example the attacks could not break in the larger ball counts as robust in the smaller one
(any point of the smaller ball was in the ball they searched), so an example that resists costs one
attack instead of one per grid point; the curve is monotone by construction too. ``independent``
attacks every clean-correct example at every ε (for comparison; its curve may rise with ε, a sign of a
weak attack or gradient masking). In every mode an example misclassified on clean inputs counts as wrong
at every ε, as in AutoAttack. At each ε the attacks run in order, each on the examples the previous ones
left standing, so a row of the evidence matrix is the worst case over all attacks, and each ε has its
own seed. With ``warm_start``, an attack that takes a starting point (``x_init``) begins each example
from a point of the ε walked before: upward, its own highest-loss point of ε_{k−1}, so its iterations
add up along the grid; downward, the point that broke the example at ε_{k+1}, projected into the
smaller ball (the minimum-norm pass's point, where that pass broke it), and an example the warm run
cannot break is attacked once more from a cold start before it counts as robust there (and so at every
smaller ε). A minimum-norm attack (FMN) runs once, before the grid, on the clean-correct examples: an
example it breaks at radius r counts as broken at every ε ≥ r without a grid attack, and the radii give
the curve between grid points (``RobustnessResult.eps_star``). The evidence is saved after each ε when a
``state_path`` is given, and a killed evaluation resumes from there with the same result. Under torchrun
each process attacks its share of the examples and the evidence is gathered; process 0 saves the state
and runs the sanity checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.attacks import Attack, build_eval_attacks
from robustft.attacks.base import FoldedBatchNorm, MinNormAttack, WarmStartable, accepts_start, is_min_norm
from robustft.config import EVAL_MODES, EvalConfig, eval_setting, format_eps
from robustft.config.eps import eps_grid_argument
from robustft.data import ImageSource, as_streamed_source, eval_batches
from robustft.errors import ConfigError, ForeignFileError
from robustft.eval.checks import SanityChecks
from robustft.eval.metrics import expected_robustness
from robustft.eval.result import RobustnessResult
from robustft.models.fold import conv_bn_pairs
from robustft.models.modes import modes_kept
from robustft.runs import atomic_write

log = logging.getLogger(__name__)

DOWNWARD = "downward"
"""Key of the warm starts of a downward walk: per example, the point that broke it at the ε above."""


def default_eps_grid(eps_target: float, step: float = 1 / 255) -> list[float]:
    """0, step, 2·step, …, ε_g (ε_g included even when it is not a multiple of the step)."""
    k = int(np.floor(eps_target / step + 1e-9))
    grid = [i * step for i in range(k + 1)]
    if eps_target - grid[-1] > 1e-12:
        grid.append(eps_target)
    grid[-1] = eps_target
    return grid


def _attack_rows(model: nn.Module, source: ImageSource, eps: float, attack: Attack | None, device: torch.device,
                 image_size: int, batch_size: int, bar: tqdm, starts: torch.Tensor | None = None,
                 keep: bool = False) -> tuple[np.ndarray, torch.Tensor | None]:
    """(alive, points): per example of ``source``, still classified correctly after the attack at ``eps``
    (clean without an attack or at ε = 0), and, with ``keep``, the attacked images (on the CPU). ``starts``
    (one per example of ``source``) are the attack's starting points (``x_init``)."""
    alive, points, done = [], [], 0
    for x, y in eval_batches(source, image_size, batch_size):
        x, y = x.to(device), y.to(device)
        if attack is None or eps == 0:
            x_adv = x
        elif starts is not None:
            x_adv = cast(WarmStartable, attack)(model, x, y, eps, x_init=starts[done:done + len(y)].to(device))
        else:
            x_adv = attack(model, x, y, eps)
        done += len(y)
        with torch.no_grad():
            alive.append((model(x_adv).argmax(1) == y).cpu().numpy())
        if keep:
            points.append(x_adv.detach().float().cpu())
        bar.update(len(y))
    found = np.concatenate(alive) if alive else np.zeros(0, dtype=bool)
    return found, (torch.cat(points) if points else None) if keep else None


def _warm_starts(state: _State, slot: str, attack: Attack | None, prev: int, broken_before: np.ndarray,
                 mode: str) -> tuple[torch.Tensor, np.ndarray] | None:
    """An attack's warm starts at this ε: (points, which examples start from theirs), or None when every
    example starts cold. Upward, the attack's own points at the ε below, for every example; downward, the
    point that broke an example at the ε above (a grid attack's, or the minimum-norm pass's point), for the
    examples broken there (``broken_before`` holds each example's breaker there)."""
    if attack is None or not accepts_start(attack) or state.starts_at != prev or slot not in state.starts:
        return None
    has = broken_before > 0 if mode == "downward" else np.ones(len(broken_before), dtype=bool)
    return state.starts[slot], has


def _attack_share(model: nn.Module, source: ImageSource, rows: np.ndarray, eps: float, name: str,
                  attack: Attack | None, starts: tuple[torch.Tensor, np.ndarray] | None, keep: bool,
                  retry_cold: bool, shape: tuple[int, ...], device: torch.device, image_size: int,
                  batch_size: int, show: bool) -> tuple[np.ndarray, torch.Tensor]:
    """(alive, points) of examples ``rows`` (this process's share) under ``attack`` at ``eps``: the examples
    with a warm start (``starts``, from :func:`_warm_starts`) attacked from it, the others cold, and with
    ``retry_cold`` the warm-started ones the attack could not break attacked once more, cold; ``points``
    holds the attacked images when ``keep`` (else it is empty)."""
    alive, points = np.zeros(len(rows), dtype=bool), torch.zeros((len(rows) if keep else 0, *shape))
    todo: list[tuple[np.ndarray, torch.Tensor | None]] = [(np.ones(len(rows), dtype=bool), None)] \
        if starts is None else [(~starts[1][rows], None), (starts[1][rows], starts[0])]
    while todo:
        part, start = todo.pop(0)
        if not part.any():
            continue
        desc = f"eval ε={format_eps(eps)} {name}" + (" (warm)" if start is not None else "")
        with tqdm(total=int(part.sum()), desc=desc, unit="img", disable=None if show else True, leave=False) as bar:
            alive[part], got = _attack_rows(model, source.subset(rows[part]), eps, attack, device, image_size,
                                            batch_size, bar, None if start is None else start[rows[part]], keep)
        if got is not None:
            points[torch.from_numpy(np.flatnonzero(part))] = got
        if start is not None and retry_cold:
            todo.append((part & alive, None))
    return alive, points


def _radii(model: nn.Module, source: ImageSource, attack: MinNormAttack, device: torch.device, image_size: int,
           batch_size: int, bar: tqdm, keep: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """Per example of ``source``: the smallest radius at which ``attack`` found a misclassified point (+inf
    where it found none), and with ``keep`` that point (on the CPU; the example itself where none was
    found; else an empty tensor)."""
    out, points = [], []
    for x, y in eval_batches(source, image_size, batch_size):
        x_adv, radius = attack.min_norm(model, x.to(device), y.to(device))
        out.append(radius.double().cpu().numpy())
        if keep:
            points.append(x_adv.detach().float().cpu())
        bar.update(len(y))
    return (np.concatenate(out) if out else np.zeros(0)), (torch.cat(points) if points else torch.zeros(0))


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
            ``strong`` and ``curve``; README "Evaluation you can check") built with their default settings.
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
    grid = sorted(set([0.0] + eps_grid_argument(eps_grid)))
    named = None if isinstance(attacks, Mapping) else \
        EvalConfig(attacks=[attacks] if isinstance(attacks, str) else list(attacks))
    norm = _threat_norm(norm, None if named is not None else cast(Mapping[str, Attack], attacks))
    checks = _sanity_checks(checks, named, norm)
    source = as_streamed_source(data)
    device = device if device is not None else next(model.parameters()).device
    image_size = image_size if image_size is not None else int(source.read(torch.arange(1)).shape[-1])
    # names: presets bring their own settings (the curve preset: warm starts, the AutoAttack check)
    attacks = build_eval_attacks(named, norm) if named is not None else cast(Mapping[str, Attack], attacks)
    if warm_start is None:
        warm_start = bool(eval_setting(named, "warm_start", False)) if named is not None else False
    if mode is None:
        mode = str(eval_setting(named, "mode", "incremental")) if named is not None else "incremental"
    if at_target is None:
        at_target = list(eval_setting(named, "at_target", [])) if named is not None else []
    unknown = sorted(set(at_target) - set(attacks))
    if unknown:
        raise ConfigError(f"at_target: {', '.join(unknown)} not among the attacks ({', '.join(attacks)})")
    if mode not in EVAL_MODES:
        raise ConfigError(f"mode must be one of {', '.join(EVAL_MODES)}; got {mode!r}")
    if not attacks:
        raise ConfigError("attacks: evaluate needs at least one attack, e.g. attacks=['apgd-ce']")
    try:
        expected_robustness(grid, [0.0] * len(grid), weights)
    except ValueError as err:
        raise ConfigError(f"weights: for the grid {[format_eps(e) for e in grid]}: {err}") from None
    names = list(attacks)
    fold_bn = fold_bn and bool(conv_bn_pairs(model))
    if fold_bn:  # attacked on the folded copy; every verdict below is the model's own
        attacks = {name: FoldedBatchNorm(attack) for name, attack in attacks.items()}
    warm = bool(warm_start) and mode != "independent"
    labels = source.labels.numpy().copy()
    protocol = {"mode": mode, "seed": seed, "norm": norm, "grid": [format_eps(e) for e in grid],
                "attack_order": names, "start": "warm" if warm else "cold", "fold_bn": bool(fold_bn),
                **({"at_target": list(at_target)} if at_target else {}), **(protocol or {})}
    key = _fingerprint(protocol, labels)
    state = _resume(state_path, key, len(grid), len(labels))
    correct, breaker = state.correct, state.breaker
    with modes_kept(model):  # the caller's modes come back, even on error
        model.eval()
        shard = ddp.current()
        shape = next(iter(eval_batches(source.subset(np.arange(1)), image_size, 1)))[0].shape[1:] if warm else ()
        # the order the grid is walked in: upward, or (downward) clean first, then from ε_g down
        order = list(range(len(grid))) if mode != "downward" else [0] + list(range(len(grid) - 1, 0, -1))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for i in range(state.done, len(order)):
                e, prev = order[i], order[i - 1] if i > 0 else -1
                torch.manual_seed(seed + e)
                # attacked: what survived the previous ε (incremental), what was broken at the ε above (downward),
                # or what is clean-correct (independent, and downward at ε_g); the rest keeps its state
                base = e - 1 if mode == "incremental" else 0
                row = correct[base].copy() if e > 0 else np.ones(len(labels), dtype=bool)
                breaker[e] = breaker[base] if e > 0 else -1
                # downward: what survived the ε above counts as robust here, unattacked
                settled = correct[prev] & row if mode == "downward" and prev > 0 else np.zeros_like(row)
                if grid[e] > 0 and state.radii is None and any(is_min_norm(a) for a in attacks.values()):
                    started = time.perf_counter()
                    state.radii, state.radius_by, found = _min_norm_pass(model, source, attacks, correct[0], device,
                                                                         image_size, batch_size, shard,
                                                                         shape if warm and mode == "downward" else None)
                    state.costs.append({"eps": None,
                                        "attack": "+".join(n for n, a in attacks.items() if is_min_norm(a)),
                                        "examples": int(correct[0].sum()),
                                        "seconds": round(time.perf_counter() - started, 3)})
                    if found is not None:  # downward: where the walk first attacks an example FMN broke, it starts here
                        broken = np.flatnonzero(np.isfinite(state.radii))
                        state.keep_start(DOWNWARD, broken, found[torch.from_numpy(broken)], len(labels))
                if grid[e] > 0 and state.radii is not None and state.radius_by is not None:
                    # broken within ε by the min-norm pass
                    hit = row & ~settled & (state.radii <= grid[e] * (1 + 1e-6))
                    row[hit], breaker[e, hit] = False, state.radius_by[hit]
                steps = [(0, "clean", None)] if grid[e] == 0 else \
                    [(k + 1, n, a) for k, (n, a) in enumerate(attacks.items())
                     if not is_min_norm(a) and (e == len(grid) - 1 or n not in at_target)]
                for k, name, attack in steps:
                    todo = np.flatnonzero(row & ~settled)
                    mine = np.array_split(todo, shard.world)[shard.rank]  # under torchrun: this process's share
                    slot = DOWNWARD if mode == "downward" else name
                    keep = warm and attack is not None and (mode == "downward" or accepts_start(attack))
                    starts = _warm_starts(state, slot, attack, prev, breaker[prev], mode) if warm else None
                    # downward, what survives here is settled as robust at every smaller ε: a warm start that
                    # fails gets a cold attack too
                    started = time.perf_counter()
                    alive, points = _attack_share(model, source, mine, grid[e], name, attack, starts, keep,
                                                  mode == "downward", shape, device, image_size, batch_size, shard.main)
                    if attack is not None and len(todo):
                        state.costs.append({"eps": format_eps(grid[e]), "attack": name, "examples": int(len(todo)),
                                            "seconds": round(time.perf_counter() - started, 3)})
                    alive = ddp.all_gather_array(alive)
                    if keep:
                        points = torch.from_numpy(ddp.all_gather_array(points.numpy()))
                        if mode == "downward":  # the point that broke each example, for the ε below
                            state.keep_start(slot, todo[~alive], points[torch.from_numpy(~alive)], len(labels))
                        else:  # every example's last point under this attack, for the ε above
                            state.keep_start(slot, todo, points, len(labels))
                    row[todo[~alive]] = False
                    breaker[e, todo[~alive]] = k
                if warm and grid[e] > 0:
                    state.starts_at = e
                correct[e] = row
                log.info("eval ε=%s: accuracy %.4f", format_eps(grid[e]), row.mean())
                if state_path is not None and shard.main:
                    state.done = i + 1
                    _save_state(state_path, key, state)
        result = RobustnessResult(grid, correct, labels, protocol, breaker=breaker, weights=weights,
                                  bootstrap=bootstrap, radii=state.radii, costs=state.costs)
        if checks is not None and shard.main:
            started = time.perf_counter()
            result.checks = checks(model, source, result, device=device, image_size=image_size, batch_size=batch_size)
            took = time.perf_counter() - started
            result.costs.append({"eps": None, "attack": "checks", "examples": int(len(labels)),
                                 "seconds": round(took, 3)})
            log.info("sanity checks: %.0f s", took)
        return result


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


def _min_norm_pass(model: nn.Module, source: ImageSource, attacks: Mapping[str, Attack], clean: np.ndarray,
                   device: torch.device, image_size: int, batch_size: int, shard: ddp.Shard,
                   keep: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """(radii, by, points): per example the smallest radius any minimum-norm attack found (+inf: none;
    clean-wrong examples are not attacked), the 1-based index in the attack order of the attack that found
    it, and, given ``keep`` (the shape of one image), the misclassified points at those radii (on the CPU;
    else None)."""
    radii, by = np.full(len(clean), np.inf), np.full(len(clean), -1, dtype=np.int8)
    points: torch.Tensor | None = None
    todo = np.flatnonzero(clean)
    mine = np.array_split(todo, shard.world)[shard.rank]
    for k, (name, attack) in enumerate(attacks.items()):
        if not is_min_norm(attack):
            continue
        with tqdm(total=len(mine), desc=f"eval {name} (minimum norm)", unit="img",
                  disable=None if shard.main else True, leave=False) as bar:
            mine_found, mine_points = _radii(model, source.subset(mine), cast(MinNormAttack, attack), device,
                                             image_size, batch_size, bar, keep is not None)
        found = ddp.all_gather_array(mine_found)
        better = found < radii[todo]
        radii[todo[better]], by[todo[better]] = found[better], k + 1
        if keep is not None:
            got = torch.from_numpy(ddp.all_gather_array(mine_points.reshape(len(mine), *keep).numpy()))
            if points is None:
                points = torch.zeros((len(clean), *keep))
            points[torch.from_numpy(todo[better])] = got[torch.from_numpy(better)]
        log.info("eval %s: a misclassified point found for %d of %d examples", name, int(np.isfinite(found).sum()),
                 len(todo))
    return radii, by, points


@dataclass
class _State:
    """What an evaluation carries from one ε to the next, and saves to resume: the evidence, the
    minimum-norm radii, and (warm starts) each attack's last points per example."""

    correct: np.ndarray
    breaker: np.ndarray
    done: int = 0
    radii: np.ndarray | None = None
    radius_by: np.ndarray | None = None
    starts: dict[str, torch.Tensor] = field(default_factory=dict)
    starts_at: int = -1
    """The grid index whose points ``starts`` holds (-1: none)."""
    costs: list[dict[str, Any]] = field(default_factory=list)
    """Seconds and examples of each attack run so far (:attr:`RobustnessResult.costs`)."""

    def keep_start(self, name: str, rows: np.ndarray, points: torch.Tensor, n: int) -> None:
        """Remember ``points`` as attack ``name``'s last points of examples ``rows`` (of ``n``)."""
        if name not in self.starts:
            self.starts[name] = torch.zeros((n, *points.shape[1:]), dtype=torch.float32)
        self.starts[name][torch.from_numpy(rows)] = points


def _fingerprint(protocol: dict, labels: np.ndarray) -> str:
    """A digest of everything that decides the evidence: protocol, examples and their labels."""
    text = json.dumps(protocol, sort_keys=True, default=str) + hashlib.sha256(labels.tobytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()


def _resume(path: Path | None, key: str, num_eps: int, n: int) -> _State:
    """A fresh state, or that of an interrupted evaluation of the same protocol read from ``path``."""
    state = _State(np.zeros((num_eps, n), dtype=bool), np.full((num_eps, n), -1, dtype=np.int8))
    if path is None or not path.exists():
        return state
    saved = _read_state(path)
    if saved["key"] != key or saved["correct"].shape != state.correct.shape:
        log.warning("%s belongs to an evaluation with another protocol; starting over", path)
        return state
    done = saved["done"]
    state.correct[:], state.breaker[:], state.done = saved["correct"], saved["breaker"], done  # rows not done: unset
    if "radii" in saved:
        state.radii, state.radius_by = saved["radii"], saved["radius_by"]
    state.starts = {k[len("start:"):]: torch.from_numpy(v) for k, v in saved.items() if k.startswith("start:")}
    state.starts_at = int(saved.get("starts_at", -1))
    state.costs = json.loads(str(saved["costs"])) if "costs" in saved else []
    log.info("resuming the evaluation in %s after %d of %d ε", path.parent, done, num_eps)
    return state


def _read_state(path: Path) -> dict[str, Any]:
    """The arrays of a state written by :func:`_save_state` (``key`` and ``done`` as str and int).

    Raises:
        ForeignFileError: the file is not such a state (not an .npz, pickled objects, other arrays).
    """
    try:
        with np.load(path) as z:
            state: dict[str, Any] = {k: z[k] for k in z.files}
            state["key"], state["done"] = str(z["key"]), int(z["done"])
            state["correct"] = z["correct"].astype(bool)
            state["breaker"] = z["breaker"]
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = (str(err.args[0]) if isinstance(err, KeyError) else  # numpy's advice to unpickle is not passed on
                  "it holds pickled data, which is never loaded" if "pickle" in str(err).lower() else
                  f"{type(err).__name__}: {err}")
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation ({reason}); delete it "
                               "to restart this evaluation") from None
    correct, breaker = state["correct"], state["breaker"]
    if correct.ndim != 2 or breaker.shape != correct.shape or not 0 <= state["done"] <= len(correct):
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation (arrays of other "
                               "shapes or counts); delete it to restart this evaluation")
    return state


def _save_state(path: Path, key: str, state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"key": np.asarray(key), "done": np.asarray(state.done), "correct": state.correct,
                                     "breaker": state.breaker, "starts_at": np.asarray(state.starts_at),
                                     "costs": np.asarray(json.dumps(state.costs))}
    if state.radii is not None and state.radius_by is not None:
        arrays.update(radii=state.radii, radius_by=state.radius_by)
    arrays.update({f"start:{k}": v.numpy() for k, v in state.starts.items()})
    atomic_write(path, lambda f: np.savez(f, **arrays))
