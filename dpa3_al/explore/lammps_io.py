"""LAMMPS files of the ``lammps`` exploration engine: input rendering and the readers (pure, no LAMMPS).

Units are LAMMPS ``metal``: Å, eV, ps (our timestep and relaxation times in fs are divided by
1000), K, bar. What the engine writes and reads in a task folder:

- ``conf.lmp``: the starting structure (``atom_style atomic``, types 1..T in the model's type map
  order, masses of those elements), written by ASE with ``specorder`` = the type map;
- ``in.lammps``: a template with ``${KEY}`` placeholders filled in (:func:`render`); the built-in
  template (:data:`BUILTIN_TEMPLATE`) uses the same placeholders as a user's;
- ``traj.dump``: ``dump custom`` of ``id type x y z fx fy fz`` every ``traj_freq`` steps, sorted by
  id, 15 significant digits (read by :func:`read_dump`);
- ``model_devi.out``: written by deepmd-kit's ``pair_style deepmd ... out_freq N out_file
  model_devi.out`` (read with :func:`dpa3_al.model.interop.deepmd_formats.read_model_devi_out`);
- ``log.lammps``: thermo rows (``step temp pe ...``, :func:`read_thermo`) and the ``ERROR`` line of a
  failed run (:func:`error_line`).

Placeholders (``${KEY}``; any other ``${name}`` is left for LAMMPS' own variables):

    DATA_FILE  conf.lmp            TEMP      K                   TIMESTEP  ps
    DEEPMD     pair_style+pair_coeff lines (committee, out_freq, model_devi.out)
    DUMP       dump+dump_modify lines (traj.dump)                 NSTEPS, TRAJ_FREQ, SEED
    TYPE_MAP   element names, type order                          PRESS  bar (NPT; else 0)
    MODELS     frozen model files, model 0 first                  TAU_T, TAU_P  ps
    ENSEMBLE   the fix lines of the task's ensemble (built-in)    FRICTION_DAMP ps (1 / friction)
    BOUNDARY   p or s (shrink-wrapped) per axis, from the structure's pbc
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

DATA_FILE = "conf.lmp"
INPUT_FILE = "in.lammps"
DUMP_FILE = "traj.dump"
LOG_FILE_LAMMPS = "log.lammps"
MODEL_DEVI_OUT = "model_devi.out"

BUILTIN_TEMPLATE = """\
# dpa3-al lammps exploration task (built-in template)
units           metal
boundary        ${BOUNDARY}
atom_style      atomic
atom_modify     map array
read_data       ${DATA_FILE}
neighbor        1.0 bin
${DEEPMD}
timestep        ${TIMESTEP}
thermo_style    custom step temp pe ke etotal press vol
thermo_modify   format float %.10g
thermo          ${TRAJ_FREQ}
${DUMP}
velocity        all create ${TEMP} ${SEED} dist gaussian mom yes rot no
${ENSEMBLE}
run             ${NSTEPS}
"""

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class LammpsTask:
    """What the input of one task needs (units: K, bar, fs as our config; converted when rendered)."""

    ensemble: str
    temperature: float
    pressure: float | None
    timestep_fs: float
    steps: int
    traj_freq: int
    seed: int
    tau_t_fs: float
    tau_p_fs: float
    friction: float  # 1/fs
    type_map: tuple[str, ...]
    models: tuple[str, ...]
    periodic: tuple[bool, bool, bool]


def lammps_seed(seed: int) -> int:
    """A LAMMPS random seed (1 <= s < 2^31 - 1; LAMMPS refuses 0) from our 32-bit task seed."""
    return int(seed) % 2147483646 + 1


def ensemble_lines(t: LammpsTask) -> str:
    """The fix lines of ``t.ensemble`` (nve, nvt-langevin, nvt-nhc, npt-iso, npt-full)."""
    tdamp, pdamp = t.tau_t_fs / 1000.0, t.tau_p_fs / 1000.0
    temp = f"temp {t.temperature:g} {t.temperature:g} {tdamp:g}"
    if t.ensemble == "nve":
        return "fix             dpa3 all nve"
    if t.ensemble == "nvt-langevin":
        damp = 1.0 / t.friction / 1000.0
        return (f"fix             dpa3 all nve\n"
                f"fix             dpa3t all langevin {t.temperature:g} {t.temperature:g} {damp:g} "
                f"{lammps_seed(t.seed + 1)} zero yes")
    if t.ensemble == "nvt-nhc":
        return f"fix             dpa3 all nvt {temp}"
    if t.pressure is None:
        raise ValueError(f"ensemble {t.ensemble} needs a pressure")
    press = f"{t.pressure:g} {t.pressure:g} {pdamp:g}"
    if t.ensemble == "npt-iso":
        return f"fix             dpa3 all npt {temp} iso {press}"
    if t.ensemble == "npt-full":
        return f"change_box      all triclinic\nfix             dpa3 all npt {temp} tri {press}"
    raise ValueError(f"unknown ensemble {t.ensemble!r}")


def placeholders(t: LammpsTask) -> dict[str, str]:
    """The values of the placeholders of a task (strings as they go into the input)."""
    deepmd = (f"pair_style      deepmd {' '.join(t.models)} out_freq {t.traj_freq} out_file {MODEL_DEVI_OUT}\n"
              f"pair_coeff      * * {' '.join(t.type_map)}")
    dump = (f"dump            dpa3 all custom {t.traj_freq} {DUMP_FILE} id type x y z fx fy fz\n"
            f"dump_modify     dpa3 sort id format float %.15g")
    return {"DATA_FILE": DATA_FILE, "DEEPMD": deepmd, "DUMP": dump, "TYPE_MAP": " ".join(t.type_map),
            "MODELS": " ".join(t.models), "ENSEMBLE": ensemble_lines(t), "TEMP": f"{t.temperature:g}",
            "PRESS": f"{t.pressure if t.pressure is not None else 0.0:g}", "TIMESTEP": f"{t.timestep_fs / 1000.0:g}",
            "NSTEPS": str(t.steps), "TRAJ_FREQ": str(t.traj_freq), "SEED": str(lammps_seed(t.seed)),
            "TAU_T": f"{t.tau_t_fs / 1000.0:g}", "TAU_P": f"{t.tau_p_fs / 1000.0:g}",
            "FRICTION_DAMP": f"{1.0 / t.friction / 1000.0:g}",
            "BOUNDARY": " ".join("p" if p else "s" for p in t.periodic)}


class TemplateError(ValueError):
    """A template that would not give the files the engine reads back."""


def render(template: str, t: LammpsTask, revisions: Mapping[str, object] | None = None) -> str:
    """``template`` with ``${KEY}`` replaced by the task's values and ``revisions`` (a revision wins
    over a built-in key of the same name); other ``${name}`` (LAMMPS variables) are left alone.

    Raises:
        TemplateError: the result would not write ``model_devi.out`` or ``traj.dump`` as the engine
            reads them (use ``${DEEPMD}`` and ``${DUMP}``), or runs no steps (``run ${NSTEPS}``).
    """
    values = {**placeholders(t), **{k: _text(v) for k, v in (revisions or {}).items()}}
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    missing = [what for what, needle in (("${DEEPMD}", f"out_file {MODEL_DEVI_OUT}"),
                                         ("${DUMP}", f"{DUMP_FILE} id type x y z fx fy fz"))
               if needle not in text]
    if missing:
        raise TemplateError(f"the input lacks {' and '.join(missing)}: the engine reads the committee's deviations "
                            f"from {MODEL_DEVI_OUT} and the frames from {DUMP_FILE}; put the placeholder(s) on "
                            "their own line in the template")
    if not re.search(r"^\s*run\s", text, flags=re.M):
        raise TemplateError("the input has no `run` command; add e.g. `run ${NSTEPS}`")
    return text


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def write_data(atoms: Atoms, path: Path, type_map: Sequence[str]):
    """Write ``atoms`` as a LAMMPS data file (types in ``type_map`` order); returns ASE's ``Prism``
    (the rotation between our frame and LAMMPS' lower-triangular one)."""
    import ase.io
    from ase.calculators.lammps import Prism

    unknown = sorted(set(atoms.get_chemical_symbols()) - set(type_map))
    if unknown:
        raise ValueError(f"elements {unknown} are not in the model's type map {list(type_map)}")
    ase.io.write(path, atoms, format="lammps-data", specorder=list(type_map), masses=True, units="metal",
                 atom_style="atomic")
    return Prism(atoms.cell.array, pbc=atoms.pbc)


@dataclass
class DumpFrame:
    """One frame of ``traj.dump``: atom types (1-based), positions and forces (N, 3) sorted by id,
    cell rows (3, 3) in LAMMPS' frame, and the box origin."""

    step: int
    types: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    cell: np.ndarray
    origin: np.ndarray


def _box(lines: list[str], header: str) -> tuple[np.ndarray, np.ndarray]:
    """(cell rows, origin) from the three BOX BOUNDS lines (orthogonal or ``xy xz yz``)."""
    vals = np.array([[float(x) for x in line.split()] for line in lines])
    if "xy" in header.split():
        (xlob, xhib, xy), (ylob, yhib, xz), (zlo, zhi, yz) = vals
        xlo = xlob - min(0.0, xy, xz, xy + xz)
        xhi = xhib - max(0.0, xy, xz, xy + xz)
        ylo, yhi = ylob - min(0.0, yz), yhib - max(0.0, yz)
    else:
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = vals[:, :2]
        xy = xz = yz = 0.0
    cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
    return cell, np.array([xlo, ylo, zlo])


def read_dump(path: Path) -> list[DumpFrame]:
    """The whole frames of a ``dump custom`` file with columns id type x y z fx fy fz (any order);
    a truncated last frame (a killed or failed run) is ignored."""
    frames: list[DumpFrame] = []
    if not Path(path).is_file():
        return frames
    lines = Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        try:
            frame, i = _dump_frame(lines, i)
        except (IndexError, ValueError, KeyError):
            break
        frames.append(frame)
    return frames


def _dump_frame(lines: list[str], i: int) -> tuple[DumpFrame, int]:
    if lines[i].strip() != "ITEM: TIMESTEP":
        raise ValueError(f"line {i + 1}: expected 'ITEM: TIMESTEP'")
    step = int(lines[i + 1])
    natoms = int(lines[i + 3])
    cell, origin = _box(lines[i + 5:i + 8], lines[i + 4])
    columns = lines[i + 8].split()[2:]
    rows = lines[i + 9:i + 9 + natoms]
    if len(rows) != natoms:
        raise ValueError("truncated frame")
    data = np.array([[float(x) for x in row.split()] for row in rows]).reshape(natoms, len(columns))
    col = {name: k for k, name in enumerate(columns)}
    order = np.argsort(data[:, col["id"]], kind="stable")
    data = data[order]
    pos = data[:, [col["x"], col["y"], col["z"]]]
    forces = data[:, [col["fx"], col["fy"], col["fz"]]]
    return DumpFrame(step, data[:, col["type"]].astype(int), pos, forces, cell, origin), i + 9 + natoms


def dump_atoms(frame: DumpFrame, type_map: Sequence[str], prism, pbc) -> Atoms:
    """The frame as ASE Atoms in our (the starting structure's) frame: symbols from the type map,
    cell and positions rotated back from LAMMPS' lower-triangular frame."""
    cell = prism.vector_to_ase(frame.cell)
    pos = prism.vector_to_ase(frame.positions - frame.origin)
    return Atoms(symbols=[type_map[t - 1] for t in frame.types], positions=pos, cell=cell, pbc=pbc)


def read_thermo(path: Path) -> dict[int, dict[str, float]]:
    """Thermo rows of ``log.lammps`` by step: ``{step: {column: value}}`` (LAMMPS' column names,
    e.g. Temp, PotEng); rows of every ``run`` block; unreadable lines end a block."""
    out: dict[int, dict[str, float]] = {}
    if not Path(path).is_file():
        return out
    header: list[str] | None = None
    for line in Path(path).read_text(errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
            continue
        if header is None:
            continue
        try:
            values = [float(w) for w in words]
        except ValueError:
            header = None
            continue
        if len(values) == len(header):
            out[int(values[0])] = dict(zip(header, values))
        else:
            header = None
    return out


def error_line(*texts: str) -> str | None:
    """The first ``ERROR`` line LAMMPS printed (log or output), without the source-file suffix."""
    for text in texts:
        for line in text.splitlines():
            if line.startswith("ERROR") or " ERROR" in line[:20]:
                return re.sub(r"\s*\(src/.*?\)\s*$", "", line.strip())
    return None
