"""VASP labels: write INCAR/KPOINTS/POSCAR/POTCAR, run the user's command, read OUTCAR with ASE.

Atoms are grouped by species for POSCAR/POTCAR and mapped back afterwards. The energy label
is VASP's free energy (TOTEN), the one consistent with the forces. A frame fails with
``scf_not_converged`` when VASP 6 reports ``EDIFF was not reached`` or when the last ionic
step used all NELM electronic steps (VASP 5 prints no message then; dpdata uses the same rule).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import ase.io
import numpy as np
from ase import Atoms

from .base import Computed, Labeler, require_program
from .external import grouped_order, in_input_order, keyword_value, run_program, tail_text
from .kpoints import kpoint_grid
from .results import LabelError, LabelerUnavailable

__all__ = ["VaspLabeler", "parse_outcar", "write_incar"]

FORCED_INCAR = {"NSW": 0, "IBRION": -1}


class VaspLabeler(Labeler):
    kind = "vasp"

    def potcar(self, element: str) -> Path:
        """The POTCAR file used for ``element``."""
        s = self.settings
        name = s.potcars.get(element, element)
        if Path(name).is_absolute():
            return Path(name)
        base = s.potcar_dir
        if base is None and os.environ.get("VASP_PP_PATH"):
            base = Path(os.environ["VASP_PP_PATH"]) / "potpaw_PBE"
        if base is None:
            raise LabelerUnavailable("label.vasp.potcar_dir is not set (and $VASP_PP_PATH is empty); "
                                     "point it at your POTCAR library (<dir>/<element>/POTCAR)")
        return Path(base) / name / "POTCAR"

    def check(self, elements: Iterable[str]) -> None:
        if self.config.mpi:
            require_program(self.config.mpi, self.kind, "install MPI or fix label.mpi")
        require_program(self.config.argv, self.kind, "set label.command to your VASP executable (e.g. vasp_std)")
        for element in sorted(set(elements)):
            path = self.potcar(element)
            if not path.is_file():
                raise LabelerUnavailable(f"label.vasp: no POTCAR for {element} at {path}; set label.vasp.potcar_dir "
                                         f"or label.vasp.potcars.{element}")

    def write_inputs(self, atoms: Atoms, task_dir: Path) -> np.ndarray:
        """Write the four input files; return the species-grouping permutation."""
        order = grouped_order(atoms.get_chemical_symbols())
        grouped = atoms[order]
        ase.io.write(task_dir / "POSCAR", grouped, format="vasp", direct=True)
        species = list(dict.fromkeys(grouped.get_chemical_symbols()))
        (task_dir / "POTCAR").write_bytes(b"".join(self.potcar(e).read_bytes() for e in species))
        incar = {"ISIF": 2 if atoms.pbc.all() else 0, "LWAVE": False, "LCHARG": False,
                 **self.settings.incar, **FORCED_INCAR}
        (task_dir / "INCAR").write_text(write_incar(incar))
        grid = kpoint_grid(atoms, self.settings.kspacing) if atoms.pbc.any() else (1, 1, 1)
        (task_dir / "KPOINTS").write_text("Gamma-centred grid from kspacing\n0\nGamma\n"
                                          f"{grid[0]} {grid[1]} {grid[2]}\n0 0 0\n")
        return order

    def compute(self, atoms: Atoms, task_dir: Path) -> Computed:
        order = self.write_inputs(atoms, task_dir)
        rc = run_program([*self.config.mpi, *self.config.argv], task_dir, timeout=self.config.timeout,
                         threads=self.config.threads, stdout="vasp.out", stderr="vasp.err")
        if not (task_dir / "OUTCAR").is_file():
            raise LabelError("crash" if rc else "missing_output",
                             f"no OUTCAR (exit status {rc}): {tail_text(task_dir / 'vasp.out')}")
        computed, positions = parse_outcar(task_dir / "OUTCAR")
        return in_input_order(computed, positions, atoms, order, task_dir / "OUTCAR")


def write_incar(tags: dict[str, Any]) -> str:
    """INCAR text; booleans as .TRUE./.FALSE., lists space-separated."""
    return "".join(f"{key.upper()} = {keyword_value(v, '.TRUE.', '.FALSE.')}\n" for key, v in tags.items())


def parse_outcar(path: Path) -> tuple[Computed, np.ndarray]:
    """(energy/forces/stress in OUTCAR atom order, positions Å) of the last ionic step.

    Raises:
        LabelError: ``scf_not_converged`` or ``missing_output`` (truncated / unreadable OUTCAR).
    """
    text = path.read_text(errors="replace")
    converged, why = _electronic_converged(text)
    if converged is None:
        raise LabelError("missing_output", f"VASP: {why} ({path})")
    if not converged:
        raise LabelError("scf_not_converged", f"VASP: {why} ({path})")
    try:
        atoms = ase.io.read(path, format="vasp-out", index=-1)
        res = atoms.calc.results
        computed: Computed = {"energy": float(res.get("free_energy", res["energy"])),
                              "forces": np.asarray(res["forces"], dtype=float)}
    except Exception as err:  # noqa: BLE001 - any parse problem is a missing output
        raise LabelError("missing_output", f"cannot read energy/forces from {path}: {err}") from None
    if res.get("stress") is not None and atoms.pbc.all():
        computed["stress"] = np.asarray(res["stress"], dtype=float)
    return computed, atoms.positions


def _electronic_converged(text: str) -> tuple[bool | None, str]:
    """Whether the last ionic step's SCF converged (None: no SCF in the file), and if not, why."""
    steps = re.findall(r"Iteration\s+(\d+)\(\s*(\d+)\)", text)
    if not steps:
        return None, "no electronic iterations in OUTCAR (VASP stopped early?)"
    last_ionic = steps[-1][0]
    n_elec = max(int(e) for i, e in steps if i == last_ionic)
    first = re.search(rf"Iteration\s+{last_ionic}\(\s*1\)", text)
    if text.rfind("EDIFF was not reached") > (first.start() if first else 0):
        return False, "EDIFF was not reached (unconverged)"
    nelm = re.search(r"NELM\s*=\s*(\d+)", text)
    if nelm and n_elec >= int(nelm.group(1)):
        return False, f"the last ionic step used all NELM={nelm.group(1)} electronic steps"
    return True, ""
