#!/usr/bin/env bash
# Sets up .venv (if needed) and runs the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian's chromium + chromedriver for the painting-page test (needs root; without it that test skips,
# except under CI=true, where it fails)
bash scripts/install_browser.sh || echo "warning: chromium could not be installed; the browser test will skip" >&2
export TF_CPP_MIN_LOG_LEVEL=2
# --durations: the slowest tests are named at the end of every run, to keep the suite under 30 minutes
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
