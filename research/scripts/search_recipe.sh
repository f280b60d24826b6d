#!/usr/bin/env bash
# The search for a robust-fine-tuning recipe on the embedded default (docs/research/recipe_search/README.md has the
# results): ImageNet EfficientNet-Lite0 → Fashion-MNIST 32×32, RFT-fix unless named, every run evaluated on
# 500 test images over the ε grid with the sanity checks (converged, black_box, …) and watched during
# training by the catastrophic-overfitting monitor. Robustness is judged by the evaluation and its checks,
# never by the training logs.
# Usage: bash research/scripts/search_recipe.sh [CANDIDATE ...] (default: all); SEEDS="0 1 2" repeats each.
# Finished runs are reused, a killed one resumes. Ends with the table of every run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/setup.sh"
OUT=runs/recipe_search
BASE=(--set data.n_train=1000 --set data.n_val=500 --set data.n_test=1000 --set train.epochs=12
      --set train.val_adv_n=0 --set train.monitor_n=128 --set eval.n=500 --set train.delay_threshold=0.5)
declare -A CANDIDATES=(
  [std_relu6]="fmnist_standard.yaml --set attack.eps=8/255 --set eval.eps_step=2/255"
  [nfgsm_e8]="fmnist_fix.yaml --set attack.name=nfgsm --set attack.eps=8/255 --set eval.eps_step=2/255"
  [hinge_nfgsm_e8]="fmnist_scheduled.yaml --set attack.name=nfgsm --set attack.eps=8/255 --set eval.eps_step=2/255"
  [nfgsm_e4]="fmnist_fix.yaml --set attack.name=nfgsm --set attack.eps=4/255 --set eval.eps_step=1/255"
  [nfgsm_e4_silu]="fmnist_fix.yaml --set attack.name=nfgsm --set attack.eps=4/255 --set eval.eps_step=1/255 --set model.activation=silu"
  [apgd3_e4_silu]="fmnist_fix.yaml --set attack.num_steps=3 --set attack.eps=4/255 --set eval.eps_step=1/255 --set model.activation=silu"
  [std_silu_ema]="fmnist_standard.yaml --set attack.eps=8/255 --set eval.eps_step=2/255 --set model.activation=silu --set train.ema_decay=0.99"
  [apgd3_e8_silu_ema]="fmnist_fix.yaml --set attack.num_steps=3 --set attack.eps=8/255 --set eval.eps_step=2/255 --set model.activation=silu --set train.ema_decay=0.99"
  [hinge_apgd3_e8_silu_ema]="fmnist_scheduled.yaml --set attack.num_steps=3 --set attack.eps=8/255 --set eval.eps_step=2/255 --set model.activation=silu --set train.ema_decay=0.99"
  [apgd3_e16_silu_ema]="fmnist_fix.yaml --set attack.num_steps=3 --set attack.eps=16/255 --set eval.eps_step=4/255 --set model.activation=silu --set train.ema_decay=0.99"
)
names=("${@:-${!CANDIDATES[@]}}")
for seed in ${SEEDS:-0}; do
  for name in "${names[@]}"; do
    [ -n "${CANDIDATES[$name]:-}" ] || { echo "unknown candidate $name; choose from ${!CANDIDATES[*]}" >&2; exit 2; }
    read -r config rest <<<"${CANDIDATES[$name]}"
    # shellcheck disable=SC2086
    robustft -q train "configs/$config" "${BASE[@]}" $rest --set train.seed="$seed" --set train.out_dir=$OUT \
      --set "train.run_name=${name}_s$seed" --resume >/dev/null
  done
done
robustft table $OUT/*
