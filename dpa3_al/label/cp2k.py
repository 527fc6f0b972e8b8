"""CP2K labels through ASE's CP2K calculator (``cp2k_shell``), one fresh shell per frame.

The calculator runs inside the labeling worker (:mod:`dpa3_al.label.worker`), so a hung
``cp2k_shell`` is killed with the worker's process group when the frame times out. CP2K
only warns when the SCF does not converge; we read ``cp2k.out`` and fail the frame
(``scf_not_converged``) when it says ``SCF run NOT converged``. Debian's ``cp2k`` package
provides ``cp2k_shell`` (a link to cp2k.psmp, which starts in shell mode under that name)
and its data files in /usr/share/cp2k.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ase import Atoms
from ase.units import Rydberg

from .base import Computed, require_program
from .config import Cp2kConfig
from .inprocess import WorkerLabeler, calculator_results
from .results import LabelerUnavailable
from .worker import ScfNotConverged

__all__ = ["Cp2kLabeler", "cp2k_data_dir"]

_INSTALL = "install CP2K (Debian/Ubuntu: apt-get install cp2k, which provides cp2k_shell) or set label.command"


def cp2k_data_dir(settings: Cp2kConfig) -> Path:
    """Where CP2K finds basis sets and potentials."""
    if settings.data_dir is not None:
        return Path(settings.data_dir)
    return Path(os.environ.get("CP2K_DATA_DIR", "/usr/share/cp2k"))


@dataclass(frozen=True)
class _Cp2kWorkerSettings:
    settings: Cp2kConfig
    command: str


class Cp2kLabeler(WorkerLabeler):
    kind = "cp2k"
    factory = "make_backend"

    def __init__(self, config):
        super().__init__(config)
        self.settings = _Cp2kWorkerSettings(config.cp2k, shlex.join([*config.mpi, *config.argv]))

    def worker_env(self) -> dict[str, str]:
        return {"CP2K_DATA_DIR": str(cp2k_data_dir(self.config.cp2k))}

    def check(self, elements: Iterable[str]) -> None:
        s = self.config.cp2k
        if self.config.mpi:
            require_program(self.config.mpi, self.kind, "install MPI or fix label.mpi")
        require_program(self.config.argv, self.kind, _INSTALL)
        data = cp2k_data_dir(s)
        potential = f"GTH-{s.xc.upper()}" if s.pseudo_potential == "auto" else s.pseudo_potential
        for filename, name, key in ((s.basis_set_file, s.basis_set, "basis_set"),
                                    (s.potential_file, potential, "pseudo_potential")):
            path = Path(filename) if Path(filename).is_absolute() else data / filename
            if not path.is_file():
                raise LabelerUnavailable(f"label.cp2k: {path} not found; set label.cp2k.data_dir (or $CP2K_DATA_DIR) "
                                         "to CP2K's data directory")
            missing = sorted(set(elements) - _entries(path, name))
            if missing:
                raise LabelerUnavailable(f"label.cp2k.{key}: {name!r} in {path} has no entry for "
                                         f"{', '.join(missing)}; choose a {key.replace('_', ' ')} that covers them")


def _entries(path: Path, name: str) -> set[str]:
    """Elements that have ``name`` (as name or alias) in a CP2K basis/potential file."""
    found = set()
    for line in path.read_text(errors="replace").splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0][:1].isalpha() and not line.startswith("#") and name in tokens[1:]:
            found.add(tokens[0])
    return found


class _Cp2kBackend:
    def __init__(self, worker_settings: _Cp2kWorkerSettings):
        from ase.calculators.cp2k import CP2K

        self.cls = CP2K
        self.s = worker_settings.settings
        self.command = worker_settings.command

    def compute(self, atoms: Atoms, workdir: Path) -> Computed:
        s = self.s
        # directory "." (the worker runs in the task directory): CP2K limits PROJECT names to 80 characters
        calc = self.cls(command=self.command, directory=".", label="cp2k", xc=s.xc, basis_set=s.basis_set,
                        basis_set_file=s.basis_set_file, pseudo_potential=s.pseudo_potential,
                        potential_file=s.potential_file, cutoff=s.cutoff * Rydberg, max_scf=s.max_scf,
                        charge=s.charge, uks=s.uks, stress_tensor=bool(atoms.pbc.all()), inp=s.inp,
                        print_level="LOW")
        out = workdir / "cp2k.out"
        try:
            results = calculator_results(atoms, calc)
        except Exception as err:
            abort = _abort_message(out)
            if abort:
                raise RuntimeError(f"CP2K aborted: {abort} ({out})") from err
            raise
        finally:
            calc.close()
        if out.is_file() and "SCF run NOT converged" in out.read_text(errors="replace"):
            raise ScfNotConverged(f"CP2K: SCF run NOT converged within max_scf={s.max_scf} ({out})")
        return results


def _abort_message(out: Path) -> str:
    """The text of CP2K's [ABORT] box in ``out``, on one line ('' when there is none)."""
    if not out.is_file():
        return ""
    lines = out.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if "[ABORT]" in line), None)
    if start is None:
        return ""
    words = " ".join(line.strip(" *") for line in lines[max(0, start - 4):start + 6]).replace("[ABORT]", " ")
    return " ".join(w for w in words.split() if not re.fullmatch(r"[\\/|_O]+", w))[:500]


def make_backend(worker_settings: _Cp2kWorkerSettings) -> _Cp2kBackend:
    return _Cp2kBackend(worker_settings)
