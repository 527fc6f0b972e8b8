"""ABACUS labels: write INPUT/STRU/KPT, run the user's command, read the output with dpdata.

Atoms are grouped by species for STRU (written by dpdata) and mapped back afterwards. A
frame fails with ``scf_not_converged`` when ``running_scf.log`` says the charge density did
not converge (``convergence has NOT been achieved`` / ``SCF NOT CONVERGED``).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ase import Atoms

from .base import Computed, Labeler, require_program
from .external import grouped_order, in_input_order, keyword_value, run_program, tail_text
from .kpoints import kpoint_grid
from .results import LabelError, LabelerUnavailable

__all__ = ["AbacusLabeler", "parse_abacus_output"]

_NOT_CONVERGED = re.compile(r"convergence has not been achieved|SCF NOT CONVERGED", re.IGNORECASE)
_FIXED = ("calculation", "suffix", "stru_file", "kpoint_file")


class AbacusLabeler(Labeler):
    kind = "abacus"

    def _lcao(self) -> bool:
        return str(self.settings.input.get("basis_type", "pw")).lower().startswith("lcao")

    def check(self, elements: Iterable[str]) -> None:
        s = self.settings
        if self.config.mpi:
            require_program(self.config.mpi, self.kind, "install MPI or fix label.mpi")
        require_program(self.config.argv, self.kind, "set label.command to your ABACUS executable (e.g. abacus)")
        needs = [("pseudopotentials", s.pseudo_dir, s.pseudopotentials)]
        if self._lcao():
            needs.append(("orbitals", s.orbital_dir or s.pseudo_dir, s.orbitals))
        for key, folder, files in needs:
            for element in sorted(set(elements)):
                if element not in files:
                    raise LabelerUnavailable(f"label.abacus.{key} has no entry for {element}; add {element}: <file>")
                if not (Path(folder) / files[element]).is_file():
                    raise LabelerUnavailable(f"label.abacus.{key}.{element}: {Path(folder) / files[element]} "
                                             "does not exist")

    def write_inputs(self, atoms: Atoms, task_dir: Path) -> np.ndarray:
        """Write INPUT, STRU and KPT; return the species-grouping permutation."""
        import dpdata

        s = self.settings
        order = grouped_order(atoms.get_chemical_symbols())
        grouped = atoms[order]
        species = list(dict.fromkeys(grouped.get_chemical_symbols()))
        params: dict[str, Any] = {"ntype": len(species), "cal_force": 1, "cal_stress": int(bool(atoms.pbc.all())),
                                  "pseudo_dir": str(Path(s.pseudo_dir).resolve())}
        if s.orbital_dir is not None:
            params["orbital_dir"] = str(Path(s.orbital_dir).resolve())
        params.update({k: v for k, v in s.input.items() if k not in _FIXED})
        params.update(calculation="scf", suffix="ABACUS", stru_file="STRU", kpoint_file="KPT")
        lines = ["INPUT_PARAMETERS"] + [f"{key} {keyword_value(v, '1', '0')}" for key, v in params.items()]
        (task_dir / "INPUT").write_text("\n".join(lines) + "\n")
        system = dpdata.System(grouped, fmt="ase/structure")
        extra = {"numerical_orbital": [s.orbitals[e] for e in species]} if self._lcao() else {}
        system.to("abacus/stru", str(task_dir / "STRU"), pp_file=[s.pseudopotentials[e] for e in species], **extra)
        grid = kpoint_grid(atoms, s.kspacing) if atoms.pbc.any() else (1, 1, 1)
        (task_dir / "KPT").write_text(f"K_POINTS\n0\nGamma\n{grid[0]} {grid[1]} {grid[2]} 0 0 0\n")
        return order

    def compute(self, atoms: Atoms, task_dir: Path) -> Computed:
        order = self.write_inputs(atoms, task_dir)
        rc = run_program([*self.config.mpi, *self.config.argv], task_dir, timeout=self.config.timeout,
                         threads=self.config.threads, stdout="abacus.out", stderr="abacus.err")
        try:
            computed, positions = parse_abacus_output(task_dir)
        except LabelError as err:
            if rc != 0 and err.reason == "missing_output":
                raise LabelError("crash", f"exit status {rc}: {tail_text(task_dir / 'abacus.err')}") from None
            raise
        return in_input_order(computed, positions, atoms, order, task_dir / "STRU")


def parse_abacus_output(task_dir: Path) -> tuple[Computed, np.ndarray]:
    """(energy/forces/stress in STRU atom order, positions Å) of an ABACUS scf directory.

    ``task_dir`` holds INPUT, the structure file and ``OUT.<suffix>/running_scf.log``.
    """
    import dpdata

    text_in = (task_dir / "INPUT").read_text(errors="replace") if (task_dir / "INPUT").is_file() else ""
    suffix = re.search(r"^\s*suffix\s+(\S+)", text_in, re.M)
    log = task_dir / f"OUT.{suffix.group(1) if suffix else 'ABACUS'}" / "running_scf.log"
    if not log.is_file():
        raise LabelError("missing_output", f"{log} does not exist")
    if _NOT_CONVERGED.search(log.read_text(errors="replace")):
        raise LabelError("scf_not_converged", f"ABACUS: charge density did not converge ({log})")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        system = dpdata.LabeledSystem(str(task_dir), fmt="abacus/scf")
    if len(system) == 0 or np.size(system["forces"]) == 0:
        raise LabelError("missing_output", f"no converged energy and forces in {log}")
    computed: Computed = {"energy": float(system["energies"][0]), "forces": np.asarray(system["forces"][0])}
    if "virials" in system.data and not system.nopbc:
        volume = abs(np.linalg.det(system["cells"][0]))
        computed["stress"] = -np.asarray(system["virials"][0]) / volume
    return computed, np.asarray(system["coords"][0])
