"""Files in deepmd-kit's formats for dpgen2/deepmd-kit users' scripts: ``model_devi.out`` beside
``model_devi.csv`` in every MD task (the header and fixed widths of ``dp model-devi`` and the
LAMMPS plugin), read back by numpy exactly as dpgen2 reads it."""

from __future__ import annotations

import numpy as np
from ase.calculators.lj import LennardJones

from dpa3_al.common.typed_config import from_dict
from dpa3_al.explore import AseCommittee, make_tasks, run_task
from dpa3_al.explore.config import ExploreConfig
from dpa3_al.explore.deviation import DEVI_KEYS, DeviCsvWriter, read_model_devi

HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f"
          "         min_devi_f         avg_devi_f             devi_e")


def _task():
    group = {"name": "ar", "configurations": [{"lattice": {"symbols": "Ar", "crystal": "fcc", "a": 5.26,
                                                           "cubic": True}, "supercell": [2, 2, 2]}],
             "temps": [60.0], "ensemble": "nvt-langevin", "timestep": 5.0, "steps": 30, "traj_freq": 10}
    cfg = from_dict(ExploreConfig, {"stages": [{"task_groups": [group]}],
                                    "stop": {"max_devi_f": None, "min_dist_ratio": None, "lost_distance": None}})
    return make_tasks(cfg.stages[0], cfg.stop)[0]


def test_md_task_writes_model_devi_out_in_deepmd_kit_format(tmp_path):
    committee = AseCommittee([LennardJones(sigma=3.4 * (1 + 0.01 * k), epsilon=0.0104, rc=6.0, smooth=True)
                              for k in range(3)], drive=0)
    assert run_task(_task(), committee, tmp_path).status == "finished"
    lines = (tmp_path / "model_devi.out").read_text().splitlines()
    assert lines[0] == HEADER
    assert all(len(line) == 12 + 7 * 19 for line in lines[1:]) and len(lines) == 1 + 4     # steps 0, 10, 20, 30
    out = np.loadtxt(tmp_path / "model_devi.out")                 # how dpgen2 reads it: columns by position
    steps, devi = read_model_devi(tmp_path / "model_devi.csv")
    assert np.array_equal(out[:, 0], steps) and steps.tolist() == [0, 10, 20, 30]
    assert np.allclose(out[:, 1:], devi, rtol=6e-7, atol=0) and (devi[:, 3] > 0).all()   # %19.6e: 7 digits


def test_a_restarted_task_starts_model_devi_out_again(tmp_path):
    devi = {k: 0.5 for k in DEVI_KEYS}
    writer = DeviCsvWriter(tmp_path / "model_devi.csv")
    writer.write(0, devi)
    writer.close()
    writer = DeviCsvWriter(tmp_path / "model_devi.csv")          # resumed: appends to both
    writer.write(10, {**devi, "devi_e": float("nan")})
    writer.close()
    assert np.loadtxt(tmp_path / "model_devi.out")[:, 0].tolist() == [0, 10]
    assert np.isnan(np.loadtxt(tmp_path / "model_devi.out")[1, 7])
    (tmp_path / "model_devi.csv").unlink()                         # an interrupted attempt is reset (md._reset)
    writer = DeviCsvWriter(tmp_path / "model_devi.csv")
    writer.write(0, devi)
    writer.close()
    lines = (tmp_path / "model_devi.out").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 2
