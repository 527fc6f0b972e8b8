"""Quantum ESPRESSO (pw.x) labels: ASE writes the input and reads the output; we run pw.x.

Running pw.x ourselves (instead of through ASE's calculator) gives each frame a timeout and
keeps ``espresso.pwi`` / ``espresso.pwo`` / ``espresso.err`` in the task directory.
An SCF that stops with ``convergence NOT achieved`` (pw.x's default ``scf_must_converge``)
fails the frame with reason ``scf_not_converged``. Checked with Debian's QE 6.7 and ASE 3.29.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

import ase.io
from ase import Atoms

from .base import Computed, Labeler, require_program
from .external import run_program, tail_text
from .kpoints import kpoint_grid
from .results import LabelError, LabelerUnavailable

__all__ = ["EspressoLabeler", "parse_espresso_output"]

_INSTALL = "install Quantum ESPRESSO (Debian/Ubuntu: apt-get install quantum-espresso) or set label.command"


class EspressoLabeler(Labeler):
    kind = "espresso"

    def check(self, elements: Iterable[str]) -> None:
        if self.config.mpi:
            require_program(self.config.mpi, self.kind, "install MPI or fix label.mpi")
        require_program(self.config.argv, self.kind, _INSTALL)
        pseudo_dir = Path(self.settings.pseudo_dir)
        if not pseudo_dir.is_dir():
            raise LabelerUnavailable(f"label.espresso.pseudo_dir: {pseudo_dir} is not a directory; "
                                     "set it to the folder holding your UPF files")
        for element in sorted(set(elements)):
            name = self.settings.pseudopotentials.get(element)
            if name is None:
                raise LabelerUnavailable(f"label.espresso.pseudopotentials has no entry for {element}; "
                                         f"{_candidates(pseudo_dir, element)}")
            if not (pseudo_dir / name).is_file():
                raise LabelerUnavailable(f"label.espresso.pseudopotentials.{element}: {pseudo_dir / name} does not "
                                         f"exist; {_candidates(pseudo_dir, element)}")

    def input_parameters(self, atoms: Atoms) -> dict[str, Any]:
        """Keyword arguments for ``ase.io.write(..., format='espresso-in')`` for this frame."""
        from ase.io.espresso import Namelist

        s = self.settings
        user = Namelist(copy.deepcopy(s.input_data))
        user.to_nested("pw")
        data = {section: dict(values) for section, values in user.items()}
        control = data.setdefault("control", {})
        control.setdefault("calculation", "scf")
        control.setdefault("outdir", "out")
        control.setdefault("disk_io", "none")
        control.update(pseudo_dir=str(Path(s.pseudo_dir).resolve()), tprnfor=True, tstress=bool(atoms.pbc.all()))
        system = data.setdefault("system", {})
        system.setdefault("ecutwfc", s.ecutwfc)
        if s.ecutrho is not None:
            system.setdefault("ecutrho", s.ecutrho)
        species = dict.fromkeys(atoms.get_chemical_symbols())
        kpts = kpoint_grid(atoms, s.kspacing) if atoms.pbc.any() else None
        return {"input_data": data, "pseudopotentials": {e: s.pseudopotentials[e] for e in species}, "kpts": kpts}

    def compute(self, atoms: Atoms, task_dir: Path) -> Computed:
        if atoms.cell.volume <= 1e-9:
            raise LabelError("unsupported", "pw.x needs a cell: put the molecule in a box "
                                            "(atoms.center(vacuum=6)) before labeling")
        ase.io.write(task_dir / "espresso.pwi", atoms, format="espresso-in", **self.input_parameters(atoms))
        argv = [*self.config.mpi, *self.config.argv, "-in", "espresso.pwi"]
        rc = run_program(argv, task_dir, timeout=self.config.timeout, threads=self.config.threads,
                         stdout="espresso.pwo", stderr="espresso.err")
        return parse_espresso_output(task_dir / "espresso.pwo", rc, atoms)


def parse_espresso_output(path: Path, returncode: int, atoms: Atoms) -> Computed:
    """Energy/forces/stress from a pw.x output, or :class:`LabelError` with the reason."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    if "convergence NOT achieved" in text:
        raise LabelError("scf_not_converged", f"pw.x: {_first_line(text, 'convergence NOT achieved')} ({path})")
    error = re.search(r"%{20,}\n(.*?)%{20,}", text, re.S)
    if error or "JOB DONE" not in text or returncode != 0:
        detail = " ".join(error.group(1).split()) if error else tail_text(path.with_suffix(".err"))
        reason = "crash" if text else "missing_output"
        raise LabelError(reason, f"pw.x exit status {returncode}: {detail} ({path})")
    try:
        result = ase.io.read(path, format="espresso-out", index=-1)
        res = result.calc.results
        computed: Computed = {"energy": float(res["energy"]), "forces": res["forces"]}
    except Exception as err:  # noqa: BLE001 - any parse problem is a missing output
        raise LabelError("missing_output", f"cannot read energy/forces from {path}: {err}") from None
    if atoms.pbc.all() and res.get("stress") is not None:
        computed["stress"] = res["stress"]
    return computed


def _first_line(text: str, needle: str) -> str:
    return next((line.strip() for line in text.splitlines() if needle in line), needle)


def _candidates(pseudo_dir: Path, element: str) -> str:
    pattern = re.compile(rf"^{re.escape(element)}([._-]|$)", re.IGNORECASE)
    files = sorted(p.name for p in pseudo_dir.glob("*") if pattern.match(p.name) and p.is_file())
    if not files:
        return f"no file for {element} in {pseudo_dir}; download a UPF for it (e.g. from SSSP or pslibrary)"
    return f"add one of the files for {element} in {pseudo_dir}, e.g. {element}: {files[0]} (found: {', '.join(files)})"
