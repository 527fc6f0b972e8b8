"""Labelers that run a Python ASE calculator (in a worker process): tblite, ase, model.

The calculator lives in a child process (:mod:`dpa3_al.label.worker`), so a frame that hangs
or crashes the calculator becomes a failure record instead of stopping the run.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .base import Computed, Labeler, settings_hash
from .config import AseConfig, ModelLabelConfig, TbliteConfig
from .results import LabelerUnavailable
from .worker import BackendSpec, CalcWorker

__all__ = ["WorkerLabeler", "TbliteLabeler", "AseLabeler", "ModelLabeler", "calculator_results", "import_object",
           "load_calculator_class"]


class WorkerLabeler(Labeler):
    """A labeler whose per-frame work is ``backend.compute(atoms, task_dir)`` in a child process."""

    factory: ClassVar[str] = "make_backend"

    def __init__(self, config):
        super().__init__(config)
        self._worker: CalcWorker | None = None

    def worker_env(self) -> dict[str, str]:
        """Extra environment variables for the worker process."""
        return {}

    def compute(self, atoms: Atoms, task_dir: Path) -> Computed:
        if self._worker is None:
            spec = BackendSpec(type(self).__module__, self.factory, self.settings)
            self._worker = CalcWorker(spec, threads=self.config.threads, env=self.worker_env())
        return self._worker.compute(atoms, task_dir, self.config.timeout)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def calculator_results(atoms: Atoms, calc: Any) -> Computed:
    """Energy (free energy where given, eV), forces (eV/Å), stress (periodic, eV/Å^3) of one frame."""
    atoms = atoms.copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    energy = atoms.get_potential_energy()
    out: Computed = {"energy": float(calc.results.get("free_energy", energy)), "forces": np.asarray(forces)}
    if atoms.pbc.all() and "stress" in getattr(calc, "implemented_properties", ()):
        out["stress"] = np.asarray(atoms.get_stress(voigt=False))
    return out


def import_object(path: str) -> Any:
    """``module.sub.Name`` -> the object (imports the module; never evaluates text)."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise LabelerUnavailable(f"label.ase.calculator: cannot import {path!r} ({err}); "
                                 "give the import path of an ASE calculator class, e.g. ase.calculators.emt.EMT") from None


def load_calculator_class(path: str) -> type:
    """The ASE calculator class at import path ``path``, checked before anything is called.

    A config names code: ``label.ase.calculator`` is imported, so it may name only a class
    deriving from ASE's ``BaseCalculator`` (every ASE calculator: ``Calculator``,
    ``FileIOCalculator``, tblite's, MACE's, ...). Any other importable object (a function such
    as ``subprocess.run``, a module, an instance) is refused before it is ever called.
    """
    from ase.calculators.calculator import BaseCalculator

    obj = import_object(path)
    if not isinstance(obj, type) or not issubclass(obj, BaseCalculator):
        kind = f"a {type(obj).__name__}" if not isinstance(obj, type) else "a class that is not an ASE calculator"
        raise LabelerUnavailable(f"label.ase.calculator: {path!r} is {kind}; only ASE calculator classes "
                                 "(subclasses of ase.calculators.calculator.BaseCalculator) are accepted, "
                                 "e.g. ase.calculators.emt.EMT")
    return obj


# ---------------------------------------------------------------- tblite (GFN-xTB)


class TbliteLabeler(WorkerLabeler):
    """GFN2/GFN1-xTB through tblite's ASE calculator; molecules and periodic cells."""

    kind = "tblite"

    def check(self, elements: Iterable[str]) -> None:
        if importlib.util.find_spec("tblite") is None:
            raise LabelerUnavailable("label (tblite): the tblite Python package is missing; "
                                     "pip install tblite (or pip install 'dpa3-al[labelers]')")
        heavy = sorted(e for e in elements if atomic_numbers.get(e, 999) > 86)
        if heavy:
            raise LabelerUnavailable(f"label (tblite): GFN-xTB has parameters up to Rn (Z=86) only; frames contain "
                                     f"{', '.join(heavy)}; use another labeler (espresso, cp2k, vasp, ...)")


class _TbliteBackend:
    def __init__(self, settings: TbliteConfig):
        from tblite.ase import TBLite

        self.settings = settings
        self.cls = TBLite

    def compute(self, atoms: Atoms, workdir: Path) -> Computed:
        s = self.settings
        calc = self.cls(method=s.method, accuracy=s.accuracy, electronic_temperature=s.electronic_temperature,
                        max_iterations=s.max_iterations, charge=s.charge, multiplicity=s.multiplicity, verbosity=0)
        return calculator_results(atoms, calc)


# ---------------------------------------------------------------- any ASE calculator


class AseLabeler(WorkerLabeler):
    """Any ASE calculator class by import path and keyword arguments (EMT, LJ, ...)."""

    kind = "ase"

    def check(self, elements: Iterable[str]) -> None:
        load_calculator_class(self.settings.calculator)
        if self.settings.calculator == "ase.calculators.emt.EMT":
            from ase.calculators.emt import parameters

            missing = sorted(set(elements) - set(parameters))
            if missing:
                raise LabelerUnavailable(f"label (ase EMT): no EMT parameters for {', '.join(missing)}; EMT knows "
                                         f"{', '.join(sorted(parameters))}; choose another calculator")


class _AseBackend:
    def __init__(self, settings: AseConfig):
        self.settings = settings
        self.cls = load_calculator_class(settings.calculator)

    def compute(self, atoms: Atoms, workdir: Path) -> Computed:
        kwargs = dict(self.settings.kwargs)
        calc = self.cls(**kwargs)
        if hasattr(calc, "directory"):
            calc.directory = str(workdir)
        return calculator_results(atoms, calc)


# ---------------------------------------------------------------- teacher model


class ModelLabeler(WorkerLabeler):
    """A teacher checkpoint (ours or deepmd-kit) through ``dpa3_al.model.DPA3Calculator``."""

    kind = "model"

    def __init__(self, config):
        super().__init__(config)
        self._type_map: list[str] | None = None
        self._hash: str | None = None

    @property
    def settings_hash(self) -> str:
        """Includes a digest of the checkpoint file, so another teacher at the same path is new."""
        if self._hash is None:
            path = Path(self.settings.checkpoint)
            self._hash = settings_hash(self.config, extra=_file_digest(path) if path.is_file() else None)
        return self._hash

    def check(self, elements: Iterable[str]) -> None:
        path = Path(self.settings.checkpoint)
        if not path.is_file():
            raise LabelerUnavailable(f"label.model.checkpoint: {path} does not exist; give the teacher checkpoint")
        if self._type_map is None:
            from dpa3_al.model import load_model

            self._type_map = list(load_model(path, head=self.settings.head).type_map)
        missing = sorted(set(elements) - set(self._type_map))
        if missing:
            raise LabelerUnavailable(f"label (model): the teacher {path} does not know {', '.join(missing)} "
                                     f"(its type map: {', '.join(self._type_map)}); use another teacher or labeler")


class _ModelBackend:
    def __init__(self, settings: ModelLabelConfig):
        from dpa3_al.model import DPA3Calculator

        self.calc = DPA3Calculator(str(settings.checkpoint), head=settings.head, device=settings.device)

    def compute(self, atoms: Atoms, workdir: Path) -> Computed:
        self.calc.reset()
        return calculator_results(atoms, self.calc)


def _file_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def make_backend(settings: Any) -> Any:
    """Worker entry point: the backend object for ``settings`` (dispatch on its type)."""
    backends = {TbliteConfig: _TbliteBackend, AseConfig: _AseBackend, ModelLabelConfig: _ModelBackend}
    return backends[type(settings)](settings)
