"""Command line: argv → config → one library call per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robustft.api import RunExistsError, evaluate_run, fine_tune
from robustft.config import ConfigError, load_config
from robustft.report import results_table
from robustft.train import NonFiniteLossError

EXAMPLES = """examples:
  robustft train configs/fmnist_scheduled.yaml --set data.n_train=3000 --set attack.eps=8/255
  robustft train configs/fmnist_scheduled.yaml --resume        # continue a killed run
  robustft eval runs/fmnist_scheduled --set eval.n=500 --set eval.num_steps=20
  robustft table runs/fmnist_standard runs/fmnist_fix runs/fmnist_scheduled
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
    e = sub.add_parser("eval", help="evaluate a run directory's checkpoint over its ε grid")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an eval value, e.g. --set eval.n=500 --set eval.num_steps=20")
    s = sub.add_parser("table", help="print the results table of run directories")
    s.add_argument("run_dirs", type=Path, nargs="+")
    return p


def _train(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    run = fine_tune(cfg, name=args.config.stem, resume=args.resume)
    print(results_table([run.path]))
    print(f"\nrun directory: {run.path}")


def _eval(args: argparse.Namespace) -> None:
    result = evaluate_run(args.run_dir, args.overrides)
    print("  ".join(f"{e * 255:.2f}/255: {100 * a:.1f}%" for e, a in zip(result.eps, result.accuracy)))
    print(results_table([args.run_dir]))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    commands = {"train": _train, "eval": _eval, "table": lambda a: print(results_table(a.run_dirs))}
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
