#!/usr/bin/env bash
# The test suite: CPU only, no network, a few minutes (installs Ray Tune, OpenCLIP and Debian's chromium for their tests).
# Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
export ROBUSTFT_BROWSER=1 ROBUSTFT_EXTRAS=test,tune,clip,docs,peft
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest "$@"
