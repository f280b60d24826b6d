#!/usr/bin/env bash
# Create or reuse the virtual environment, install robustft into it, and install the Fashion-MNIST
# Debian package. Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${ROBUSTFT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.robustft-install"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing robustft and its dependencies (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing the Debian package dataset-fashion-mnist" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } >&2; then
    echo "setup: could not install dataset-fashion-mnist; robustft will try to download Fashion-MNIST instead" >&2
  fi
fi
export PATH="$PWD/$VENV/bin:$PATH"
