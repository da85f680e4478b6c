#!/usr/bin/env bash
# The GPU path in at most 8 minutes of one GPU (benchmarks/README.md), one JSON line per stage:
#   install             the carried wheels (benchmarks/wheels/: deepspeed, diffusers, torch-fidelity and the
#                       pure-Python packages they miss), offline, and protobench itself (editable, no deps);
#   train-cifar10-b128  the CIFAR-10 preset's U-Net, bf16, batch 128: eager against compiled (-o compile=on's
#                       step) images/s and MFU against the bf16 peak, with diffusers' UNet2DModel beside them;
#   zero2-bf16-resume   `protobench run --gpus 1 -o zero_stage=2 -o precision=bf16` (DeepSpeed ZeRO-2 on one
#                       GPU, digits, tiny budget), stopped at --stop-after 10k (checkpoint) and resumed to completion;
#   sampling-cifar10    evaluation images/s of the preset's sampler (DPM-Solver++ with CFG), eager and compiled;
#   pytest-gpu          the tests marked `gpu`;
#   train-cifar10-b512  eager against compiled at batch 512;
#   digits-2gpu-zero2   two processes, bf16 + ZeRO-2, only where two GPUs are visible.
# Stages run in that order (what matters most first) inside one time budget ($BUDGET_S, default 470 s): a stage
# gets what is left of it, and one that cannot start in time is reported as skipped.
#
# Run from the repository root:  bash benchmarks/gpu_check.sh
# On the lent machine (the device tool), carry the wheels:  run(command="bash benchmarks/gpu_check.sh",
#   carry=["benchmarks/wheels"], timeout_s=560)
# Written to $OUT (or ./gpu-check-<time>/), three files to commit under benchmarks/results/: stages.jsonl (one
# JSON object per stage: name, status, seconds, and the stage's own JSON result), summary.txt, logs.tar.gz.
# Runs, caches and logs live in $WORK (default: a fresh folder under /tmp).

set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-$(mktemp -d /tmp/protobench-gpu-check.XXXXXX)}"
mkdir -p "$WORK/logs"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET_S="${BUDGET_S:-470}"
SUMMARY="$OUT/summary.txt"
STAGES="$OUT/stages.jsonl"
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export PROTOBENCH_CACHE="${PROTOBENCH_CACHE:-$WORK/cache}"
START=$(date +%s)
: > "$SUMMARY"
: > "$STAGES"
FAILED=0

say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(( $(date +%s) - START )); }

# line NAME STATUS SECONDS LIMIT LOG: the stage's JSON line (its result: the last line of its log that is JSON)
line() {
  "$PY" - "$@" <<'EOF' | tee -a "$STAGES" | tee -a "$SUMMARY"
import json, sys
name, status, seconds, limit, log = sys.argv[1:6]
result = None
try:
    lines = open(log, encoding="utf-8", errors="replace").read().splitlines()
except OSError:
    lines = []
for i in reversed(range(len(lines))):
    if lines[i].startswith("{"):  # one JSON line, or an indented record (`protobench run --json`) to its end
        try:
            result = json.loads(lines[i])
            break
        except json.JSONDecodeError:
            try:
                result = json.loads("\n".join(lines[i:]))
                break
            except json.JSONDecodeError:
                continue
print(json.dumps({"stage": name, "status": status, "seconds": int(seconds), "limit_s": int(limit), "result": result}))
EOF
}

# stage NAME SECONDS CMD...: CMD with a time limit (the smaller of SECONDS and what is left of the budget)
stage() {
  local name=$1 want=$2; shift 2
  local left=$(( BUDGET_S - $(elapsed) ))
  local limit=$(( want < left ? want : left ))
  local log="$WORK/logs/$name.log"
  if [ "$limit" -lt 20 ]; then
    line "$name" "skipped: ${left}s of the ${BUDGET_S}s budget left" 0 0 /dev/null
    return 0
  fi
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local status=ok
  [ $rc -eq 124 ] && status="timed out after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="failed (exit $rc)"
  [ $rc -ne 0 ] && FAILED=1 && tail -n 5 "$log" | sed "s/^/  [$name] /" | tee -a "$SUMMARY"
  line "$name" "$status" $(( $(date +%s) - t0 )) "$limit" "$log"
}

skip() { line "$1" "skipped: $2" 0 0 /dev/null; }

finish() {
  say "done in $(elapsed)s; $([ $FAILED = 0 ] && echo 'every stage that ran passed' || echo 'SOME STAGES FAILED')"
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null
  exit $FAILED
}

say "protobench gpu_check $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), $(date -u); python $PY"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$SUMMARY"

# -- install: carried wheels, offline; protobench editable (its entry points register the built-in plugins) ----
pb_install() {
  if [ -d benchmarks/wheels ] && ls benchmarks/wheels/*.whl > /dev/null 2>&1; then
    # only the wheels whose package is missing, or older than the wheel, are installed (nothing downgraded, the
    # image's torch and its pins untouched): a resolving install can trip over the image's own metadata
    local wanted
    wanted=$("$PY" - <<'PYEOF'
import glob, importlib.metadata as md, re
from packaging.version import Version
for path in sorted(glob.glob("benchmarks/wheels/*.whl")):
    name, version = re.match(r"([^-]+)-([^-]+)-", path.rsplit("/", 1)[1]).groups()
    try:
        have = md.version(name.replace("_", "-"))
    except md.PackageNotFoundError:
        have = None
    if have is None or Version(have) < Version(version):
        print(path)
PYEOF
) || return 1
    echo "installing: ${wanted:-nothing (all present)}"
    [ -z "$wanted" ] || "$PY" -m pip install --no-index --no-deps --no-compile $wanted || return 1
  else
    echo "no benchmarks/wheels/*.whl here (carry benchmarks/wheels): using what is installed"
  fi
  # editable (needs the `wheel` package); else its metadata alone, found through PYTHONPATH (set below)
  "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . \
    || "$PY" -c "import setuptools; setuptools.setup()" egg_info || return 1
  "$PY" - <<'EOF'
import importlib.util, json
mods = ("torch", "deepspeed", "diffusers", "torch_fidelity", "protobench", "pytest", "sklearn")
print(json.dumps({m: importlib.util.find_spec(m) is not None for m in mods}))
EOF
}
export -f pb_install
export PY
stage install 90 bash -c pb_install
if ! "$PY" -c "import importlib.metadata as m; m.version('protobench')" > /dev/null 2>&1; then
  export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"  # ./protobench.egg-info: the plugins' entry points
fi
has() { "$PY" -c "import $1" > /dev/null 2>&1; }
if ! has torch; then say "no torch: nothing can run"; finish; fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
say "torch $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)'); GPUs visible: $GPUS"
if [ "$GPUS" -lt 1 ]; then say "no CUDA GPU visible: nothing to check"; FAILED=1; finish; fi

# -- training step, eager vs compiled, batch 128 with diffusers beside (compile ~1-2 min, timing ~20 s) --------
if has protobench && has diffusers; then
  stage train-cifar10-b128 200 "$PY" -m benchmarks.train --device cuda --precision bf16 --config cifar10 \
    --batch 128 --rounds 3 --steps 10 --compile
elif has protobench; then
  stage train-cifar10-b128 200 "$PY" -m benchmarks.train --device cuda --precision bf16 --config cifar10 \
    --batch 128 --rounds 3 --steps 10 --compile --no-diffusers
else
  skip train-cifar10-b128 "protobench is not installed"
fi

# -- DeepSpeed ZeRO-2 bf16 on one GPU, stopped at 10k images and resumed (~1-2 min) ------------------------------
if has protobench && has deepspeed && has sklearn; then
  stage zero2-bf16-resume 150 "$PY" -m benchmarks.resume_check --out "$WORK/runs-zero2" --name zero2-bf16 \
    --stop-after 10k -- \
    --dataset digits --conditioner random --gpus 1 -o zero_stage=2 -o precision=bf16 --budget 30k --eval-every 10k
else
  skip zero2-bf16-resume "needs protobench, deepspeed and scikit-learn"
fi

# -- sampling: the CIFAR-10 preset's evaluation sampler, eager vs compiled (~1 min) -----------------------------
if has protobench; then
  stage sampling-cifar10 120 "$PY" -m benchmarks.sampling --device cuda --speed-only --dataset cifar10 \
    --batch 500 --rounds 3
else
  skip sampling-cifar10 "protobench is not installed"
fi

# -- the tests marked gpu (~1 min) ------------------------------------------------------------------------------
if has protobench && has pytest; then
  stage pytest-gpu 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider --durations=5 tests
else
  skip pytest-gpu "needs pytest and protobench"
fi

# -- training step, eager vs compiled, batch 512 (~1-2 min) ------------------------------------------------------
if has protobench; then
  stage train-cifar10-b512 170 "$PY" -m benchmarks.train --device cuda --precision bf16 --config cifar10 \
    --batch 512 --rounds 3 --steps 5 --compile --no-diffusers
else
  skip train-cifar10-b512 "protobench is not installed"
fi

# -- two processes, bf16 + ZeRO-2, where two GPUs are present ------------------------------------------------------
if [ "$GPUS" -ge 2 ] && has deepspeed && has sklearn; then
  stage digits-2gpu-zero2 150 "$PY" -m protobench run --dataset digits --conditioner random --budget 20k \
    --eval-every 10k --gpus 2 -o precision=bf16 -o zero_stage=2 --out "$WORK/runs-2gpu" --quiet --json
else
  skip digits-2gpu-zero2 "needs two GPUs (found $GPUS), deepspeed and scikit-learn"
fi

finish
