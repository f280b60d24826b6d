#!/usr/bin/env bash
# The search for the demo's regime (docs/demo.md and docs/research/recipe_search): standard fine-tuning,
# fix and Epsilon-Scheduling (hinges at 25 % / 75 %) on ImageNet EfficientNet-Lite0 → Fashion-MNIST 32×32
# with 300 training images (30 per class), 20 epochs, APGD-CE 7 steps while training, at ε_g = 32/255,
# 16/255 and 8/255; evaluation on 500 test images, APGD-CE 10 steps over a 9-point grid, with the sanity
# checks. Usage: bash research/scripts/search_regime.sh [SEED ...] (default 0). About 15 min per ε_g and seed on
# 2 CPU cores; finished runs are reused, a killed one resumes. Ends with the table of every run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/setup.sh"
OUT=runs/regimes
run() { local name=$1 config=$2; shift 2
  robustft -q train "configs/$config" --set train.out_dir=$OUT --set "train.run_name=$name" --set data.n_train=300 \
    --set train.epochs=20 --set data.n_val=500 --set train.val_adv_n=128 --set eval.n=500 --resume "$@" >/dev/null; }
for seed in "${@:-0}"; do
  run "standard_n300_e20_s$seed" fmnist_standard.yaml --set train.seed=$seed --set attack.eps=32/255 --set eval.eps_step=4/255
  for spec in "32 4" "16 2" "8 1"; do
    set -- $spec
    for kind in fix scheduled; do
      name=$([ $kind = fix ] && echo fix || echo hinge)_n300_e20_eps$1_s$seed
      run "$name" fmnist_$kind.yaml --set train.seed=$seed --set attack.eps=$1/255 --set eval.eps_step=$2/255
    done
  done
done
robustft table $OUT/*
