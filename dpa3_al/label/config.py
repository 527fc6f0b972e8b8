"""The ``label:`` section of a run config: which reference method labels frames, and how.

One :class:`LabelConfig` holds the common settings (``kind``, per-frame ``timeout``,
``retries``, ``threads``, the program ``command`` and an ``mpi`` prefix) plus one
sub-section per backend; only the section named by ``kind`` is used, and setting another
one is an error (it would be silently ignored otherwise)::

    label:
      kind: espresso
      timeout: 600          # s per frame
      retries: 1
      mpi: "mpirun -np 4"
      espresso:
        pseudopotentials: {Si: Si.pbe-rrkj.UPF}
        ecutwfc: 30         # Ry
        kspacing: 0.3       # 1/Å, 2π included (as VASP's KSPACING)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dpa3_al.common.typed_config import ConfigError, field

__all__ = [
    "LABELER_KINDS", "LabelConfig", "TbliteConfig", "PyscfConfig", "EspressoConfig", "Cp2kConfig",
    "VaspConfig", "AbacusConfig", "AseConfig", "ModelLabelConfig",
]

LABELER_KINDS = ("tblite", "pyscf", "espresso", "cp2k", "vasp", "abacus", "ase", "model")
LabelerKind = Literal["tblite", "pyscf", "espresso", "cp2k", "vasp", "abacus", "ase", "model"]

DEFAULT_COMMANDS = {"espresso": ("pw.x",), "cp2k": ("cp2k_shell",)}
"""Program argv used when ``label.command`` is empty (vasp and abacus have no default)."""


@dataclass(frozen=True)
class TbliteConfig:
    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = field("GFN2-xTB", doc="xTB Hamiltonian")
    accuracy: float = field(1.0, doc="numerical accuracy (smaller is tighter)", gt=0)
    electronic_temperature: float = field(300.0, doc="Fermi smearing temperature", unit="K", gt=0)
    max_iterations: int = field(250, doc="SCF iterations before the frame counts as not converged", ge=1)
    charge: float | None = field(None, doc="total charge (null: sum of the frame's initial charges)")
    multiplicity: int | None = field(None, doc="spin multiplicity (null: from the frame's magnetic moments)")


@dataclass(frozen=True)
class PyscfConfig:
    xc: str = field("PBE", doc="exchange-correlation functional (PySCF/libxc name)")
    basis: str = field("def2-svp", doc="basis set; periodic frames need a GTH basis such as gth-dzvp")
    pseudo: str | None = field(None, doc="pseudopotential (periodic frames: e.g. gth-pbe); null: all-electron")
    charge: int = field(0, doc="total charge")
    spin: int = field(0, doc="2S, number of unpaired electrons (>0 selects unrestricted KS)", ge=0)
    conv_tol: float = field(1e-9, doc="SCF energy convergence threshold", unit="Hartree", gt=0)
    max_cycle: int = field(100, doc="SCF cycles before the frame counts as not converged", ge=1)
    kspacing: float | None = field(None, doc="k-point spacing, 2π included (null: Γ only)", unit="1/Å", gt=0)
    ke_cutoff: float | None = field(None, doc="plane-wave cutoff of periodic FFTDF (null: PySCF default)",
                                    unit="Hartree", gt=0)
    density_fit: bool = field(False, doc="density fitting for molecules (faster, small error)")
    stress: bool = field(True, doc="compute the stress of periodic frames where PySCF supports it")


@dataclass(frozen=True)
class EspressoConfig:
    pseudo_dir: Path = field(Path("/usr/share/espresso/pseudo"), doc="directory of the UPF files")
    pseudopotentials: dict[str, str] = field(default_factory=dict,
                                             doc="element -> UPF file name in pseudo_dir, e.g. {Si: Si.pbe-rrkj.UPF}")
    ecutwfc: float = field(40.0, doc="wave-function cutoff", unit="Ry", gt=0)
    ecutrho: float | None = field(None, doc="density cutoff (null: 4 x ecutwfc)", unit="Ry", gt=0)
    kspacing: float = field(0.25, doc="k-point spacing, 2π included (as VASP KSPACING)", unit="1/Å", gt=0)
    input_data: dict[str, Any] = field(default_factory=dict,
                                       doc="extra pw.x namelist entries, nested ({system: {occupations: smearing}}) or flat")


@dataclass(frozen=True)
class Cp2kConfig:
    xc: str = field("PBE", doc="functional")
    basis_set: str = field("DZVP-MOLOPT-SR-GTH", doc="basis set name for every element")
    basis_set_file: str = field("BASIS_MOLOPT", doc="basis set file (in CP2K's data directory)")
    pseudo_potential: str = field("auto", doc="GTH potential name; auto: GTH-<xc>-q<valence>")
    potential_file: str = field("POTENTIAL", doc="potential file (in CP2K's data directory)")
    cutoff: float = field(400.0, doc="multigrid cutoff", unit="Ry", gt=0)
    max_scf: int = field(50, doc="SCF steps before the frame counts as not converged", ge=1)
    charge: float = field(0.0, doc="total charge")
    uks: bool = field(False, doc="unrestricted (spin-polarised) Kohn-Sham")
    data_dir: Path | None = field(None, doc="CP2K data directory (null: $CP2K_DATA_DIR or /usr/share/cp2k)")
    inp: str = field("", doc="extra CP2K input text merged into the generated input")


@dataclass(frozen=True)
class VaspConfig:
    incar: dict[str, Any] = field(default_factory=dict, doc="INCAR tags (ENCUT, ISMEAR, ...); NSW=0 and IBRION=-1 are set")
    kspacing: float = field(0.25, doc="k-point spacing for a Γ-centred grid, 2π included", unit="1/Å", gt=0)
    potcar_dir: Path | None = field(None, doc="POTCAR library: <potcar_dir>/<name>/POTCAR (null: $VASP_PP_PATH/potpaw_PBE)")
    potcars: dict[str, str] = field(default_factory=dict, doc="element -> POTCAR sub-directory, e.g. {O: O_s} (default: the element)")


@dataclass(frozen=True)
class AbacusConfig:
    input: dict[str, Any] = field(default_factory=dict, doc="INPUT keys (ecutwfc, basis_type, ...); calculation=scf is set")
    pseudo_dir: Path = field(Path("."), doc="directory of the pseudopotential files")
    pseudopotentials: dict[str, str] = field(default_factory=dict, doc="element -> pseudopotential file name")
    orbital_dir: Path | None = field(None, doc="directory of numerical orbitals (basis_type lcao)")
    orbitals: dict[str, str] = field(default_factory=dict, doc="element -> orbital file name (basis_type lcao)")
    kspacing: float = field(0.25, doc="k-point spacing for a Γ-centred grid, 2π included", unit="1/Å", gt=0)


@dataclass(frozen=True)
class AseConfig:
    calculator: str = field("ase.calculators.emt.EMT", doc="import path of an ASE calculator class")
    kwargs: dict[str, Any] = field(default_factory=dict, doc="keyword arguments for the calculator")


@dataclass(frozen=True)
class ModelLabelConfig:
    checkpoint: Path | None = field(None, doc="teacher checkpoint (ours or deepmd-kit *.pt)")
    head: str | None = field(None, doc="head of a multi-task checkpoint")
    device: str = field("cpu", doc="torch device")


_SECTIONS = {"tblite": TbliteConfig, "pyscf": PyscfConfig, "espresso": EspressoConfig, "cp2k": Cp2kConfig,
             "vasp": VaspConfig, "abacus": AbacusConfig, "ase": AseConfig, "model": ModelLabelConfig}


@dataclass(frozen=True)
class LabelConfig:
    kind: LabelerKind = field("tblite", doc=f"reference method: {', '.join(LABELER_KINDS)}")
    timeout: float = field(3600.0, doc="wall-clock limit per frame; the frame fails with reason timeout", unit="s", gt=0)
    retries: int = field(0, doc="extra attempts for frames that crashed, timed out or left no output", ge=0)
    threads: int = field(1, doc="OpenMP/BLAS threads per labeling process", ge=1)
    command: tuple[str, ...] | str = field((), doc="program argv (default pw.x / cp2k_shell; required for vasp, abacus)")
    mpi: tuple[str, ...] | str = field((), doc="launcher prefix for external programs, e.g. 'mpirun -np 4'")
    frames_per_task: int = field(1, doc="frames per labeling task of the workflow (one fan-out slice)", ge=1)
    tblite: TbliteConfig = field(default_factory=TbliteConfig, doc="settings for kind tblite")
    pyscf: PyscfConfig = field(default_factory=PyscfConfig, doc="settings for kind pyscf")
    espresso: EspressoConfig = field(default_factory=EspressoConfig, doc="settings for kind espresso")
    cp2k: Cp2kConfig = field(default_factory=Cp2kConfig, doc="settings for kind cp2k")
    vasp: VaspConfig = field(default_factory=VaspConfig, doc="settings for kind vasp")
    abacus: AbacusConfig = field(default_factory=AbacusConfig, doc="settings for kind abacus")
    ase: AseConfig = field(default_factory=AseConfig, doc="settings for kind ase")
    model: ModelLabelConfig = field(default_factory=ModelLabelConfig, doc="settings for kind model")

    def __post_init__(self) -> None:
        if self.kind not in LABELER_KINDS:
            raise ConfigError("kind", f"{self.kind!r} is not a labeler; valid kinds: {', '.join(LABELER_KINDS)}")
        object.__setattr__(self, "command", _argv(self.command, "command"))
        object.__setattr__(self, "mpi", _argv(self.mpi, "mpi"))
        for name, cls in _SECTIONS.items():
            if name != self.kind and getattr(self, name) != cls():
                raise ConfigError(name, f"settings for {name!r} are given but kind is {self.kind!r}; "
                                        f"set kind: {name} or remove the {name} section")
        if self.kind in ("vasp", "abacus") and not self.command:
            raise ConfigError("command", f"kind {self.kind!r} needs the command that runs it in the task "
                                         "directory, e.g. command: 'vasp_std' with mpi: 'mpirun -np 16'")
        if self.kind == "model" and self.model.checkpoint is None:
            raise ConfigError("model.checkpoint", "kind 'model' needs the teacher checkpoint path")
        if self.kind == "ase" and "." not in self.ase.calculator:
            raise ConfigError("ase.calculator", f"{self.ase.calculator!r} is not an import path; "
                                                "write module.Class, e.g. ase.calculators.emt.EMT")

    @property
    def settings(self) -> Any:
        """The sub-section of the selected kind."""
        return getattr(self, self.kind)

    def describe(self) -> str:
        """One line for ``dpa3-al validate``: the kind and, for ``ase``, that the config names code."""
        if self.kind == "ase":
            return (f"ase calculator {self.ase.calculator} (Python code this config imports and runs in the "
                    "labeling worker; only ASE calculator classes are accepted: run configs you trust)")
        if self.kind == "model":
            return f"model (teacher {self.model.checkpoint})"
        return self.kind

    @property
    def argv(self) -> tuple[str, ...]:
        """The program argv: ``command`` or the kind's default, without the mpi prefix."""
        return self.command or DEFAULT_COMMANDS.get(self.kind, ())


def _argv(value: tuple[str, ...] | list[str] | str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as err:
            raise ConfigError(key, f"cannot split {value!r} into arguments ({err}); check the quotes") from None
    return tuple(str(v) for v in value)


def section_dict(config: LabelConfig) -> dict[str, Any]:
    """The settings that decide the labels (kind + its section), as plain data for hashing."""
    from dpa3_al.common.typed_config import to_dict

    return {"kind": config.kind, "settings": to_dict(config.settings)}
