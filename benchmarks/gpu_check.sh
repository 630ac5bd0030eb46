#!/usr/bin/env bash
# fcnn on a GPU (issue 22): every check that needs one, in one go, within one time budget,
# the most important first; each part writes its file under $OUT as it goes, so whatever
# cuts the run short, what ran is there (docs/gpu.md). Run from the repository root:
#
#     OUT=/tmp/gpu-out FCNN_DATA_DIR=.gpu-data bash benchmarks/gpu_check.sh
#
# Needs Python with NumPy, CuPy and pytest (PyTorch with CUDA for the comparisons); fcnn
# comes from src/ (no install). MNIST's four .gz files in $FCNN_DATA_DIR/mnist. Parts, each
# with a cap, all together within $GPU_CHECK_BUDGET seconds (default 525):
#
#   1. environment.txt   versions, the GPU, CuPy's kernel cache (cap 30 s)
#   2. train-cold.txt    python train.py --dataset mnist --recipe fast --device gpu --no-save,
#                        timed from process start to exit, every line stamped; first thing
#                        on a fresh machine: CuPy compiles its kernels here (cap 150 s)
#   3. pytest-gpu.txt    pytest -m gpu: the training tests, then every pair (cap 120 s)
#   4. train-warm.txt    the same train.py run again, kernels cached (cap 90 s)
#   5. gpu-bench.txt/.json  train_bench.py --device gpu --profile: the fast step at batch
#                        128, 2048, 512 (fcnn port/unfused/fused, PyTorch NCHW and
#                        channels-last), fcnn on the CPU at 128 (cap 120 s)
#   6. tta-gpu.txt       time_to_accuracy.py --device gpu, seed 0, PyTorch beside (the rest)
#   summary.md           the key numbers of all of them, rewritten after every part
#
# Without CuPy or a GPU every part fails fast with one line and the files say so. Exits 0.
set -u
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder for the results}
DATA=${FCNN_DATA_DIR:-.gpu-data}
BUDGET=${GPU_CHECK_BUDGET:-525}
RESERVE=8 # seconds kept for the last kill (timeout -k 3) and the summary
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
rm -f "$OUT"/{environment,train-cold,pytest-gpu,train-warm,gpu-bench,tta-gpu}.txt \
    "$OUT"/gpu-bench.json "$OUT"/summary.md
START=$SECONDS

now_us() { # microseconds since the epoch (bash 5's EPOCHREALTIME, else date)
    local t=${EPOCHREALTIME:-}
    if [ -n "$t" ]; then echo "${t//[!0-9]/}"; else date +%s%6N; fi
}

cap() { # cap WANT LEAST: the seconds a part may take (WANT, or what is left), or 0
    local left=$((BUDGET - (SECONDS - START) - RESERVE))
    if [ "$left" -lt "$2" ]; then
        echo 0
    elif [ "$left" -lt "$1" ]; then
        echo "$left"
    else
        echo "$1"
    fi
}

summarize() { "$PY" benchmarks/gpu_summary.py "$OUT" 2>>"$OUT/environment.txt"; }

skipped() { # skipped FILE WHY
    printf '%s\nexit status 0 (skipped)\n' "$2" >"$OUT/$1"
    summarize
}

run_part() { # run_part FILE CAP COMMAND...: appends its output, then how and when it ended
    local file=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "# $* (cap ${limit} s)" >>"$OUT/$file"
    timeout -k 3 "$limit" "$@" >>"$OUT/$file" 2>&1
    echo "exit status $? after $((SECONDS - t0)) s" >>"$OUT/$file"
    summarize
}

stamped_train() { # stamped_train FILE CAP: train.py, each line stamped with seconds since start
    local file=$1 limit=$2 t0
    [ "$limit" -gt 0 ] || { skipped "$file" "skipped: no time left"; return; }
    echo "# python train.py --dataset mnist --data-dir $DATA --recipe fast --device gpu" \
        "--no-save (cap ${limit} s); seconds since the process started" >"$OUT/$file"
    t0=$(now_us)
    {
        timeout -k 3 "$limit" "$PY" train.py --dataset mnist --data-dir "$DATA" --recipe fast \
            --device gpu --no-save 2>&1
        echo "exit status $?"
    } | while IFS= read -r line; do
        t=$(($(now_us) - t0))
        printf '%8d.%03d s  %s\n' $((t / 1000000)) $((t % 1000000 / 1000)) "$line"
    done >>"$OUT/$file"
    summarize
}

# 1. the environment (no CuPy kernel is compiled here: part 2 starts cold)
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
    timeout 30 "$PY" - <<'EOF' 2>&1
import os, sys, numpy
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cpus", os.cpu_count())
try:
    import cupy
    print("cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "devices", cupy.cuda.runtime.getDeviceCount())
except Exception as err:
    print("cupy: not usable:", type(err).__name__, err)
cache = os.environ.get("CUPY_CACHE_DIR", os.path.expanduser("~/.cupy/kernel_cache"))
n = sum(len(f) for _, _, f in os.walk(cache)) if os.path.isdir(cache) else 0
print("CuPy kernel cache", cache, "holds", n, "files before part 2")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
except Exception as err:
    print("torch: not usable:", type(err).__name__, err)
try:
    import pytest
    print("pytest", pytest.__version__)
except ImportError:
    print("pytest: not installed")
EOF
} >"$OUT/environment.txt" 2>&1
summarize

HAVE_MNIST=0 # train.py looks in DIR/mnist, then in DIR
for d in "$DATA/mnist" "$DATA"; do [ -f "$d/train-images-idx3-ubyte.gz" ] && HAVE_MNIST=1; done
NO_MNIST="skipped: no MNIST in $DATA/mnist (set FCNN_DATA_DIR to the folder holding mnist/)"

# 2. train.py from process start to exit, cold
if [ "$HAVE_MNIST" = 1 ]; then
    stamped_train train-cold.txt "$(cap 150 30)"
else
    skipped train-cold.txt "$NO_MNIST"
fi

# 3. pytest -m gpu: the training tests first, then every pair (each run ends checking that
#    every fused function was fused); --noconftest: tests/conftest.py needs hypothesis
limit=$(cap 120 20)
if [ "$limit" -gt 0 ]; then
    t3=$SECONDS
    PYTEST=("$PY" -m pytest -m gpu tests/test_gpu.py --noconftest -p no:cacheprovider -v
        --tb=line -rfEs)
    run_part pytest-gpu.txt $((limit / 2)) "${PYTEST[@]}" -k "not pair_on_the_gpu"
    limit=$(cap $((limit - (SECONDS - t3))) 10)
    if [ "$limit" -gt 0 ]; then
        run_part pytest-gpu.txt "$limit" "${PYTEST[@]}" -k "pair_on_the_gpu or zz"
    fi
else
    skipped pytest-gpu.txt "skipped: no time left"
fi

# 4. the same train.py run, warm
if [ "$HAVE_MNIST" = 1 ]; then
    stamped_train train-warm.txt "$(cap 90 20)"
else
    skipped train-warm.txt "$NO_MNIST"
fi

# 5. the step benchmark
limit=$(cap 120 30)
if [ "$limit" -gt 0 ]; then
    run_part gpu-bench.txt "$limit" "$PY" benchmarks/train_bench.py --device gpu --profile \
        --batches 128 2048 512 --steps 40 --warmup 10 --json "$OUT/gpu-bench.json"
else
    skipped gpu-bench.txt "skipped: no time left"
fi

# 6. time to 99 % beside PyTorch, with what is left
limit=$(cap 600 45)
if [ "$HAVE_MNIST" = 1 ] && [ "$limit" -gt 0 ]; then
    run_part tta-gpu.txt "$limit" "$PY" benchmarks/time_to_accuracy.py --data-dir "$DATA" \
        --device gpu --seeds 0
else
    skipped tta-gpu.txt "skipped: no time left, or no MNIST in $DATA/mnist"
fi
echo "total $((SECONDS - START)) s of a budget of $BUDGET s" >>"$OUT/environment.txt"
summarize
exit 0
