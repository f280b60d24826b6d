"""The public entry points: fine-tune a configured run and evaluate a run directory.

The CLI calls exactly these; they are also the Python API::

    from robustft import load_config, fine_tune
    run = fine_tune(load_config("configs/fmnist_scheduled.yaml", ["train.epochs=2"]))
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustft import distributed as ddp
from robustft.attacks import build_eval_attacks, describe_attack
from robustft.config import (
    Config,
    apply_overrides,
    config_to_dict,
    evaluation_name,
)
from robustft.data import as_source, build_data, stratified_subset
from robustft.errors import ConfigError, MissingFileError, RunExistsError
from robustft.eval import RobustnessResult, SanityChecks, default_eps_grid, evaluate
from robustft.runs import RESUMABLE_KEYS, EpochRow, RunDir, remove_temp_files, run_config_from_dict, versions
from robustft.train import fit_config, load_model_weights, resolve_device
from robustft.train.checkpoint import kept_rng_state
from robustft.train.speed import Accelerator, kept_layout_and_modes
from robustft.train.tune import build_tuned_model

log = logging.getLogger(__name__)


def run_dir_for(cfg: Config, name: str | None = None) -> RunDir:
    """The run directory of a config: ``train.out_dir / (train.run_name or name)``."""
    run_name = cfg.train.run_name or name
    if not run_name:
        raise ConfigError("train.run_name: give the run a name (or train from a config file, whose name is used)")
    return RunDir(Path(cfg.train.out_dir).expanduser() / run_name)


def fine_tune(cfg: Config, name: str | None = None, resume: bool = False,
              on_epoch: Callable[[EpochRow], None] | None = None, allow_changes: bool = True) -> RunDir:
    """Train (or resume) a run, evaluate it if ``train.evaluate``, and mark it DONE; ``on_epoch`` gets each
    epoch's metrics row (see :func:`robustft.train.fit`).

    A run directory that an earlier start left without a checkpoint (:meth:`RunDir.abandoned`) is taken over
    by a new start, with or without ``resume``. A resume may change the keys of ``RESUMABLE_KEYS`` (the change
    is logged and recorded in the run) unless ``allow_changes`` is false (a sweep: each run is one config);
    a DONE run is never changed.

    Raises:
        ConfigError: the run has no name (``train.run_name`` and ``name`` are both unset), or a resume's config
            differs from the run's in another key.
        RunExistsError: the run directory exists, has a checkpoint, and ``resume`` is false.
    """
    run = run_dir_for(cfg, name)
    shard = ddp.init_from_env(resolve_device(cfg.train.device))
    take_over = run.abandoned()
    if run.path.exists() and not resume and not take_over:
        raise RunExistsError(f"{run.path} already exists; continue it with --resume, or choose another "
                             "train.run_name / train.out_dir")
    if resume and not take_over and run.config_path.exists():
        run.resume_changes(cfg, RESUMABLE_KEYS if allow_changes and not run.done else frozenset())
    if run.done:
        log.info("%s is already DONE; nothing to do", run.path)
        return run
    resume = resume and run.checkpoint_path.exists()
    ddp.barrier()  # every process has looked at the run directory before process 0 creates it
    if shard.main:
        run.remove_temp_files()  # of writes a kill interrupted
    if take_over and shard.main:
        log.warning("%s has no checkpoint (an earlier start stopped before its first one); this start takes it "
                    "over and replaces its config.yaml and env.json", run.path)
    if not resume and shard.main:
        run.create(cfg)
    elif shard.main:
        _warn_thread_change(run)
    with kept_rng_state():  # the caller's random generators as they were
        fit_config(cfg, run, resume=resume, on_epoch=on_epoch)
    if cfg.train.evaluate:
        evaluate_run(run.path)
    if shard.main:
        run.mark_done()
    ddp.barrier()
    return run


def _warn_thread_change(run: RunDir) -> None:
    """A resume under another intra-op thread count continues correctly but not bit-identically (docs/reproducibility.md)."""
    env = run.path / "env.json"
    started = json.loads(env.read_text()).get("threads") if env.is_file() else None
    if started is not None and started != torch.get_num_threads():
        log.warning("%s started with %d intra-op thread(s) and resumes with %d: the continuation is correct but "
                    "not bit-identical to an uninterrupted run (set OMP_NUM_THREADS=%d for that)", run.path,
                    started, torch.get_num_threads(), started)


def resolve_target(target: str | Path) -> tuple[RunDir, Path]:
    """(run directory, checkpoint) of a run directory or of a checkpoint file inside one.

    Raises:
        MissingFileError: neither exists, or a checkpoint has no run config beside it.
    """
    p = Path(target)
    if p.is_dir():
        return RunDir(p), RunDir(p).evaluated_checkpoint()
    if p.is_file():
        run = RunDir(p.parent.parent if p.parent.name == "checkpoints" else p.parent)
        if not run.config_path.is_file():
            raise MissingFileError(f"{p}: a checkpoint is evaluated with its run's config, but there is no "
                                   f"{run.config_path}; keep checkpoints inside their run directory")
        return run, p
    raise MissingFileError(f"{p}: no such run directory or checkpoint file")


def evaluate_run(target: str | Path, overrides: list[str] | None = None, name: str | None = None, *,
                 model: nn.Module | None = None, data: Any = None) -> RobustnessResult:
    """Evaluate a run's checkpoint (``target``: the run directory or a checkpoint file in it) on its test
    split under the eval section (with ``overrides``, e.g. ``eval.n=500``).

    Writes ``RUN/eval/NAME/robustness.json`` and ``correct.npz`` (NAME: ``name``, else the attacks);
    an interrupted evaluation with the same protocol resumes from ``partial.npz`` there. Under torchrun
    the processes share the test examples and process 0 runs the sanity checks and writes the result.

    A run of :func:`robustft.fit` (``run=...``), whose model and data robustft cannot rebuild, is evaluated with
    ``model`` (its architecture: the run's evaluated weights are loaded into it; its memory layout and train/eval
    modes are given back) and ``data`` (the test examples: a DataLoader, ``(images, labels)`` tensors or an image
    source; ``eval.n`` of them, stratified); the evaluation is stored in the run like any other, so
    ``robustft table``, ``diagnose``, ``report`` and ``export`` see it. Any run may be evaluated so.

    Raises:
        ConfigError: only one of ``model`` and ``data``, or neither for a run of :func:`robustft.fit`.
    """
    run, checkpoint = resolve_target(target)
    cfg = run.config()
    if overrides:
        cfg = run_config_from_dict(apply_overrides(config_to_dict(cfg), overrides))
    if (model is None) != (data is None):
        raise ConfigError("model, data: give both (the run's architecture and the test data) or neither (the run's "
                          "config builds them)")
    if model is None and run.own_model():
        raise ConfigError(f"{run.path} is a run of robustft.fit on a model and data robustft cannot rebuild "
                          f"(model.name and data.name: unknown); evaluate it in Python: "
                          f"robustft.evaluate_run({str(run.path)!r}, model=..., data=...)")
    with kept_layout_and_modes(model) if model is not None else nullcontext():
        return _evaluate_run(run, checkpoint, cfg, name, model, data)


def _evaluate_run(run: RunDir, checkpoint: Path, cfg: Config, name: str | None, model: nn.Module | None,
                  data: Any) -> RobustnessResult:
    """:func:`evaluate_run` on the model and test data of ``cfg``, or on ``model`` and ``data`` when given."""
    grid = eval_grid(cfg)
    device = resolve_device(cfg.train.device) if model is None else next(model.parameters()).device
    ddp.init_from_env(device)
    if model is None:
        built = build_data(cfg.data)
        model = build_tuned_model(cfg.model, cfg.finetune, built.head_classes(cfg.model.num_classes)).to(device)
        source, image_size = built.test, cfg.data.image_size
    else:
        source = as_source(data)
        image_size = int(source.read(torch.arange(1)).shape[-1])
    progress = load_model_weights(checkpoint, model)
    Accelerator(replace(cfg.train, compile=False), device).prepare(model)  # channels-last as in training: the checks' attacks
    test = source.subset(stratified_subset(source.labels, cfg.eval.n, cfg.data.split_seed))
    attacks = build_eval_attacks(cfg.eval, cfg.attack.norm)
    out = run.evaluation_dir(name or evaluation_name(cfg.eval))
    if ddp.current().main:
        remove_temp_files(out)  # of a killed write of partial.npz
    checks = SanityChecks.from_config(cfg.eval, cfg.attack.norm) if cfg.eval.checks else False
    protocol = {"attacks": [describe_attack(k, a) for k, a in attacks.items()], "norm": cfg.attack.norm,
                "split": "test", "n": len(test), "checkpoint": checkpoint.name,
                "checkpoint_epochs": progress["epochs_done"], "versions": versions()}
    result = evaluate(model, test, grid, attacks, device=device, image_size=image_size,
                      batch_size=cfg.data.eval_batch_size, mode=cfg.eval.settings.mode, seed=cfg.eval.seed,
                      protocol=protocol, state_path=out / "partial.npz", checks=checks,
                      weights=cfg.eval.eps_weights, bootstrap=cfg.eval.bootstrap,
                      warm_start=cfg.eval.settings.warm_start, fold_bn=cfg.eval.fold_bn,
                      at_target=cfg.eval.settings.at_target)
    if ddp.current().main:
        result.save(out)
        (out / "partial.npz").unlink(missing_ok=True)
    ddp.barrier()
    return result


def eval_grid(cfg: Config) -> list[float]:
    """The configured ε grid, or 0, eps_step, …, ε_g."""
    return list(cfg.eval.eps_grid) if cfg.eval.eps_grid else default_eps_grid(cfg.attack.eps, cfg.eval.eps_step)
