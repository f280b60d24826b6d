#!/usr/bin/env bash
# The demo-regime search at ε_g = 32/255 on one GPU machine (docs/research/recipe_search/README.md, section 10):
# the candidates one after another, each one's runs (seeds 0, 1, 2) JOBS at a time (default 3), one process
# each. Keep JOBS small: 30 such processes on one H200 ran no faster per run than one CPU thread
# (BENCHMARKS.md, "GPU"): time-slicing between CUDA contexts costs more than the tiny kernels gain.
# Each run is evaluated on 500 test images under the worst case of APGD-CE + APGD-T (20 steps, 3 targets)
# with the sanity checks on; then AutoAttack (standard) at ε_g on 200 test images for every robust run
# that finished, beside a cheaper APGD-CE + APGD-T with 10 steps (500 images, eval/cet10). Finished runs
# and evaluations are reused, killed ones resume, so running it again continues. Ends with the tables.
# Usage: bash research/scripts/search_demo_regime_gpu.sh [OUT_DIR] [SEARCH_SECONDS] [AUTOATTACK_SECONDS]
#   (0 = no limit); extra settings for every run in ROBUSTFT_SET, e.g. ROBUSTFT_SET="data.root=/data/fmnist".
# Uses the python3 on PATH, which must import robustft (installed, or PYTHONPATH=. from the repository root).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${1:-runs/demo_regime_gpu}
SEARCH_S=${2:-0}
AA_S=${3:-0}
mkdir -p "$OUT"
SETS=(--set 'eval.attacks=[apgd-ce,apgd-t]' --set eval.targets=3 --set eval.num_steps=20)
for s in ${ROBUSTFT_SET:-}; do SETS+=(--set "$s"); done
limit() { if [ "$1" -gt 0 ]; then timeout --signal=TERM "$1" "${@:2}"; else "${@:2}"; fi; }
START=$(date +%s)
search() {  # CANDIDATE VARIANT...: within what is left of SEARCH_SECONDS
  local left=0
  if [ "$SEARCH_S" -gt 0 ]; then left=$(( SEARCH_S - ($(date +%s) - START) )); [ "$left" -gt 0 ] || return 0; fi
  limit "$left" python3 research/scripts/search_demo_regime.py "$1" --variants "${@:2}" --seeds 0 1 2 \
    --jobs "${JOBS:-3}" --out "$OUT" "${SETS[@]}" >"$OUT/$1.log" 2>&1
  echo "search $1: exit $? ($(date +%T))"
}
echo "search: started $(date +%T)"
CANDIDATES=(  # candidate and the variants it runs
  "e32_ep30_h10_apgd7 standard fix scheduled"
  "e32_ep30_h25_apgd7 scheduled"
  "e32_ep50_h25_apgd7 fix scheduled"
  "n500_e32_ep30_h10_apgd5 standard fix scheduled"
  "n500_e32_ep30_h25_apgd5 scheduled"
)
# shellcheck disable=SC2086
for c in "${CANDIDATES[@]}"; do search $c; done
robust=$(find "$OUT" -name DONE -path '*seed*' | xargs -r -n1 dirname | grep -v '/standard-seed' | sort)
echo "AutoAttack at 32/255 on 200 test images: $(wc -w <<<"$robust") robust runs ($(date +%T))"
# shellcheck disable=SC2086
export -f limit
printf '%s\n' $robust | xargs -r -P "${JOBS:-3}" -I{} bash -c 'limit '"$AA_S"' python3 -m robustft -q eval {} --attacks strong --n 200 \
  --eps-grid 0,32/255 --no-checks >{}/autoattack.log 2>&1; echo "  {}: exit $?"' &
# shellcheck disable=SC2086
printf '%s\n' $robust | xargs -r -P "${JOBS:-3}" -I{} python3 -m robustft -q eval {} --attacks apgd-ce,apgd-t --set eval.num_steps=10 \
  --set eval.targets=3 --n 500 --no-checks --name cet10 >/dev/null 2>&1 &
wait
for c in "${CANDIDATES[@]%% *}"; do
  runs=$(find "$OUT/$c" -name DONE 2>/dev/null | xargs -r -n1 dirname | sort)
  [ -n "$runs" ] || continue
  echo "## $c: APGD-CE + APGD-T (20 steps, 3 targets), 500 test images"
  # shellcheck disable=SC2086
  python3 -m robustft table $runs
  aa=$(for r in $runs; do [ -f "$r/eval/autoattack/robustness.json" ] && echo "$r"; done)
  [ -n "$aa" ] || continue
  echo "## $c: AutoAttack (standard) at 32/255, 200 test images"
  # shellcheck disable=SC2086
  python3 -m robustft table $aa --eval autoattack
  echo "## $c: APGD-CE + APGD-T (10 steps, 3 targets), 500 test images"
  # shellcheck disable=SC2086
  python3 -m robustft table $aa --eval cet10
done
