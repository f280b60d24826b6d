#!/usr/bin/env bash
# The main job: `robustft demo` on the embedded default (ImageNet EfficientNet-Lite0 → Fashion-MNIST at its own
# radius, 32/255, offline). It fine-tunes standard, fix and Epsilon-Scheduling runs two at a time (one thread
# each), evaluates them with every attack AutoAttack runs (the aa-curve preset) and its sanity checks, writes the
# report (runs/demo/report/report.html) and prints the table. docs/demo.md gives its time and where it goes;
# run it again to reuse finished runs or resume a killed one. Extra arguments go to `robustft demo` (e.g. --seeds 3).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
robustft demo --jobs 2 "$@"
