#!/usr/bin/env bash
# The test suite: CPU only, no network, a few minutes. Extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest "$@"
