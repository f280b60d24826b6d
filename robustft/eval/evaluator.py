"""Robustness over an ε grid: which test examples survive every attack at each ε.

In ``incremental`` mode the grid is walked upward and only the examples still correct at the previous
ε are attacked: an adversarial example inside a small ball is inside every larger one, so the curve is
monotone by construction and the cost falls as accuracy falls. ``independent`` attacks every example
that is correct on clean inputs at every ε (for comparison; its curve may rise with ε, a sign of a weak
attack or gradient masking). In both modes an example misclassified on clean inputs counts as wrong at
every ε, as in AutoAttack, and at the first ε > 0 both modes attack the same examples with the same seed.
At each ε the attacks run in order, each on the examples the previous ones left standing, so a
row of the evidence matrix is the worst case over all attacks. The evidence is saved after each ε when
a ``state_path`` is given, and a killed evaluation resumes from there with the same result. Under
torchrun each process attacks its share of the examples and the evidence is gathered; process 0 saves
the state and runs the sanity checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.attacks import Attack, build_eval_attacks
from robustft.config import EvalConfig, format_eps
from robustft.data import ImageSource, as_source, eval_batches
from robustft.errors import ForeignFileError
from robustft.eval.checks import SanityChecks
from robustft.eval.metrics import expected_robustness
from robustft.eval.result import RobustnessResult
from robustft.runs import atomic_write

log = logging.getLogger(__name__)


def default_eps_grid(eps_target: float, step: float = 1 / 255) -> list[float]:
    """0, step, 2·step, …, ε_g (ε_g included even when it is not a multiple of the step)."""
    k = int(np.floor(eps_target / step + 1e-9))
    grid = [i * step for i in range(k + 1)]
    if eps_target - grid[-1] > 1e-12:
        grid.append(eps_target)
    grid[-1] = eps_target
    return grid


def _survivors(model: nn.Module, source: ImageSource, eps: float, attack: Attack | None, device: torch.device,
               image_size: int, batch_size: int, bar: tqdm) -> np.ndarray:
    """Boolean per example of ``source``: still classified correctly after the attack at ``eps`` (clean
    without an attack or at ε = 0)."""
    out = []
    for x, y in eval_batches(source, image_size, batch_size):
        x, y = x.to(device), y.to(device)
        x_adv = attack(model, x, y, eps) if attack is not None and eps > 0 else x
        with torch.no_grad():
            out.append((model(x_adv).argmax(1) == y).cpu().numpy())
        bar.update(len(y))
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def evaluate(model: nn.Module, data: Any, eps_grid: Sequence[float],
             attacks: Mapping[str, Attack] | Sequence[str] = ("apgd-ce",), *, device: torch.device | None = None,
             image_size: int | None = None, batch_size: int = 256, mode: str = "incremental", seed: int = 0,
             protocol: dict | None = None, state_path: Path | None = None, checks: SanityChecks | bool | None = None,
             weights: list[float] | None = None, bootstrap: int = 1000, norm: str = "linf") -> RobustnessResult:
    """Attack ``data`` at every ε of the grid with every attack; returns the evidence and the protocol.

    Args:
        model: any module taking [0, 1] pixels and returning logits.
        data: an image source, ``(images, labels)`` tensors, or any iterable of ``(images, labels)`` batches (a
            DataLoader), read once; images float in [0, 1] (or robustft's uint8 sources).
        attacks: name → attack, run in this order at each ε (worst case over all of them); or evaluation
            attack names (``apgd-ce``, ``apgd-t``, ``square``, ``autoattack``, the presets ``default`` and
            ``strong``; README "Evaluation you can check") built with their default settings.
        device: where to attack (default: the model's).
        image_size: side of the images the model takes (default: the data's).
        norm: threat model of attacks given by name (``linf`` or ``l2``).
        mode: ``incremental`` or ``independent`` (see the module docstring).
        seed: seeds each ε (as ``seed + index``) without disturbing the caller's random state.
        protocol: extra facts recorded with the result (attack descriptions, split, checkpoint, ...).
        state_path: where the evidence is saved after each ε; an evaluation with the same protocol found
            there is resumed.
        checks: sanity checks to run on the finished result (None: none).
        weights: density of ε at the grid points for the expected robustness (None: uniform).
        bootstrap: resamples for the confidence intervals.

    The model is put in eval mode. ε = 0 is added to the grid if missing (its row is clean accuracy).
    ``checks=True`` runs the default sanity checks (:class:`SanityChecks`).
    """
    source = as_source(data)
    device = device if device is not None else next(model.parameters()).device
    image_size = image_size if image_size is not None else int(source.read(torch.arange(1)).shape[-1])
    if not isinstance(attacks, Mapping):
        attacks = build_eval_attacks(EvalConfig(attacks=[attacks] if isinstance(attacks, str) else list(attacks)), norm)
    if checks is True:
        checks = SanityChecks(norm=norm)
    checks = checks or None
    if mode not in ("incremental", "independent"):
        raise ValueError(f"mode must be incremental or independent, got {mode!r}")
    if not attacks:
        raise ValueError("evaluate needs at least one attack")
    grid = sorted(set([0.0] + [float(e) for e in eps_grid]))
    try:
        expected_robustness(grid, [0.0] * len(grid), weights)
    except ValueError as err:
        raise ValueError(f"ε weights for the grid {[format_eps(e) for e in grid]}: {err}") from None
    names = list(attacks)
    labels = source.labels.numpy().copy()
    protocol = {"mode": mode, "seed": seed, "grid": [format_eps(e) for e in grid], "attack_order": names,
                **(protocol or {})}
    key = _fingerprint(protocol, labels)
    correct, breaker, start = _resume(state_path, key, len(grid), len(labels))
    model.eval()
    shard = ddp.current()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for e in range(start, len(grid)):
            torch.manual_seed(seed + e)
            # attacked: what survived the previous ε (incremental) or clean (independent); the rest stays broken
            base = e - 1 if mode == "incremental" else 0
            row = correct[base].copy() if e > 0 else np.ones(len(labels), dtype=bool)
            breaker[e] = breaker[base] if e > 0 else -1
            steps = [("clean", None)] if grid[e] == 0 else list(attacks.items())
            for k, (name, attack) in enumerate(steps):
                todo = np.flatnonzero(row)
                mine = np.array_split(todo, shard.world)[shard.rank]  # under torchrun: this process's share
                desc = f"eval ε={format_eps(grid[e])} {name}"
                with tqdm(total=len(mine), desc=desc, unit="img", disable=None if shard.main else True,
                          leave=False) as bar:
                    alive = ddp.all_gather_array(_survivors(model, source.subset(mine), grid[e], attack, device,
                                                            image_size, batch_size, bar))
                row[todo[~alive]] = False
                breaker[e, todo[~alive]] = 0 if attack is None else k + 1
            correct[e] = row
            log.info("eval ε=%s: accuracy %.4f", format_eps(grid[e]), row.mean())
            if state_path is not None and shard.main:
                _save_state(state_path, key, e + 1, correct, breaker)
    result = RobustnessResult(grid, correct, labels, protocol, breaker=breaker, weights=weights,
                              bootstrap=bootstrap)
    if checks is not None and shard.main:
        started = time.perf_counter()
        result.flags = checks(model, source, result, device=device, image_size=image_size, batch_size=batch_size)
        log.info("sanity checks: %.0f s", time.perf_counter() - started)
    return result


def _fingerprint(protocol: dict, labels: np.ndarray) -> str:
    """A digest of everything that decides the evidence: protocol, examples and their labels."""
    text = json.dumps(protocol, sort_keys=True, default=str) + hashlib.sha256(labels.tobytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()


def _resume(path: Path | None, key: str, num_eps: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(correct, breaker, first ε to do): fresh, or read from an interrupted evaluation of the same protocol."""
    correct, breaker = np.zeros((num_eps, n), dtype=bool), np.full((num_eps, n), -1, dtype=np.int8)
    if path is None or not path.exists():
        return correct, breaker, 0
    saved_key, done, saved_correct, saved_breaker = _read_state(path)
    if saved_key != key or saved_correct.shape != correct.shape:
        log.warning("%s belongs to an evaluation with another protocol; starting over", path)
        return correct, breaker, 0
    correct[:done], breaker[:done] = saved_correct[:done], saved_breaker[:done]
    log.info("resuming the evaluation in %s after %d of %d ε", path.parent, done, num_eps)
    return correct, breaker, done


def _read_state(path: Path) -> tuple[str, int, np.ndarray, np.ndarray]:
    """(key, ε done, correct, breaker) of a state written by :func:`_save_state`.

    Raises:
        ForeignFileError: the file is not such a state (not an .npz, pickled objects, other arrays).
    """
    try:
        with np.load(path) as z:
            state = str(z["key"]), int(z["done"]), z["correct"].astype(bool), z["breaker"]
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = (str(err.args[0]) if isinstance(err, KeyError) else  # numpy's advice to unpickle is not passed on
                  "it holds pickled data, which is never loaded" if "pickle" in str(err).lower() else
                  f"{type(err).__name__}: {err}")
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation ({reason}); delete it "
                               "to restart this evaluation") from None
    if state[2].ndim != 2 or state[3].shape != state[2].shape or not 0 <= state[1] <= len(state[2]):
        raise ForeignFileError(f"{path} is not the partial results of a robustft evaluation (arrays of other "
                               "shapes or counts); delete it to restart this evaluation")
    return state


def _save_state(path: Path, key: str, done: int, correct: np.ndarray, breaker: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, key=np.asarray(key), done=np.asarray(done), correct=correct,
                                          breaker=breaker))
