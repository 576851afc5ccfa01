#!/usr/bin/env bash
# Sets up .venv (if needed) and runs the main job on the built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m spade_tf.commands.demo "$@"
