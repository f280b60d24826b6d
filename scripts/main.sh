#!/usr/bin/env bash
# The main job: fine-tune the embedded ImageNet EfficientNet-Lite0 on Fashion-MNIST with Epsilon-Scheduling
# (ε_g = 8/255) on a small subset, evaluate it (clean, APGD-CE over the ε grid, expected robustness) and
# print the results table. About 3 minutes on 2 CPU cores. Run again to reuse the finished run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
robustft train configs/fmnist_scheduled.yaml \
  --set train.run_name=main_scheduled --set data.n_train=1000 --set train.epochs=4 \
  --set eval.n=500 --resume "$@"
