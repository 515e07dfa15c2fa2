#!/usr/bin/env bash
# Builds .gpu/bundle, the offline packages bench/gpu_check.sh installs on a GPU host without
# network: Ray (slimmed), Optuna, nflows, plotly and pytorch-metric-learning for CPython 3.12.
# Needs the package registry (pip download); run it here, from anywhere in the repository:
#
#   bash bench/make_gpu_bundle.sh
#
# The bundle is about 50 MB of the 64 MB a device call may carry, so nothing else (data sets,
# caches) goes into .gpu/. MAKE_OFFLINE_BUNDLE names the builder (default: the shared one).
set -euo pipefail
cd "$(dirname "$0")/.."
builder=${MAKE_OFFLINE_BUNDLE:-/work/shared/gpu/make_offline_bundle.sh}
if [ ! -x "$builder" ] && [ ! -f "$builder" ]; then
  echo "no bundle builder at $builder; set MAKE_OFFLINE_BUNDLE to make_offline_bundle.sh" >&2
  exit 2
fi
rm -rf .gpu/bundle
mkdir -p .gpu
bash "$builder" .gpu/bundle pytorch-metric-learning
total=$(du -sm .gpu | cut -f1)
echo "bundle: $(ls .gpu/bundle | wc -l) files, ${total} MiB in .gpu (a device call carries at most 64 MiB)"
if [ "$total" -gt 60 ]; then
  echo "warning: .gpu is ${total} MiB; keep it under 64 MiB with room to spare" >&2
fi
