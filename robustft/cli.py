"""Command line: argv → config → one library call per subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from robustft.api import RunExistsError, evaluate_run, fine_tune
from robustft.config import ConfigError, load_config, parse_eps_grid
from robustft.eval.diagnostics import DEFAULT_GAP
from robustft.report import diagnose_run, evaluation_report, render_diagnosis, results_table
from robustft.train import NonFiniteLossError

EXAMPLES = """examples:
  robustft train configs/fmnist_scheduled.yaml --set data.n_train=3000 --set attack.eps=8/255
  robustft train configs/fmnist_scheduled.yaml --resume        # continue a killed run
  robustft eval runs/fmnist_scheduled --eps-grid 0:8/255:1/255 --attacks apgd-ce,apgd-t --n 1000
  robustft eval runs/fmnist_scheduled/checkpoints/last.pt --attacks strong --n 200   # AutoAttack
  robustft table runs/fmnist_standard runs/fmnist_fix runs/fmnist_scheduled
  robustft diagnose runs/fmnist_fix --reference runs/fmnist_standard   # suboptimal transfer?
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustft", description="Robust fine-tuning with Epsilon-Scheduling, "
                                "and honest robustness evaluation.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the results")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune (then evaluate) a config into a run directory")
    t.add_argument("config", type=Path, help="YAML config (see configs/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set attack.eps=8/255 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    e = sub.add_parser("eval", help="evaluate a run's checkpoint over an ε grid with one or more attacks",
                       description="Worst case over the attacks at each ε, incremental over the grid; results "
                       "in RUN/eval/NAME/ (resumed if interrupted); sanity checks against false robustness.")
    e.add_argument("target", type=Path, metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--eps-grid", metavar="SPEC", help="START:STOP:STEP (e.g. 0:8/255:1/255) or a comma list; "
                   "default 0 … ε_g by eval.eps_step")
    e.add_argument("--attacks", metavar="A,B", help="comma list of apgd-ce, apgd-dlr, apgd-t, pgd, square, "
                   "autoattack, aa-apgd-ce, or a preset: cheap (apgd-ce), strong (autoattack)")
    e.add_argument("--n", type=int, help="test examples (stratified subset)")
    e.add_argument("--mode", choices=["incremental", "independent"])
    e.add_argument("--name", help="folder under RUN/eval/ (default: the attacks)")
    e.add_argument("--no-checks", action="store_true", help="skip the sanity checks")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an eval value, e.g. --set eval.num_steps=20 (repeatable)")
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
    return p


def _diagnose(args: argparse.Namespace) -> None:
    d = diagnose_run(args.run_dir, args.reference, args.gap, args.delay_threshold)
    print(json.dumps(d.to_dict(), indent=2) if args.json else render_diagnosis(d))


def _train(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    run = fine_tune(cfg, name=args.config.stem, resume=args.resume)
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
    print(evaluation_report(result))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    commands = {"train": _train, "eval": _eval, "diagnose": _diagnose,
                "table": lambda a: print(results_table(a.run_dirs, a.evaluation))}
    try:
        commands[args.command](args)
    except (ConfigError, RunExistsError, FileNotFoundError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with: robustft train CONFIG --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
