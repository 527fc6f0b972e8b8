#!/usr/bin/env bash
# The main job: set up the environment (idempotent) and run the quickstart active-learning loop
# (water, GFN2-xTB labels, committee of 4, 2 NVT stages) in runs/quickstart, then write its report.
# Running it again continues an unfinished run (resume) or shows the finished one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
DPA3="${DPA3_AL_VENV:-.venv}/bin/dpa3-al"
RUN=runs/quickstart
if [ -f "$RUN/state.json" ]; then
  first=$("$DPA3" status "$RUN" 2>&1 | head -n 1 || true)
  case "$first" in
    *": succeeded"*) echo "[quickstart] $RUN already finished" ;;
    # resume returns once the new driver runs, so --wait follows the run to its end
    *) "$DPA3" resume "$RUN" --wait || true ;;
  esac
else
  "$DPA3" submit templates/quickstart.yaml --runs runs --wait || true
fi
"$DPA3" report "$RUN"
"$DPA3" status "$RUN"
