#!/usr/bin/env bash
# Builds .gpu/bundle: the Python packages bench/gpu_check.sh installs on a GPU host that has no
# network. Run it here, once, with the package registry reachable, from anywhere in the
# repository:
#
#   bash bench/make_gpu_bundle.sh
#
# The GPU host is expected to have CPython 3.12 on x86_64 Linux with torch, torchvision, timm
# and the common scientific stack (numpy, pandas, pyarrow, scikit-learn, safetensors, requests,
# pyyaml, protobuf, msgpack, click, filelock, attrs, jinja2, tqdm, packaging). The bundle holds
# the rest, as binary files for that interpreter, each named explicitly (no dependency
# resolution: a resolver would fetch what the host already has):
#
# - the project's requirements the host lacks: nflows, pytorch-metric-learning, Optuna, plotly
#   and Ray Tune;
# - what Optuna needs (alembic, mako, sqlalchemy, greenlet, colorlog), plotly needs (narwhals)
#   and Ray Tune and its dashboard need (jsonschema and its parts, pydantic and its parts,
#   tensorboardX);
# - nflows publishes a source distribution only; it is pure Python, so it is built into a wheel
#   here;
# - Ray's wheel is larger than a device call may carry (64 MiB in all), so it is unpacked here
#   without the parts Tune never loads (Java jars, RLlib, Serve, LLM serving, source maps) and
#   packed as ray-slim.tar.xz, which gpu_check.sh unpacks next to the wheels.
#
# Settings (environment): BUNDLE (default .gpu/bundle), PYTHON (python3), RAY_VERSION (2.60.0,
# the lowest pyproject.toml allows). Keep data and caches out of .gpu/: the bundle takes most
# of what a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu/bundle}
PYTHON=${PYTHON:-python3}
RAY_VERSION=${RAY_VERSION:-2.60.0}

wheels=(
  nflows==0.14 pytorch-metric-learning optuna plotly
  alembic mako sqlalchemy greenlet colorlog narwhals
  jsonschema jsonschema-specifications referencing rpds-py
  pydantic pydantic-core annotated-types typing-inspection tensorboardX
)
host=(--no-deps --only-binary=:all: --implementation cp --python-version 3.12
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux_2_28_x86_64)

# The folder is replaced: refuse one that holds anything but a previous bundle.
if [ -d "$BUNDLE" ] && find "$BUNDLE" -mindepth 1 -maxdepth 1 ! -name '*.whl' \
    ! -name ray-slim.tar.xz | grep -q .; then
  echo "$BUNDLE holds files that are not a bundle's; set BUNDLE to a new folder" >&2
  exit 2
fi
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building nflows' wheel"
"$PYTHON" -m pip wheel -q --no-deps -w "$BUNDLE" "${wheels[0]}"
echo "downloading $((${#wheels[@]} - 1)) packages for CPython 3.12"
"$PYTHON" -m pip download -q "${host[@]}" -d "$BUNDLE" "${wheels[@]:1}"

echo "downloading Ray $RAY_VERSION and slimming it"
"$PYTHON" -m pip download -q "${host[@]}" -d "$work" "ray==$RAY_VERSION"
mkdir "$work/ray"
# unzip, not Python's zipfile: Ray's executables (raylet, gcs_server) keep their mode bits.
(cd "$work/ray" && unzip -q "$work"/ray-*.whl)
rm -rf "$work"/ray/ray/{jars,rllib,llm,serve}
find "$work/ray" -name '*.map' -delete
XZ_OPT='-T0 -6' tar cJf "$BUNDLE/ray-slim.tar.xz" -C "$work/ray" .

total=$(du -sm "$BUNDLE" | cut -f1)
echo "bundle: $(ls "$BUNDLE" | wc -l) files, ${total} MiB in $BUNDLE (a device call carries at most 64 MiB)"
if [ "$total" -gt 60 ]; then
  echo "warning: $BUNDLE is ${total} MiB; keep it under 64 MiB with room to spare" >&2
fi
