#!/usr/bin/env bash
# fcnn on a GPU (issue 22): every check that needs one, in one go, each under a time limit,
# results as files under $OUT (docs/gpu.md). Needs CuPy and a CUDA GPU; PyTorch with CUDA
# for the comparison. Run from anywhere:
#
#     OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh
#
# Writes: environment.txt, pytest-gpu.txt (pytest -m gpu), gpu-bench.md / .json / .txt
# (train_bench.py --device gpu --profile: the fast step at batch 128, 512 and 2048 for fcnn
# port / unfused / fused / CUDA graph, PyTorch eager NCHW and channels-last, fcnn on the CPU;
# ratios; where a step's time goes), and, when MNIST is found in $FCNN_MNIST_DIR (a folder
# holding mnist/), tta-gpu.txt / .json (time_to_accuracy.py --device gpu, one seed).
# Takes about 6-8 minutes; exits 0 even when a check fails (each file says how it ended).
set -u
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse HEAD 2>/dev/null || echo "commit: not a git checkout"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, cupy.cuda.runtime.runtimeGetVersion())"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
    nproc
} > "$OUT/environment.txt" 2>&1

timeout 270 "$PY" -m pytest -m gpu tests/test_gpu.py -q -rs -p no:cacheprovider \
    > "$OUT/pytest-gpu.txt" 2>&1
echo "pytest exit status: $?" >> "$OUT/pytest-gpu.txt"

timeout 240 "$PY" benchmarks/train_bench.py --device gpu --profile \
    --json "$OUT/gpu-bench.json" --markdown "$OUT/gpu-bench.md" > "$OUT/gpu-bench.txt" 2>&1
echo "train_bench exit status: $?" >> "$OUT/gpu-bench.txt"

if [ -n "${FCNN_MNIST_DIR:-}" ] && [ -d "$FCNN_MNIST_DIR/mnist" ]; then
    timeout 200 "$PY" benchmarks/time_to_accuracy.py --data-dir "$FCNN_MNIST_DIR" \
        --device gpu --graph --seeds 0 --json "$OUT/tta-gpu.json" > "$OUT/tta-gpu.txt" 2>&1
    echo "time_to_accuracy exit status: $?" >> "$OUT/tta-gpu.txt"
fi
exit 0
