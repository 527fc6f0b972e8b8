#!/usr/bin/env bash
# Set up the environment (idempotent) and run the default test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m slow   or   bash scripts/test.sh tests/model
# The tests run in DPA3_AL_TEST_WORKERS pytest-xdist workers (default 2; 0: one process, as plain pytest),
# a test file per worker at a time (module fixtures such as the deepmd-kit evaluations run once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
workers=${DPA3_AL_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec "${DPA3_AL_VENV:-.venv}/bin/python" -m pytest "$@"
fi
exec "${DPA3_AL_VENV:-.venv}/bin/python" -m pytest -n "$workers" --dist loadfile "$@"
