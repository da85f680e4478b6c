#!/usr/bin/env bash
# The GPU path in at most 8 minutes on one GPU (see benchmarks/README.md):
#   1. the tests marked `gpu`;
#   2. a short bf16 digits run through `protobench run`;
#   3. the bf16 CIFAR-preset training benchmark (protobench vs diffusers): images/s, MFU against the bf16 peak;
#   4. a 2-process bf16 run with ZeRO-2 when two GPUs are present.
# Run from the repository root:  bash benchmarks/gpu_check.sh
# Everything is written to $OUT (or ./gpu-check-<time>/): one log per stage and summary.txt.
# It works offline: it installs nothing unless asked (PIP_INSTALL=1 tries `pip install -e .[test,bench]`
# and reports what was missing), and a stage whose packages are missing is reported as skipped.

set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
SUMMARY="$OUT/summary.txt"
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PROTOBENCH_CACHE="${PROTOBENCH_CACHE:-$OUT/cache}"
START=$(date +%s)
: > "$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(( $(date +%s) - START )); }

# stage NAME SECONDS CMD...: runs CMD with a time limit, log in $OUT/NAME.log, one summary line
stage() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  [ $rc -eq 124 ] && status="TIMED OUT after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED (exit $rc)"
  say "[$name] $status in $(( $(date +%s) - t0 ))s; log: $OUT/$name.log"
  tail -n 1 "$OUT/$name.log" | grep -q '^{' && say "[$name] $(tail -n 1 "$OUT/$name.log")"
  return $rc
}

say "protobench gpu_check $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), $(date -u)"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$SUMMARY"

# -- what is installed ------------------------------------------------------------------------------------
missing() {  # the Python modules that cannot be imported, by import name
  "$PY" - <<'EOF'
import importlib.metadata, importlib.util
need = ("torch", "pytest", "diffusers", "deepspeed", "safetensors", "sklearn", "click", "rich", "pluggy")
gone = [m for m in need if importlib.util.find_spec(m) is None]
try:  # installed, so that its built-in plugins' entry points exist
    importlib.metadata.version("protobench")
except importlib.metadata.PackageNotFoundError:
    gone.append("protobench")
print(" ".join(gone))
EOF
}
MISSING="$(missing)"
if [ -n "$MISSING" ] && [ "${PIP_INSTALL:-0}" = "1" ]; then
  say "missing: $MISSING; trying pip install -e .[test,bench] (needs a package index)"
  "$PY" -m pip install -q -e ".[test,bench]" > "$OUT/pip.log" 2>&1 || say "pip install failed (offline?): see $OUT/pip.log"
  MISSING="$(missing)"
fi
[ -n "$MISSING" ] && say "missing Python modules: $MISSING (PIP_INSTALL=1 bash $0 tries pip install -e .[test,bench]; sklearn is scikit-learn)"
has() { case " $MISSING " in *" $1 "*) return 1 ;; *) return 0 ;; esac; }
if ! has torch; then say "no torch: nothing can run"; exit 1; fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
say "torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)'); GPUs visible: $GPUS"
if [ "$GPUS" -lt 1 ]; then say "no CUDA GPU visible: nothing to check"; exit 1; fi
FAILED=0

# -- 1. tests marked gpu (~1 min) ------------------------------------------------------------------------
if has pytest && has protobench; then
  stage pytest-gpu 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider --durations=5 tests || FAILED=1
else
  say "[pytest-gpu] skipped: needs pytest and protobench"
fi

# -- 2. a short bf16 digits run (~1-2 min: a 30k-image budget, one evaluation of 500 samples) ---------------
if has protobench && has sklearn; then
  stage digits-bf16 180 "$PY" -m protobench.cli run --dataset digits --conditioner random --budget 30k \
    --eval-every 30k -o precision=bf16 --out "$OUT/runs" --quiet --json || FAILED=1
else
  say "[digits-bf16] skipped: needs protobench and scikit-learn"
fi

# -- 3. bf16 CIFAR-preset training benchmark, protobench vs diffusers (~1-2 min) ---------------------------
if has protobench && has diffusers; then
  stage train-cifar10-bf16 150 "$PY" -m benchmarks.train --device cuda --precision bf16 --config cifar10 \
    --batch 128 --rounds 3 --steps 10 || FAILED=1
else
  say "[train-cifar10-bf16] skipped: needs diffusers (pip install -e .[bench])"
fi

# -- 4. two processes, bf16 + ZeRO-2, when two GPUs are present (~1-2 min) --------------------------------
if [ "$GPUS" -ge 2 ] && has deepspeed && has sklearn; then
  stage digits-2gpu-zero2 180 "$PY" -m protobench.cli run --dataset digits --conditioner random --budget 20k \
    --eval-every 10k --gpus 2 -o precision=bf16 -o zero_stage=2 --out "$OUT/runs-2gpu" --quiet --json || FAILED=1
elif [ "$GPUS" -ge 2 ]; then
  say "[digits-2gpu-zero2] skipped: needs deepspeed and scikit-learn"
else
  say "[digits-2gpu-zero2] skipped: one GPU"
fi

say "done in $(elapsed)s; $([ $FAILED = 0 ] && echo 'all stages that ran passed' || echo 'SOME STAGES FAILED')"
exit $FAILED
