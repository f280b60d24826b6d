"""Run by tests/test_distributed.py under torchrun: fine-tune a config, and with --stop-after K let
process 0 die after epoch K (as a killed job would) so that the run can be resumed."""

import argparse

from robustft.api import fine_tune
from robustft.config import load_config
from robustft.runs import EpochRow


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--stop-after", type=int)
    args = p.parse_args()

    def stop(row: EpochRow) -> None:
        if args.stop_after is not None and row.epoch + 1 >= args.stop_after:
            raise SystemExit(3)

    fine_tune(load_config(args.config, args.overrides), on_epoch=stop)


if __name__ == "__main__":
    main()
