#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (for the studio's browser test) when missing; needs root.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: apt-get could not install chromium and chromium-driver" >&2
  exit 1
fi
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
  || { echo "error: /usr/bin/chromium or /usr/bin/chromedriver missing after apt-get install" >&2; exit 1; }
