#!/usr/bin/env bash
# The test suite: CPU only, no network, a few minutes (installs Debian's chromium for the report test).
# Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
export ROBUSTFT_BROWSER=1
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest "$@"
