"""PySCF Kohn-Sham DFT labels: molecules (any basis) and periodic cells (GTH basis + pseudo).

Forces come from PySCF's analytic nuclear gradients; the stress of periodic frames from
``Gradients.get_stress`` (Γ-point/k-point FFTDF, non-hybrid functionals), skipped with a
warning in the worker log where PySCF has none. An SCF that stops unconverged
(``mf.converged`` false) fails the frame with reason ``scf_not_converged``.
Units: PySCF works in Hartree and Bohr; results are converted to eV and Å.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

from .base import Computed
from .config import PyscfConfig
from .inprocess import WorkerLabeler
from .kpoints import kpoint_grid
from .results import LabelerUnavailable
from .worker import ScfNotConverged, Unsupported

log = logging.getLogger(__name__)

__all__ = ["PyscfLabeler"]


class PyscfLabeler(WorkerLabeler):
    kind = "pyscf"

    def check(self, elements: Iterable[str]) -> None:
        if importlib.util.find_spec("pyscf") is None:
            raise LabelerUnavailable("label (pyscf): the pyscf package is missing; pip install pyscf")
        import warnings

        from pyscf import gto

        missing = []
        for element in sorted(set(elements)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "install basis-set-exchange" hints
                    if not gto.basis.load(self.settings.basis, element):
                        missing.append(element)
            except (RuntimeError, KeyError, ValueError, OSError, TypeError):
                missing.append(element)
        if missing:
            raise LabelerUnavailable(f"label.pyscf.basis: basis {self.settings.basis!r} has no functions for "
                                     f"{', '.join(missing)}; choose a basis that covers them (e.g. def2-svp)")

    def worker_env(self) -> dict[str, str]:
        return {"PYSCF_MAX_MEMORY": "4000"}


class _PyscfBackend:
    def __init__(self, settings: PyscfConfig):
        import pyscf  # noqa: F401 - fail at set-up, not on the first frame

        self.s = settings

    def compute(self, atoms: Atoms, workdir: Path) -> Computed:
        if not atoms.pbc.any():
            return self._molecule(atoms)
        if atoms.pbc.all():
            return self._periodic(atoms)
        raise Unsupported(f"pyscf labels molecules (pbc all false) or 3D cells; this frame has pbc={atoms.pbc.tolist()}")

    def _molecule(self, atoms: Atoms) -> Computed:
        from pyscf import dft, gto

        s = self.s
        mol = gto.M(atom=_atom_list(atoms), unit="Angstrom", basis=s.basis, ecp=s.pseudo, charge=s.charge,
                    spin=s.spin, verbose=3)
        mf = (dft.RKS(mol) if s.spin == 0 else dft.UKS(mol))
        if s.density_fit:
            mf = mf.density_fit()
        mf.xc, mf.conv_tol, mf.max_cycle = s.xc, s.conv_tol, s.max_cycle
        energy = mf.kernel()
        _require_converged(mf)
        grad = mf.nuc_grad_method().kernel()
        return {"energy": energy * Hartree, "forces": -np.asarray(grad) * Hartree / Bohr}

    def _periodic(self, atoms: Atoms) -> Computed:
        from pyscf.pbc import dft as pdft
        from pyscf.pbc import gto as pgto

        s = self.s
        cell = pgto.Cell(atom=_atom_list(atoms), a=np.asarray(atoms.cell.array), unit="Angstrom", basis=s.basis,
                         pseudo=s.pseudo, charge=s.charge, spin=s.spin, verbose=3)
        if s.ke_cutoff is not None:
            cell.ke_cutoff = s.ke_cutoff
        cell.build()
        grid = kpoint_grid(atoms, s.kspacing) if s.kspacing else (1, 1, 1)
        kpts = cell.make_kpts(grid)
        mf = (pdft.KRKS(cell, kpts) if s.spin == 0 else pdft.KUKS(cell, kpts))
        mf.xc, mf.conv_tol, mf.max_cycle = s.xc, s.conv_tol, s.max_cycle
        energy = mf.kernel()
        _require_converged(mf)
        mf_grad = mf.nuc_grad_method()
        out: Computed = {"energy": energy * Hartree, "forces": -np.asarray(mf_grad.kernel()) * Hartree / Bohr}
        if s.stress:
            try:
                out["stress"] = np.asarray(mf_grad.get_stress()) * Hartree / Bohr**3
            except (NotImplementedError, AssertionError, AttributeError) as err:
                log.warning("pyscf has no stress for this setting (%s); frame labeled without virial", err)
        return out


def _atom_list(atoms: Atoms) -> list[tuple[str, tuple[float, float, float]]]:
    return [(sym, tuple(pos)) for sym, pos in zip(atoms.get_chemical_symbols(), atoms.positions.tolist())]


def _require_converged(mf: Any) -> None:
    if not mf.converged:
        raise ScfNotConverged(f"PySCF SCF not converged within max_cycle={mf.max_cycle} (conv_tol={mf.conv_tol:g})")


def make_backend(settings: PyscfConfig) -> _PyscfBackend:
    return _PyscfBackend(settings)
