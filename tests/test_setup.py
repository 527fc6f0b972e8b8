"""What scripts/setup-env.sh installs is there, where it should be (CI on a fresh machine).

A machine that already has a package hides a missing install step; the tests that need a tool
skip with the command that installs it, so on CI (``CI=true``) this file turns such a gap into a
failure that names the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
on_ci = pytest.mark.skipif(not os.environ.get("CI"), reason="checks CI's set-up (CI=true)")


@on_ci
def test_deepmd_kit_and_lammps_environment_is_installed():
    variant = os.environ.get("DPA3_AL_DEEPMD", "lammps")
    if variant in ("0", "no", "off"):
        pytest.skip("DPA3_AL_DEEPMD=0: the deepmd-kit environment was not wanted")
    venv = Path(os.environ.get("DPA3_AL_DEEPMD_VENV", ROOT / ".venv-deepmd"))
    wanted = ["dp"] + ([] if variant == "python" else ["lmp"])
    missing = [name for name in wanted if not (venv / "bin" / name).exists()]
    assert not missing, (f"{venv}/bin lacks {missing}: scripts/setup-env.sh should have run "
                         f"scripts/setup-deepmd.sh{'' if variant == 'python' else ' --lammps'} (see its warning)")


@on_ci
def test_debian_programs_and_data_are_installed():
    wanted = {"pw.x": "quantum-espresso", "cp2k_shell": "cp2k", "slurmctld": "slurm-wlm", "munged": "munge"}
    import shutil

    missing = [f"{prog} ({pkg})" for prog, pkg in wanted.items() if not shutil.which(prog)]
    if not Path("/usr/share/espresso/pseudo/Si.pbe-rrkj.UPF").is_file():
        missing.append("/usr/share/espresso/pseudo (quantum-espresso-data)")
    assert not missing, f"missing after scripts/setup-env.sh: {', '.join(missing)}; apt-get install the packages named"
