#!/usr/bin/env bash
# Every CPU benchmark whose figures the README quotes, one after another on a quiet machine,
# each printing the command that made it. Output: bench/results/cpu-suite.txt (appended as it goes).
#
#   bash bench/run_cpu_suite.sh [DEEPMD_VENV]      # DEEPMD_VENV: a venv with deepmd-kit 3.2 (optional)
#
# About an hour on 2 cores. (Workflow overhead: bench/bench_workflow_overhead.py, docs/workflows.md.) Without DEEPMD_VENV the side-by-side parts are skipped; the
# reference figures in shared/design/performance.md were measured on the same kind of machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DP_VENV=${1:-}
OUT=bench/results/cpu-suite.txt
mkdir -p bench/results
run() {
  echo "=== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$OUT"
  "$@" 2>&1 | grep -v -E "Warning|warnings.warn" | tee -a "$OUT"
}
DP_PY=(); DP_EXE=()
if [ -n "$DP_VENV" ]; then DP_PY=(--deepmd-python "$DP_VENV/bin/python"); DP_EXE=(--deepmd "$DP_VENV/bin/dp"); fi

run "$PY" bench/bench_model.py "${DP_PY[@]}"
run "$PY" bench/bench_scaling.py
run "$PY" bench/bench_scaling.py --sizes 24576 --modes low --repeat 1
run "$PY" bench/bench_scaling.py --model dpa31-3m-shape --sizes 192,1536
run "$PY" bench/bench_train.py step "${DP_EXE[@]}"
run "$PY" bench/bench_train.py step --model dpa31-3m-shape --repeat 2
run "$PY" bench/bench_kernels.py --calls 12
run "$PY" bench/bench_kernels.py --model water-example --calls 10
run "$PY" bench/bench_kernels.py --train --calls 4                  # C++ kernels on/off in a training step
run "$PY" bench/bench_train.py compare --steps 1000 "${DP_EXE[@]}"
run "$PY" bench/bench_scaling.py --md 200 --sizes 1536     # last: ~15 min
