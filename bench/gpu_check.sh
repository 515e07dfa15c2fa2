#!/usr/bin/env bash
# The GPU check: installs the offline bundle, then runs the benches most important first, each
# under a time limit, within one overall budget (default 540 s, so it ends inside 10 minutes).
#
# Run it from the repository root on a GPU host that has Python 3.12 with torch, torchvision and
# timm but no network, with .gpu/bundle built beforehand by bench/make_gpu_bundle.sh:
#
#   bash bench/gpu_check.sh
#
# Results: $OUT/gpu_check.jsonl (one JSON line per bench; a failed or timed-out bench leaves a
# {"status": "failed"} line, one the budget left no time for a {"status": "skipped"} line),
# $OUT/gpu_check.log (everything the benches printed) and $OUT/<name>.log for each bench. The
# console shows progress and, at the end, the key figures (python -m bench.summary).
#
# Settings (environment): OUT (default: a new temporary folder), PYTHON (python3), BUDGET_S (540),
# SKIP_INSTALL=1 (use the packages already importable), SMALL=1 (tiny CPU-sized runs: checks
# this script itself on a machine without a GPU), QUICK=1 (a short lease: the CUDA tests, the
# loss's kernel counts, the step benches at depths 0 and 8, the input pipeline with 15 workers
# against data.pipeline=device, then the compiled loss's kernels; it needs only the nflows and
# pytorch-metric-learning wheels of the bundle, so a call can carry those two files alone).
set -u

cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
JSONL=$OUT/gpu_check.jsonl
: >"$JSONL"
: >"$LOG"
started=$(date +%s)
# The benches' data and caches stay out of the home folder and out of the repository.
export GAPAN_CACHE=${GAPAN_CACHE:-/tmp/gapan-cache}
BENCH_DATA=${BENCH_DATA:-/tmp/gapan-bench-data}

elapsed() { echo $(($(date +%s) - started)); }
say() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$LOG"; }

# ------------------------------------------------------------------------------------ install
if [ "${SKIP_INSTALL:-0}" != 1 ] && [ "${QUICK:-0}" = 1 ]; then
  say "installing nflows and pytorch-metric-learning from .gpu/bundle into $SITE"
  mkdir -p "$SITE"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
      .gpu/bundle/nflows-*.whl .gpu/bundle/pytorch_metric_learning-*.whl >>"$LOG" 2>&1; then
    say "installing the two wheels failed; see $LOG"
    tail -20 "$LOG"
    exit 2
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif [ "${SKIP_INSTALL:-0}" != 1 ]; then
  if ! ls .gpu/bundle/*.whl >/dev/null 2>&1 || [ ! -f .gpu/bundle/ray-slim.tar.xz ]; then
    say "no offline bundle in .gpu/bundle: build it with bench/make_gpu_bundle.sh and carry .gpu/bundle"
    exit 2
  fi
  say "installing the offline bundle into $SITE"
  mkdir -p "$SITE"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
      .gpu/bundle/*.whl >>"$LOG" 2>&1 || ! tar xJf .gpu/bundle/ray-slim.tar.xz -C "$SITE" >>"$LOG" 2>&1; then
    say "installing the bundle failed; see $LOG"
    tail -20 "$LOG"
    exit 2
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# ------------------------------------------------------------------------------- environment
{
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  nproc
  free -g
} | tee -a "$LOG"
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "torchvision", "timm", "nflows", "ray", "optuna", "pytorch_metric_learning",
             "pandas", "sklearn", "safetensors"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as error:
        print(f"{name} MISSING: {type(error).__name__}: {error}")
import torch
print("cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

# ---------------------------------------------------------------------------------- the benches
# run NAME LIMIT_S MODULE ARGS...: run one bench, at most LIMIT_S seconds and never past the budget.
run() {
  local name=$1 limit=$2 module=$3
  shift 3
  local left=$((BUDGET_S - $(elapsed) - 5))
  if [ "$left" -lt 20 ]; then
    say "$name: skipped, the budget is spent"
    echo "{\"bench\": \"$module\", \"name\": \"$name\", \"status\": \"skipped\", \"args\": \"$*\"}" >>"$JSONL"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name: python -m bench.$module $* (limit ${limit}s)"
  local own=$OUT/$name.log
  local begun=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$limit" \
    "$PYTHON" -m "bench.$module" "$@" --json-out "$JSONL" >"$own" 2>&1
  local rc=$?
  local seconds=$(($(date +%s) - begun))
  { echo "===== $name: python -m bench.$module $* (exit $rc, ${seconds}s)"; cat "$own"; } >>"$LOG"
  if [ "$rc" -ne 0 ]; then
    say "$name: FAILED (exit $rc after ${seconds}s; 124 = time limit); its last lines:"
    grep -v '^\s*$' "$own" | tail -8
    echo "{\"bench\": \"$module\", \"name\": \"$name\", \"status\": \"failed\", \"rc\": $rc, \"seconds\": $seconds, \"args\": \"$*\"}" >>"$JSONL"
  else
    say "$name: done in ${seconds}s"
  fi
}

stop_ray() {
  # Trials left running by a bench that hit its limit would skew every later figure.
  "$PYTHON" -m ray.scripts.scripts stop --force >>"$LOG" 2>&1 || true
}

if [ "${QUICK:-0}" = 1 ]; then
  say "cuda-tests: python -m pytest tests/test_cuda_graphs.py"
  timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -15 | tee -a "$LOG"
  run loss-ops 60 loss_ops --depths 0,8,16
  run step-eager 70 step --backbones resnet50 --depths 0,8 --breakdown
  run step-compiled 150 step --backbones resnet50 --depths 0,8 --compile
  run input 100 input_pipeline --workers 15 --seconds 8 --data-dir "$BENCH_DATA"
  run loss-ops-compiled 90 loss_ops --depths 8 --compiled
elif [ "${SMALL:-0}" = 1 ]; then
  run step-eager 300 step --device cpu --depths 0,2 --batch 16 --image-size 32 --steps 1 --warmup 1 --breakdown
  run loss-ops 120 loss_ops --device cpu --depths 0,2 --classes 4 --anchors 3 --repeats 1
  run input 300 input_pipeline --device cpu --images 120 --classes 6 --batch 16 --image-size 32 --workers 1 --steps 2 --warmup 1 --data-dir "$BENCH_DATA"
  run evaluation 120 evaluation --device cpu --count 2000 --repeats 1
  run packing 300 packing --device cpu --trials 2 --alone-trials 1 --epochs 2 --steps 2 --batch 16 --image-size 32 --data-dir "$BENCH_DATA"
  stop_ray
else
  # Packing first: it is the one figure that needs Ray on the GPU host. Its limit covers two
  # small studies, most of whose time is the trials' start, not their training.
  run packing 200 packing --trials 4 --alone-trials 1 --data-dir "$BENCH_DATA"
  stop_ray
  run input 100 input_pipeline --workers 15 --seconds 8 --data-dir "$BENCH_DATA"
  run step-eager 80 step --backbones resnet50 --depths 0,8 --breakdown
  run loss-ops 60 loss_ops --depths 0,8,16
  run step-compiled 150 step --backbones resnet50 --depths 0,8 --compile
  run evaluation 30 evaluation --count 60000
  run step-backbones 60 step --backbones mobilenetv2_100,vit_small_patch16_224 --depths 0,8 --steps 20
  run loss-ops-compiled 90 loss_ops --depths 8 --compiled
fi

say "finished; results in $JSONL"
"$PYTHON" -m bench.summary "$JSONL" 2>&1 | tee -a "$LOG"
exit 0
