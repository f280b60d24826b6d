#!/usr/bin/env bash
# The ε-schedule comparison on the embedded default: ImageNet EfficientNet-Lite0 → Fashion-MNIST 32×32,
# 1,000 training images (100 per class), 10 epochs, ε_g = 32/255 (a regime where RFT-fix suffers), the
# same data, budget and seed for every run: standard fine-tuning (the reference), fix, Epsilon-Scheduling
# (hinges at 25 % / 75 %), linear warm-up, uniform ε per epoch and auto (configs/fmnist_auto.yaml:
# patience 2, as 5 would leave almost no ramp in 10 epochs). Then the results table and each run's diagnosis against the
# reference. About 45 minutes on 2 CPU cores; finished runs are reused, a killed one resumes.
# Extra arguments go to every `robustft train` (e.g. --set train.seed=1 --set train.out_dir=runs/seed1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/setup.sh"
OUT=runs/schedules
COMMON=(--set data.n_train=1000 --set train.epochs=10 --set attack.eps=32/255 --set eval.eps_step=4/255
        --set eval.n=500 --set train.out_dir=$OUT --resume)
train() { local name=$1 config=$2; shift 2; robustft -q train "configs/$config" "${COMMON[@]}" --set "train.run_name=$name" "$@"; }
train standard fmnist_standard.yaml "$@"
train fix fmnist_fix.yaml "$@"
train hinge fmnist_scheduled.yaml "$@"
train warmup fmnist_scheduled.yaml --set schedule.kind=warmup --set schedule.t1=null "$@"
train uniform fmnist_scheduled.yaml --set schedule.kind=uniform --set schedule.t1=null --set schedule.t2=null "$@"
train auto fmnist_auto.yaml "$@"
train auto_capped fmnist_auto.yaml --set schedule.latest_t1=0.5 "$@"
robustft table $OUT/{standard,fix,hinge,warmup,uniform,auto,auto_capped}
for run in fix hinge warmup uniform auto auto_capped; do
  robustft diagnose $OUT/$run --reference $OUT/standard --delay-threshold 0.5
done
