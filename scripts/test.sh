#!/usr/bin/env bash
# Set up the environment (idempotent) and run the default test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m slow   or   bash scripts/test.sh tests/model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "${DPA3_AL_VENV:-.venv}/bin/python" -m pytest "$@"
