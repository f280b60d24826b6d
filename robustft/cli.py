"""Command line: argv → config → one library call per subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from robustft import distributed as ddp
from robustft.api import evaluate_run, fine_tune
from robustft.config import (
    BACKBONES,
    DATASETS,
    EVAL_ATTACKS,
    EVAL_MODES,
    EVAL_PRESETS,
    OBJECTIVES,
    SCHEDULES,
    TRAIN_ATTACKS,
    load_config,
    parse_eps_grid,
)
from robustft.errors import ConfigError, UserError, disk_full_reason
from robustft.eval.diagnostics import DEFAULT_GAP
from robustft.experiments import load_sweep, run_demo, sweep_and_report, sweep_plan, sweep_status
from robustft.experiments.cluster import RayOptions
from robustft.experiments.tune import SearchSettings, trials_table, tune_hparams
from robustft.export import export_run
from robustft.report import diagnose_run, evaluation_report, render_diagnosis, render_report, results_table

EXAMPLES = """examples:
  robustft train configs/fmnist_scheduled.yaml --set data.n_train=3000 --set attack.eps=8/255
  robustft train configs/fmnist_scheduled.yaml --resume        # continue a killed run
  robustft eval runs/fmnist_scheduled --eps-grid 0:8/255:1/255 --attacks apgd-ce,apgd-t --n 1000
  robustft eval runs/fmnist_scheduled/checkpoints/last.pt --attacks strong --n 200   # AutoAttack
  robustft table runs/fmnist_standard runs/fmnist_fix runs/fmnist_scheduled
  robustft diagnose runs/fmnist_fix --reference runs/fmnist_standard   # suboptimal transfer?
  robustft demo                                              # standard vs fix vs scheduled, with a report
  robustft sweep sweeps/schedules.yaml --report              # a grid of runs, then one report
  robustft sweep sweeps/paper.yaml --ray HEAD:6379 --gpus-per-run 4   # the paper's grid on a Ray cluster
  robustft report runs/demo --out reports/demo               # Markdown + self-contained HTML with plots
  robustft tune configs/fmnist_scheduled.yaml --preset paper --samples 16 --time-budget 1800
"""


DEBUG_FLAGS = ("-v", "--debug")
DEBUG_HELP = "on an error, print its full traceback too (by default: one line naming the problem and the fix)"
USER_ERRORS = (UserError,)
"""Errors printed as one line (exit code 2): their messages say what to do (robustft/errors.py). Any other error
is a bug and keeps its traceback: :func:`main` raises it on."""


def registered_kinds() -> str:
    """The kinds a config can name, from the registries (``robustft train --help``)."""
    return "\n".join(f"{r.key} (registered):\n{r.help()}" for r in (BACKBONES, DATASETS, SCHEDULES, OBJECTIVES, TRAIN_ATTACKS,
                                                                           EVAL_ATTACKS))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustft", description="Robust fine-tuning with Epsilon-Scheduling, "
                                "and honest robustness evaluation.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the results")
    p.add_argument(*DEBUG_FLAGS, action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune (then evaluate) a config into a run directory",
                       epilog=registered_kinds(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", type=Path, help="YAML config (see configs/)")
    _add_set(t, "override config values after the config, e.g. --set attack.eps=8/255 train.epochs=4")
    t.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint; --set may "
                   "change optimiser settings (optim.lr, optim.grad_clip, …), recorded in RUN/resumes.jsonl")
    e = sub.add_parser("eval", help="evaluate a run's checkpoint over an ε grid with one or more attacks",
                       description="Worst case over the attacks at each ε, incremental over the grid; results "
                       "in RUN/eval/NAME/ (resumed if interrupted); sanity checks against false robustness.")
    e.add_argument("target", type=Path, metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--eps-grid", metavar="SPEC", help="START:STOP:STEP (e.g. 0:8/255:1/255) or a comma list; "
                   "default 0 … ε_g by eval.eps_step")
    presets = ", ".join(f"{name} ({'+'.join(attacks)})" for name, attacks in EVAL_PRESETS.items())
    e.add_argument("--attacks", metavar="A,B", help=f"comma list of {', '.join(EVAL_ATTACKS)}, or a preset: {presets}")
    e.add_argument("--n", type=int, help="test examples (stratified subset)")
    e.add_argument("--mode", choices=EVAL_MODES, help="how the grid is walked (default: incremental; the curve "
                   "preset's: downward)")
    e.add_argument("--name", help="folder under RUN/eval/ (default: the attacks)")
    e.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    _add_set(e, "override eval values, e.g. --set eval.num_steps=20 eval.restarts=2")
    s = sub.add_parser("table", help="print the results table of run directories")
    s.add_argument("run_dirs", type=Path, nargs="+")
    s.add_argument("--eval", dest="evaluation", metavar="NAME", help="which evaluation (folder under RUN/eval/); "
                   "default: each run's configured one")
    d = sub.add_parser("diagnose", help="diagnose suboptimal transfer: delay time, clean-accuracy gap, flags, "
                       "per-epoch validation curves")
    d.add_argument("run_dir", type=Path)
    d.add_argument("--reference", type=Path, metavar="RUN_DIR",
                   help="a standard fine-tuning run (ε = 0) of the same config, for the gap and the delay")
    d.add_argument("--gap", type=float, default=DEFAULT_GAP, metavar="ACC",
                   help=f"clean-accuracy gap to the reference that counts as suboptimal transfer (default {DEFAULT_GAP}"
                   " = 10 points)")
    d.add_argument("--delay-threshold", type=float, metavar="ACC",
                   help="validation clean accuracy whose first crossing is the delay time (default: the run's "
                   "train.delay_threshold; the paper's 0.05 suits 100–200 classes)")
    d.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    _experiment_parsers(sub)
    for command in sub.choices.values():  # also after the subcommand; SUPPRESS keeps a flag given before it
        command.add_argument(*DEBUG_FLAGS, action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def _add_set(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set A=1 B=2`` and ``--set A=1 --set B=2`` alike: every pair, in order, in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="SECTION.KEY=VALUE", help=f"{help_text} (several pairs, repeatable)")


JOBS_HELP = ("runs side by side, each in its own process with an equal share of the threads (default 1; on a "
                   "CPU, 2 finishes sooner than 1, see robustft/experiments/sweep.py)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _experiment_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("sweep", help="run a grid of configs (a sweep file); DONE runs are skipped, failures recorded",
                       description="A base config × named variants × a grid over section.key values, each point "
                       "an ordinary run directory (format: robustft/experiments/sweep.py, example: sweeps/).")
    w.add_argument("sweep", type=Path, help="sweep YAML")
    w.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    w.add_argument("--status", action="store_true", help="print every point's state (DONE, running and its epoch, "
                   "failed, …) from the run directories and OUT_DIR/sweep.json, and stop; safe while the sweep runs")
    w.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help=JOBS_HELP)
    w.add_argument("--report", action="store_true", help="render the report of the finished runs into OUT_DIR/report")
    c = w.add_argument_group("on a Ray cluster (docs/experiments.md, the Ray cluster)")
    c.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="every point a Ray task on the cluster at ADDRESS (e.g. 10.0.0.1:6379, or auto); without "
                   "ADDRESS, Ray on this machine. Run it from a folder every node sees at the same path")
    c.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N", help="CPUs (and torch threads) per point "
                   "(default 1)")
    c.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N", help="GPUs per point (default 0); 2 or "
                   "more trains each point under torchrun, one process per GPU")
    c.add_argument("--processes-per-run", type=_positive_int, default=None, metavar="N",
                   help="torchrun processes per point (default: --gpus-per-run when ≥ 2, else 1; on CPUs, gloo)")
    c.add_argument("--max-retries", type=int, default=2, metavar="N", help="restarts of a point whose worker died; "
                   "each resumes the run from its last checkpoint (default 2)")
    r = sub.add_parser("report", help="Markdown + self-contained HTML report (tables, t-tests, flags, plots) of runs",
                       description="Reads run directories only. A folder of run directories (a sweep's out_dir) "
                       "stands for all of them.")
    r.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", type=Path, required=True, help="folder for report.md, report.html and figures/")
    r.add_argument("--title", default="robustft report")
    r.add_argument("--eval", dest="evaluation", metavar="NAME", help="which evaluation (folder under RUN/eval/)")
    r.add_argument("--delay-threshold", type=float, metavar="ACC", help="validation clean accuracy that defines "
                   "the delay time (default: each run's train.delay_threshold)")
    u = sub.add_parser("tune", help="search LR and weight decay with ASHA on Ray Tune; write the best config",
                       description="Log-uniform LR and weight decay, objective validation clean accuracy, ASHA "
                       "early stopping; OUT/best.yaml is ready to train. Needs pip install 'robustft[tune]'.")
    u.add_argument("config", type=Path)
    _add_set(u, "override config values after the config, e.g. --set data.n_train=1000 train.epochs=4")
    u.add_argument("--out", type=Path, help="output folder (default runs/tune_CONFIG)")
    u.add_argument("--preset", choices=["none", "paper"], default="none",
                   help="paper: tune on fix and reuse the result for the config (the paper's protocol)")
    u.add_argument("--samples", type=int, default=8, help="trials (default 8)")
    u.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop the search after this long")
    u.add_argument("--lr-range", default="1e-5,1e-1", metavar="LOW,HIGH")
    u.add_argument("--wd-range", default="1e-5,1e-1", metavar="LOW,HIGH")
    u.add_argument("--grace-period", type=int, default=1, metavar="EPOCHS")
    u.add_argument("--cpus-per-trial", type=float, default=1)
    u.add_argument("--gpus-per-trial", type=float, default=0)
    u.add_argument("--address", help="Ray cluster address (default: a local Ray on this machine)")
    u.add_argument("--seed", type=int, default=0, help="seed of the sampled configurations")
    m = sub.add_parser("demo", help="the finding on real data: standard vs fix vs Epsilon-Scheduling, evaluated, "
                       "with a report (docs/demo.md gives its time; resumable)")
    m.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder of the runs and the report")
    m.add_argument("--seeds", type=int, default=1, help="repeat each run over this many seeds (default 1)")
    m.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help=JOBS_HELP)
    x = sub.add_parser("export", help="RobustBench-format model info and the whole classifier (safetensors) of a run",
                       description="Writes OUT/model_info.json (RobustBench's fields, plus E.adv, the curve, the "
                       "protocol and the flags) and OUT/model.safetensors, which robustft.load_classifier(OUT) "
                       "rebuilds without the run directory.")
    x.add_argument("target", type=Path, metavar="RUN_DIR|CHECKPOINT")
    x.add_argument("--out", type=Path, required=True, help="folder to write the export into")
    x.add_argument("--eval", dest="evaluation", metavar="NAME", help="which evaluation (folder under RUN/eval/); "
                   "default: the run config's own")
    x.add_argument("--name", help="the model's name in model_info.json (default: the run's folder name)")


def _diagnose(args: argparse.Namespace) -> None:
    d = diagnose_run(args.run_dir, args.reference, args.gap, args.delay_threshold)
    print(json.dumps(d.to_dict(), indent=2) if args.json else render_diagnosis(d))


def _train(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    run = fine_tune(cfg, name=args.config.stem, resume=args.resume)
    if not ddp.current().main:  # under torchrun, process 0 prints
        return
    print(results_table([run.path]))
    print(f"\nrun directory: {run.path}")


def _eval(args: argparse.Namespace) -> None:
    overrides = list(args.overrides)
    if args.eps_grid:
        overrides.append(f"eval.eps_grid=[{', '.join(repr(e) for e in parse_eps_grid(args.eps_grid))}]")
    for key, value in (("attacks", args.attacks), ("n", args.n), ("mode", args.mode)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    if args.no_checks:
        overrides.append("eval.checks=false")
    result = evaluate_run(args.target, overrides, name=args.name)
    if ddp.current().main:
        print(evaluation_report(result))


def _range(text: str, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--{name}: expected LOW,HIGH such as 1e-5,1e-1, got {text!r}") from None
    return low, high


def _sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.sweep)
    if args.dry_run:
        print(sweep_plan(spec))
        return 0
    if args.status:
        print(sweep_status(spec))
        return 0
    ray = None
    if args.ray is not None:
        if args.jobs != 1:
            raise ConfigError("--jobs and --ray exclude each other: on Ray, --cpus-per-run and --gpus-per-run decide "
                              "how many points run at once")
        ray = RayOptions(address=args.ray or None, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                         processes_per_run=args.processes_per_run, max_retries=args.max_retries)
    else:
        given = [f for f, v, d in (("--cpus-per-run", args.cpus_per_run, 1.0), ("--gpus-per-run", args.gpus_per_run, 0.0),
                                   ("--processes-per-run", args.processes_per_run, None),
                                   ("--max-retries", args.max_retries, 2)) if v != d]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to sweeps on Ray: add --ray (or --ray ADDRESS)")
    result = sweep_and_report(spec, args.jobs, args.report, f"robustft sweep {args.sweep.stem}", f"sweep {args.sweep}",
                              ray=ray)
    print(result.text())
    return 1 if result.failed else 0


def _report(args: argparse.Namespace) -> None:
    files = render_report(args.run_dirs, args.out, args.title, args.evaluation, args.delay_threshold)
    print(f"report: {files.markdown}\n        {files.html}")


def _tune(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    settings = SearchSettings(lr=_range(args.lr_range, "lr-range"), weight_decay=_range(args.wd_range, "wd-range"),
                              num_samples=args.samples, time_budget_s=args.time_budget, grace_period=args.grace_period,
                              cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, seed=args.seed)
    result = tune_hparams(cfg, args.out or Path("runs") / f"tune_{args.config.stem}", settings, args.preset,
                          args.address, name=f"{args.config.stem}_tuned")
    print(trials_table(result))
    print(f"\nbest: optim.lr={result.best['lr']:.3g} optim.weight_decay={result.best['weight_decay']:.3g} "
          f"(validation clean accuracy {100 * result.best_score:.1f} %)\nready to run: robustft train {result.best_config}")


def _demo(args: argparse.Namespace) -> int:
    result = run_demo(args.out, args.seeds, args.jobs)
    print(result.text())
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit code. A :class:`~robustft.errors.UserError` (or a full disk) prints as one
    line ``error: MESSAGE`` with exit code 2, after its traceback under ``--debug``; any other exception is a bug
    and is raised on, so ``robustft`` and ``python -m robustft`` print its traceback (exit code 1)."""
    args = _parser().parse_args(argv)
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # under torchrun, process 0 logs progress
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    commands = {"train": _train, "eval": _eval, "diagnose": _diagnose, "sweep": _sweep, "report": _report,
                "tune": _tune, "demo": _demo,
                "export": lambda a: print(f"export: {export_run(a.target, a.out, a.evaluation, a.name)}"),
                "table": lambda a: print(results_table(a.run_dirs, a.evaluation))}
    try:
        return commands[args.command](args) or 0
    except USER_ERRORS as err:
        return _fail(str(err), args.debug)
    except OSError as err:  # a full disk outside a checkpoint write (those are a DiskFullError already)
        reason = disk_full_reason(err)
        if reason is None:
            raise
        return _fail(f"disk full while writing {err.filename or 'a file'} ({reason}); free some space, then run "
                     "the same command again (train: with --resume)", args.debug)
    except KeyboardInterrupt:
        print("interrupted; run the same command again (with --resume for train) to continue", file=sys.stderr)
        return 130


def _fail(message: str, debug: bool) -> int:
    """Print ``error: MESSAGE`` to stderr, after the traceback of the error being handled under ``--debug``;
    the exit code of a user error."""
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
