#!/usr/bin/env bash
# The whole GPU check of cfn_fast's CUDA engine in ONE command, for a lent GPU machine:
#
#     bash bench/gpu_check.sh [DATA_DIR]        # run from the repository root; DATA_DIR default .device_data
#
# 1. machine and versions;  2. CUDA engine vs the NumPy reference on random data (gradients, SGD
# steps, epochs, inference; ||cuda - ref|| / ||ref|| < 1e-4);  3. pytest -k "cuda or backends"
# (after `python3 setup.py build_ext --inplace`, built in the background meanwhile);  4. the
# benchmark table (bench/gpu_bench.py: ML-1M from DATA_DIR/ml-1m, synthetic ML-10M/ML-20M shapes
# generated in the background from the start, the PyTorch peer, the cuda-vs-cpu RMSE check and a
# sweep of engine options).  With $OUT set, the table, the results (JSON) and this log land there.
# Needs: CuPy (CUDA 12/13), numpy, scipy, Cython, a C compiler; PyTorch for the peer; pytest.
set -u
DATA_DIR=${1:-.device_data}
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CFN_BENCH_CACHE=${CFN_BENCH_CACHE:-/tmp/cfn_bench_cache}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/cfn_gpu_check.XXXXXX)
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; exec > >(tee "$OUT/gpu_check.log") 2>&1; fi
status=0
started=$(date +%s)
stamp() { echo "---- $* (+$(( $(date +%s) - started ))s)"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "nvidia-smi: n/a"
$PY - <<'EOF'
import platform, numpy, scipy
print("python", platform.python_version(), "numpy", numpy.__version__, "scipy", scipy.__version__)
try:
    import cupy
    p = cupy.cuda.runtime.getDeviceProperties(0)
    print("cupy", cupy.__version__, "runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver",
          cupy.cuda.runtime.driverGetVersion(), "device", p["name"].decode(), "SMs", p["multiProcessorCount"])
except Exception as exc:
    print("cupy: unavailable:", exc)
try:
    import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)
except Exception as exc:
    print("torch: unavailable:", exc)
try:
    import Cython; print("cython", Cython.__version__)
except Exception as exc:
    print("cython: unavailable:", exc)
EOF
command -v nvcc >/dev/null && nvcc --version | tail -2

# background work on the CPU cores: synthetic data sets (one process each) and the Cython build
rm -rf "$CFN_BENCH_CACHE"; mkdir -p "$CFN_BENCH_CACHE"
for name in ML-10M ML-20M; do
  touch "$CFN_BENCH_CACHE/$name.pending"
  $PY bench/gpu_bench.py --prepare "$name" > "$WORK/prepare-$name.log" 2>&1 &
done
( $PY setup.py build_ext --inplace > "$WORK/build.log" 2>&1; echo $? > "$WORK/build.rc" ) &
build_pid=$!

stamp "CUDA engine vs NumPy reference (bench/gpu_numeric_check.py)"
timeout 300 $PY bench/gpu_numeric_check.py > "$WORK/numeric.log" 2>&1
rc=$?
grep -v "^  ok " "$WORK/numeric.log" | tail -40
[ $rc -eq 0 ] || { echo "NUMERIC CHECK FAILED (rc=$rc)"; status=1; }

stamp "waiting for the Cython build"
wait $build_pid
if [ "$(cat "$WORK/build.rc" 2>/dev/null)" != "0" ]; then
  echo "BUILD FAILED"; tail -30 "$WORK/build.log"; status=1
else
  echo "build_ext ok"
fi

stamp "pytest -k 'cuda or backends'"
timeout_flag=""
$PY -c "import pytest_timeout" 2>/dev/null && timeout_flag="--timeout=150"
timeout 330 $PY -m pytest -q -p no:cacheprovider $timeout_flag tests -k "cuda or backends" -rs 2>&1 | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "TESTS FAILED"; status=1; }

stamp "benchmark (bench/gpu_bench.py)"
timeout 420 $PY bench/gpu_bench.py --data "$DATA_DIR" --sweep --data-wait ${CFN_DATA_WAIT:-150} || { echo "BENCHMARK FAILED (rc=$?)"; status=1; }
cat "$WORK"/prepare-*.log 2>/dev/null

stamp "done (status $status)"
wait 2>/dev/null
exit $status
