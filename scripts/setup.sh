#!/usr/bin/env bash
# Create or reuse the virtual environment, install robustft into it with the extras in ROBUSTFT_EXTRAS
# (default: test; scripts/test.sh adds tune, i.e. Ray Tune) at the tested versions of constraints.txt,
# and install the Fashion-MNIST Debian package; with ROBUSTFT_BROWSER=1 also Debian's chromium (a test opens
# the HTML report in it). Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${ROBUSTFT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.robustft-install"  # "HASH-OF-pyproject.toml+constraints.txt EXTRA,EXTRA" of the last install
hash="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
extras="${ROBUSTFT_EXTRAS:-test}"
if [ "${have%% *}" = "$hash" ]; then extras="$extras,${have#* }"; fi  # keep the extras installed before
extras="$(tr ',' '\n' <<<"$extras" | sed '/^$/d' | sort -u | paste -sd, -)"
if [ "$have" != "$hash $extras" ]; then
  echo "setup: installing robustft[$extras] and its dependencies (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]" -c constraints.txt
  echo "$hash $extras" > "$stamp"
fi
apt_install() {  # PACKAGE WHY: install a Debian package, or say what that costs
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi  # never wait for a password
  echo "setup: installing the Debian package $1" >&2
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$1"; } >/dev/null 2>&1; then
    echo "setup: could not install $1; $2" >&2
  fi
}
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist "robustft will try to download Fashion-MNIST instead"
fi
if [ "${ROBUSTFT_BROWSER:-0}" = 1 ] && ! command -v chromium chromium-browser google-chrome >/dev/null; then
  apt_install chromium "the test that opens the HTML report in a browser will be skipped"
fi
export PATH="$PWD/$VENV/bin:$PATH"
