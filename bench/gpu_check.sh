#!/usr/bin/env bash
# The whole GPU check of cfn_fast's CUDA engine in ONE command, at most 8 minutes including the build:
#
#     bash bench/gpu_check.sh DIR        # from the repository root; DIR holds ml-1m/ (see bench/README.md)
#
# Results go to $OUT when it is set (the device tool's output folder), else to DIR:
#   gpu_check.jsonl  one JSON line per result, appended (and fsync'ed) as each stage produces it
#   gpu_check.log    everything printed;   gpu_table.md  the summary table, written at the end
# Each stage is its own process under `timeout` with its own budget (seconds below: 410 s in all,
# table 10 s, so 7 min at the very most): a stage that hangs or runs long loses only itself, and the stages run in
# order of value, so a check cut short keeps the most important results.  The Cython build
# (for the cpu backend the ML-1M RMSE check compares against) runs in the background from the start.
set -u
DIR=${1:-.device_data}
cd "$(dirname "$0")/.." || exit 2
# the repository, and tests/ for the CUDA engine's numeric check and host emulation (tests/cuda_emulator)
export PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RESULTS=${OUT:-$DIR}
mkdir -p "$RESULTS"
JSONL="$RESULTS/gpu_check.jsonl"
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1
started=$(date +%s)
export CFN_BUILD_RC="$RESULTS/.build_rc"
rm -f "$CFN_BUILD_RC"

# stage NAME BUDGET: run `gpu_stages.py NAME` under timeout; a killed stage still leaves a JSON line
stage() {
  local name=$1 budget=$2
  echo "---- $name (budget ${budget}s, +$(( $(date +%s) - started ))s)"
  timeout -k 5 "$budget" $PY bench/gpu_stages.py "$name" --data "$DIR" --results "$JSONL"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    printf '{"stage": "%s", "status": "timeout", "budget_s": %s}\n' "$name" "$budget" >> "$JSONL"
  elif [ $rc -ne 0 ]; then
    printf '{"stage": "%s", "status": "exit %s"}\n' "$name" "$rc" >> "$JSONL"
  fi
}

( timeout 150 $PY setup.py build_ext --inplace > "$RESULTS/build.log" 2>&1; echo $? > "$CFN_BUILD_RC" ) &
build_pid=$!

stage machine 10
stage nvrtc   35      # compile ~10-20 s (NVRTC), then the kernels' registers and the launch plan
stage numeric 50      # ~15 s against the NumPy reference, ~15 s against the cpu engine (after the build)
stage pytest  40      # tests/test_cuda_compile.py tests/test_backends.py, ~20 s
stage shard   20      # 2 CudaShardEngines vs the NumPy shards (2 epochs, ~3 s), then ~2 s of sharded steps timed
stage ml1m    40      # CUDA ~5 s, cpu backend ~5-10 s on 16 cores
stage ml10m   45      # data ~3 s per kind, setup+warm-up ~3 s, targets 1.0 s (I) and 2.0 s (U)
stage ml20m   30      # data ~5 s, target 2.0 s
stage netflix 90      # data ~10 s per kind (90 M ratings), init ~5 s, targets 10 s (I-CFN)
stage peer    50      # 4 shapes x (data + 4 s of peer steps)
wait "$build_pid"      # (not a bare `wait`: that could wait for the tee of the log as well)
printf '{"stage": "build", "status": "rc %s"}\n' "$(cat "$CFN_BUILD_RC" 2>/dev/null || echo '?')" >> "$JSONL"
timeout 10 $PY bench/gpu_stages.py table --results "$JSONL"
echo "---- done (+$(( $(date +%s) - started ))s); results in $RESULTS"
