#!/usr/bin/env bash
# The main job: `robustft demo` on the embedded default (ImageNet EfficientNet-Lite0 → Fashion-MNIST,
# offline). It fine-tunes standard, fix and Epsilon-Scheduling runs, evaluates them, writes the report
# (runs/demo/report/report.html) and prints the table. About 13.5 minutes on 2 CPU cores from a fresh clone (set-up included); run it again to
# reuse finished runs or resume a killed one. Extra arguments go to `robustft demo` (e.g. --seeds 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
robustft demo "$@"
