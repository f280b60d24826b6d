#!/usr/bin/env bash
# Lint and type checks, as CI runs them (.ci/run, before the tests): ruff on the package, tests, scripts,
# benchmarks and research/, and mypy on the package (both configured in pyproject.toml). Runs both, fails if either fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
status=0
ruff check robustft tests scripts benchmarks research || status=1
mypy || status=1
exit "$status"
