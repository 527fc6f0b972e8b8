"""Configuration of the exploration step (the ``explore:`` section of a run config).

Units: temperatures K, pressures bar, timestep fs, friction 1/fs, relaxation times fs,
distances Å, deviations eV/Å.

Shape of the section (YAML)::

    explore:
      drive: 0                     # model 0 drives the MD; "mean" = committee mean forces
      stop: {max_devi_f: 2.0, min_dist_ratio: 0.5, lost_distance: 8.0}
      stages:
        - max_iter: 5
          conv_accuracy: 0.9
          task_groups:
            - name: bulk
              configurations:
                - file: water.extxyz
                - lattice: {symbols: Cu, crystal: fcc, a: 3.61, cubic: true}
                  supercell: [3, 3, 3]
                  perturb: {copies: 4, cell: 0.03, atom: 0.1}
              n_sample: 4
              temps: [300, 600]
              ensemble: nvt-langevin
              timestep: 0.5
              steps: 2000
              traj_freq: 20
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from dpa3_al.common.typed_config import ConfigError, field

_INDEX_RE = re.compile(r"\s*(-?\d+)\s*|\s*(-?\d+)?\s*:\s*(-?\d+)?\s*(?::\s*(-?\d+)?\s*)?")


def check_index(index: str) -> str:
    """``index`` if it is ASE index syntax (an integer or ``start:stop[:step]``); else ConfigError."""
    match = _INDEX_RE.fullmatch(index)
    if match is None:
        raise ConfigError("index", f"{index!r} is not a frame index; use ASE index syntax: ':' (all), "
                                   "'-1' (last), '3' (the fourth), '0:10:2' (start:stop:step)")
    if match.group(4) is not None and int(match.group(4)) == 0:
        raise ConfigError("index", f"{index!r}: the step of a slice cannot be 0")
    return index


Ensemble = Literal["nve", "nvt-langevin", "nvt-nhc", "npt-iso", "npt-full"]
NPT_ENSEMBLES = ("npt-iso", "npt-full")


@dataclass(frozen=True)
class LatticeSpec:
    """A crystal built by ``ase.build.bulk`` (one unit cell; see ``supercell``)."""

    symbols: str = field("Cu", doc="chemical symbol(s) of the basis, e.g. 'Cu' or 'NaCl'")
    crystal: str | None = field(None, doc="structure name as ase.build.bulk: fcc, bcc, hcp, diamond, rocksalt, ...; "
                                "null = the element's reference structure")
    a: float | None = field(None, doc="lattice constant a; null = ASE's reference value", unit="Å", gt=0)
    c: float | None = field(None, doc="lattice constant c (hcp, wurtzite)", unit="Å", gt=0)
    cubic: bool = field(False, doc="conventional cubic cell instead of the primitive one")
    orthorhombic: bool = field(False, doc="orthorhombic cell (e.g. for hcp)")


@dataclass(frozen=True)
class PerturbSpec:
    """Random copies of a structure: cell strain and atom displacements (seeded)."""

    copies: int = field(1, doc="perturbed copies made of each structure", ge=1)
    cell: float = field(0.0, doc="maximum relative strain of each cell component (0.03 = 3%)", ge=0, lt=1)
    atom: float = field(0.0, doc="maximum displacement of each atom along each axis", unit="Å", ge=0)
    keep_original: bool = field(False, doc="also keep the unperturbed structure")


@dataclass(frozen=True)
class SubstituteSpec:
    """Random substitution of one element by another (alloys, doping; seeded)."""

    element: str = field("Cu", doc="element whose atoms are replaced")
    by: str = field("Au", doc="element put in their place")
    fraction: float = field(0.5, doc="fraction of the `element` atoms replaced (rounded to an integer count)",
                            ge=0, le=1)
    copies: int = field(1, doc="random substitution patterns made of each structure", ge=1)


@dataclass(frozen=True)
class ConfigurationSpec:
    """Starting structures: a file, or a generated lattice, then supercell/substitution/perturbation."""

    file: Path | None = field(None, doc="structure file (extxyz, POSCAR, CIF, anything ASE or pymatgen reads) "
                              "or a deepmd npy system directory; relative to the config file")
    index: str | int = field(":", doc="frames of the file to use, ASE index syntax (':' all, -1 last, '0:10:2')")
    format: str | None = field(None, doc="file format for ASE (or 'deepmd/npy'); null = guess from the name")
    lattice: LatticeSpec | None = field(None, doc="generate a crystal instead of reading a file")
    supercell: tuple[int, int, int] = field((1, 1, 1), doc="replication along the three cell vectors")
    substitute: list[SubstituteSpec] = field(default_factory=list, doc="substitutions applied in order")
    perturb: PerturbSpec | None = field(None, doc="random perturbed copies (applied last)")

    def __post_init__(self) -> None:
        if (self.file is None) == (self.lattice is None):
            raise ConfigError("", "give exactly one of `file` or `lattice` for a configuration source")
        if any(n < 1 for n in self.supercell):
            raise ConfigError("supercell", f"{list(self.supercell)} must be positive integers, e.g. [2, 2, 2]")
        object.__setattr__(self, "index", check_index(str(self.index)))


@dataclass(frozen=True)
class TaskGroupConfig:
    """A grid of MD tasks: configurations x temperatures x pressures, one ensemble."""

    name: str | None = field(None, doc="group name used in reports and for balancing; default 'group-<i>'")
    configurations: list[ConfigurationSpec] = field(default_factory=list, doc="sources of starting structures")
    n_sample: int | None = field(None, doc="draw this many configurations per iteration (seeded); null = all", ge=1)
    temps: list[float] = field(default_factory=lambda: [300.0], doc="temperatures", unit="K")
    press: list[float] | None = field(None, doc="pressures for npt-*; null for nve/nvt", unit="bar")
    ensemble: Ensemble = field("nvt-langevin", doc="nve, nvt-langevin, nvt-nhc (Nose-Hoover chain), "
                               "npt-iso (MTK, isotropic cell), npt-full (MTK, full cell)")
    timestep: float = field(1.0, doc="MD timestep", unit="fs", gt=0)
    steps: int = field(1000, doc="MD steps per task", ge=0)
    traj_freq: int = field(10, doc="record a frame (and its committee deviation) every this many steps", ge=1)
    seed: int = field(0, doc="seed of the configuration sampling, initial velocities and Langevin noise", ge=0)
    friction: float = field(0.01, doc="Langevin friction", unit="1/fs", gt=0)
    tau_t: float = field(100.0, doc="thermostat relaxation time (nvt-nhc, npt-*)", unit="fs", gt=0)
    tau_p: float = field(1000.0, doc="barostat relaxation time (npt-*)", unit="fs", gt=0)
    template: Path | None = field(None, doc="engine lammps: a LAMMPS input template with ${KEY} placeholders "
                                  "(${DEEPMD}, ${DUMP}, ${TEMP}, ${NSTEPS}, ... see docs/exploration.md) instead of "
                                  "the built-in input; relative to the config file")
    revisions: dict[str, list[Union[int, float, str]]] = field(
        default_factory=dict, doc="engine lammps, with `template`: extra placeholders {KEY: [value]} put into the "
        "template as ${KEY} (one value per key for now)")

    def __post_init__(self) -> None:
        if not self.configurations:
            raise ConfigError("configurations", "no starting structures; add e.g. `- file: start.extxyz`")
        if not self.temps or any(t <= 0 for t in self.temps):
            raise ConfigError("temps", f"{self.temps} must be a non-empty list of temperatures > 0 K")
        npt = self.ensemble in NPT_ENSEMBLES
        if npt and not self.press:
            raise ConfigError("press", f"ensemble {self.ensemble!r} needs pressures, e.g. `press: [1.0]` (bar)")
        if not npt and self.press is not None:
            raise ConfigError("press", f"pressures {self.press} are only used by npt-iso/npt-full; "
                              f"remove `press` or change ensemble {self.ensemble!r}")
        for key, values in self.revisions.items():
            if len(values) != 1:
                raise ConfigError(f"revisions.{key}", f"{values}: give exactly one value per key, e.g. "
                                  f"`{key}: [{values[0] if values else 1}]`; a grid of revision values (a task per "
                                  "combination) is not supported yet: make one task group per value")
        if self.revisions and self.template is None:
            raise ConfigError("revisions", "revisions are placeholders of a LAMMPS template; add `template: in.lmp` "
                              "or remove `revisions`")

    def pressures(self) -> list[float | None]:
        """The pressure axis of the grid (bar); ``[None]`` for constant-volume ensembles."""
        return list(self.press) if self.press else [None]


@dataclass(frozen=True)
class StageConfig:
    """A stage: task groups explored every iteration until the stage converges."""

    task_groups: list[TaskGroupConfig] = field(default_factory=list, doc="MD task groups of this stage")
    conv_accuracy: float = field(0.9, doc="converged when the accurate ratio reaches this", gt=0, le=1)
    max_iter: int = field(10, doc="most iterations in this stage; then the run moves on (or stops, see fatal_at_max)",
                          ge=1)
    fatal_at_max: bool = field(False, doc="stop the run when the stage reaches max_iter unconverged")
    level_n_checked: int = field(3, doc="adaptive mode: converged when the lower level moved less than "
                                 "level_rtol over this many iterations", ge=2)
    level_rtol: float = field(0.05, doc="adaptive mode: relative spread (max-min)/max of the lower level "
                              "counted as 'not moving'", ge=0)
    engine: Literal["ase", "lammps"] = field("ase", doc="MD engine of this stage's tasks: ase (our committee in "
                                             "ASE) or lammps (the exported, frozen committee in LAMMPS' "
                                             "pair_style deepmd; see explore.lammps)")

    def __post_init__(self) -> None:
        if not self.task_groups:
            raise ConfigError("task_groups", "a stage needs at least one task group")
        for g, group in enumerate(self.task_groups):
            if group.template is not None and self.engine != "lammps":
                raise ConfigError(f"task_groups[{g}].template", f"{str(group.template)!r} is a LAMMPS input "
                                  "template; set `engine: lammps` on this stage or remove `template`")
        names = [g.name for g in self.task_groups if g.name is not None]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError("task_groups", f"group names must be unique within a stage; repeated: {dupes}")

    def group_name(self, index: int) -> str:
        """Name of task group ``index`` (its ``name`` or ``group-<index>``)."""
        return self.task_groups[index].name or f"group-{index}"


@dataclass(frozen=True)
class StopConfig:
    """When an MD task stops early (the frames after the stop are not recorded)."""

    max_devi_f: float | None = field(None, doc="stop when max_devi_f exceeds this (checked on recorded frames, "
                                     "every step with drive: mean); null = never; e.g. 3x the select f_hi",
                                     unit="eV/Å", gt=0)
    min_dist_ratio: float | None = field(0.5, doc="stop when two atoms are closer than this fraction of the sum "
                                         "of their covalent radii (recorded frames); null = never", gt=0, lt=2)
    lost_distance: float | None = field(8.0, doc="an atom with no neighbour within this distance is lost "
                                        "(evaporated); null = never", unit="Å", gt=0)


@dataclass(frozen=True)
class LammpsConfig:
    """Programs and resources of the ``lammps`` engine (``bash scripts/setup-deepmd.sh --lammps`` makes
    ``.venv-deepmd`` with all three programs). Relative paths are tried against the config file's
    folder, then the current folder; a bare name is looked up on PATH."""

    lmp: str = field(".venv-deepmd/bin/lmp", doc="LAMMPS with deepmd-kit's plugin (pair_style deepmd)")
    dp: str = field(".venv-deepmd/bin/dp", doc="deepmd-kit's dp, to freeze the exported committee "
                    "(dp --pt freeze)")
    mpi_ranks: int = field(1, doc="MPI ranks of one LAMMPS run (domain decomposition); > 1 uses `mpirun`", ge=1)
    mpirun: str | None = field(None, doc="mpirun program; null = the mpirun beside `lmp`")
    threads: int | None = field(None, doc="OpenMP/torch threads per rank (OMP_NUM_THREADS, "
                                "DP_INTRA_OP_PARALLELISM_THREADS); null = the environment's", ge=1)
    timeout: float | None = field(None, doc="wall-clock limit of one LAMMPS run; the task stops early "
                                  "(reason error) past it; null = none", unit="s", gt=0)
    model_cache: Path | None = field(None, doc="folder of exported + frozen models (one per model file, by "
                                     "content hash, reused); null = `frozen-models/` beside the task folders")


@dataclass(frozen=True)
class ExploreConfig:
    """The exploration section: stages of MD task groups and how MD tasks stop early."""

    stages: list[StageConfig] = field(default_factory=list, doc="stages, explored in order")
    drive: Union[int, Literal["mean"]] = field(0, doc="which model drives the MD: a model index (the committee is "
                                               "evaluated on recorded frames only, cheap) or 'mean' (all models "
                                               "every step, mean forces)")
    stop: StopConfig = field(default_factory=StopConfig, doc="early-stop criteria of MD tasks")
    lammps: LammpsConfig = field(default_factory=LammpsConfig, doc="programs of the lammps engine "
                                 "(stages with `engine: lammps`)")

    def __post_init__(self) -> None:
        if isinstance(self.drive, int) and self.drive < 0:
            raise ConfigError("drive", f"{self.drive} must be a model index >= 0 or 'mean'")
        lammps = [s for s, stage in enumerate(self.stages) if stage.engine == "lammps"]
        if lammps and self.drive != 0:
            raise ConfigError("drive", f"{self.drive!r}: stage(s) {lammps} use engine lammps, where model 0 always "
                              "drives the MD (pair_style deepmd); use `drive: 0` or engine ase")
