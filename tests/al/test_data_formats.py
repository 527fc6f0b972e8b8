"""deepmd-kit's data layouts read as deepmd-kit reads them: npy/mixed, raw and hdf5 written by
dpdata from the water data, compared with the npy originals exactly; refusals of what the
reader does not understand; ``dpa3-al test`` and ``data import`` on mixed data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dpdata
import numpy as np
import pytest
import torch

from dpa3_al.cli import main
from dpa3_al.common.errors import InputError
from dpa3_al.dataset import LabeledDataset, read_labeled
from dpa3_al.model import ModelConfig, build_model, save_model
from dpa3_al.model.train.data import DataSystem, load_systems, read_npy_system

WATER = Path(__file__).parents[1] / "data" / "water"
N = 6   # frames of data_3 used (192 atoms each)


@pytest.fixture(scope="module")
def water() -> dpdata.LabeledSystem:
    return dpdata.LabeledSystem(str(WATER / "data_3"), fmt="deepmd/npy").sub_system(range(N))


@pytest.fixture(scope="module")
def original() -> DataSystem:
    return read_npy_system(WATER / "data_3").subset(np.arange(N))


def _with_fluorine(system: dpdata.LabeledSystem, atom: int = 5) -> dpdata.LabeledSystem:
    """The same frames with atom ``atom`` (an O) relabeled F: a second composition of 192 atoms."""
    other = system.sub_system(range(3)).copy()
    types = other.data["atom_types"].copy()
    assert types[atom] == 0
    types[atom] = 2
    other.data.update(atom_names=["O", "H", "F"], atom_types=types, atom_numbs=[63, 128, 1])
    return other


def _assert_same(read: DataSystem, ref: DataSystem, frames=slice(None)) -> None:
    assert read.symbols() == ref.symbols()
    for key in ("coords", "cells", "energy", "forces"):
        assert np.array_equal(getattr(read, key), getattr(ref, key)[frames]), key
    assert not read.has_virial.any()


def test_mixed_is_split_per_composition_exactly_as_stored(tmp_path, water, original):
    multi = dpdata.MultiSystems(water, _with_fluorine(water), type_map=["O", "H", "F"])
    multi.to_deepmd_npy_mixed(str(tmp_path / "mixed"), prec=np.float64)
    (system_dir,) = [p.parent for p in (tmp_path / "mixed").rglob("type.raw")]
    assert set(np.loadtxt(system_dir / "type.raw", dtype=int)) == {0}      # the placeholder types of mixed data
    systems = load_systems([tmp_path / "mixed"])
    assert [s.n_frames for s in systems] == [N, 3]
    _assert_same(systems[0], original)
    fluorine = systems[1]
    expected = original.symbols()
    expected[5] = "F"
    assert fluorine.symbols() == expected and fluorine.elements == ["O", "H", "F"]
    assert np.array_equal(fluorine.coords, original.coords[:3])
    assert np.array_equal(fluorine.model_types(["H", "O", "F"])[:6], [1, 1, 1, 1, 1, 2])


def test_mixed_virtual_atoms_are_removed(tmp_path, water, original):
    dpdata.MultiSystems(water, type_map=["O", "H"]).to_deepmd_npy_mixed(str(tmp_path / "pad"), prec=np.float64,
                                                                     atom_numb_pad=200)
    (system_dir,) = [p.parent for p in (tmp_path / "pad").rglob("type.raw")]
    real = np.load(system_dir / "set.000" / "real_atom_types.npy")
    assert real.shape == (N, 200) and (real == -1).sum(axis=1).tolist() == [8] * N
    (read,) = load_systems([tmp_path / "pad"])
    _assert_same(read, original)


def test_raw_is_recognised_without_a_format(tmp_path, water, original):
    water.to("deepmd/raw", str(tmp_path / "raw"))
    assert not list((tmp_path / "raw").glob("set.*")) and (tmp_path / "raw" / "coord.raw").is_file()
    (read,) = load_systems([tmp_path / "raw"])
    _assert_same(read, original)
    frames = read_labeled(tmp_path / "raw")          # the dataset's import reads it too, without --fmt
    assert len(frames) == N and frames[0].get_chemical_formula() == "H128O64"


def test_hdf5_is_recognised_without_a_format(tmp_path, water, original):
    water.to("deepmd/hdf5", str(tmp_path / "one.h5"), comp_prec=np.float64)
    (read,) = load_systems([tmp_path / "one.h5"])
    _assert_same(read, original)
    multi = dpdata.MultiSystems(water, _with_fluorine(water), type_map=["O", "H", "F"])
    multi.to("deepmd/hdf5", str(tmp_path / "multi.hdf5"), comp_prec=np.float64)
    systems = load_systems([tmp_path / "multi.hdf5"])
    assert sorted(s.n_frames for s in systems) == [3, N]
    group = next(s.name for s in systems if s.n_frames == N).split("#", 1)[1]
    (picked,) = load_systems([f"{tmp_path / 'multi.hdf5'}#{group}"])     # deepmd-kit's file.h5#/group
    _assert_same(picked, original)
    multi.to("deepmd/hdf5/mixed", str(tmp_path / "mixed.h5"), comp_prec=np.float64)
    split = load_systems([tmp_path / "mixed.h5"])                         # mixed types inside HDF5 too
    assert [s.n_frames for s in split] == [N, 3]
    _assert_same(split[0], original)


# ---------------------------------------------------------------------------- refusals


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(WATER / "data_3", tmp_path / "sys"))


def test_mixed_without_type_map_is_refused(tmp_path, water):
    dpdata.MultiSystems(water, type_map=["O", "H"]).to_deepmd_npy_mixed(str(tmp_path / "m"), prec=np.float64)
    (system_dir,) = [p.parent for p in (tmp_path / "m").rglob("type.raw")]
    (system_dir / "type_map.raw").unlink()
    with pytest.raises(InputError, match="real_atom_types.npy.*without type_map.raw.*add it"):
        load_systems([tmp_path / "m"])


@pytest.mark.parametrize("name", ["fparam", "aparam", "spin"])
def test_model_inputs_in_a_set_are_refused(tmp_path, name):
    system = _copy(tmp_path)
    np.save(system / "set.000" / f"{name}.npy", np.zeros((80, 1)))
    with pytest.raises(InputError, match=rf"{name}\.npy: .*cannot train on or evaluate"):
        load_systems([system])


def test_mismatched_frame_counts_are_refused(tmp_path):
    system = _copy(tmp_path)
    np.save(system / "set.000" / "energy.npy", np.zeros(79))
    with pytest.raises(InputError, match=r"energy\.npy: shape \(79,\) does not fit 80 frames of 192 atoms"):
        load_systems([system])


def test_mixed_and_plain_sets_in_one_system_are_refused(tmp_path):
    system = _copy(tmp_path)
    shutil.copytree(system / "set.000", system / "set.001")
    np.save(system / "set.001" / "real_atom_types.npy", np.zeros((80, 192), dtype=int))
    with pytest.raises(InputError, match="some sets have real_atom_types.npy"):
        load_systems([system])


def test_mixed_types_outside_the_type_map_are_refused(tmp_path):
    system = _copy(tmp_path)
    np.save(system / "set.000" / "real_atom_types.npy", np.full((80, 192), 2))
    with pytest.raises(InputError, match=r"holds type 2, outside -1 .*\.\. 1"):
        load_systems([system])


def test_structures_without_labels_are_read_only_when_asked(tmp_path, original):
    from dpa3_al.model.train.data import read_deepmd_system

    system = _copy(tmp_path)
    (system / "set.000" / "energy.npy").unlink()
    (system / "set.000" / "force.npy").unlink()
    with pytest.raises(InputError, match=r"energy\.npy: missing"):
        load_systems([system])                                   # training data must carry labels
    (structures,) = read_deepmd_system(system, labels=False)     # starting structures need not
    frames = structures.to_atoms(labels=False)
    assert len(frames) == 80 and frames[0].calc is None
    assert np.array_equal(frames[3].positions, original.coords[3]) and frames[3].get_chemical_formula() == "H128O64"


def test_type_raw_without_frames_names_both_layouts(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "type.raw").write_text("0\n1\n")
    with pytest.raises(InputError, match=r"no set\.\* folder \(deepmd/npy\) and no coord\.raw \(deepmd/raw\)"):
        load_systems([tmp_path / "s"])


# ---------------------------------------------------------------------------- the verbs


@pytest.fixture(scope="module")
def mixed_water(tmp_path_factory, water) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    dpdata.MultiSystems(water, _with_fluorine(water), type_map=["O", "H", "F"]).to_deepmd_npy_mixed(
        str(root / "data"), prec=np.float64)
    return root / "data"


def test_dpa3_al_test_on_mixed_gives_the_npy_errors_and_dp_test_detail_files(tmp_path, water, mixed_water):
    water.to("deepmd/npy", str(tmp_path / "npy"))
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    save_model(build_model(ModelConfig.tiny(type_map=["O", "H", "F"]), seed=1), model)
    out = {}
    for name, data in (("npy", tmp_path / "npy"), ("mixed", mixed_water)):
        assert main(["test", str(model), str(data), "--plot", str(tmp_path / f"{name}.png"), "--json",
                     str(tmp_path / f"{name}.json"), "-d", str(tmp_path / name / "detail")]) == 0
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())["systems"]
    assert len(out["npy"]) == 1 and len(out["mixed"]) == 2
    npy, mixed = out["npy"][0], out["mixed"][0]
    assert mixed["frames"] == npy["frames"] == N
    for key in ("e", "f"):
        assert mixed["rmse"][key] == pytest.approx(npy["rmse"][key], rel=1e-12, abs=0)
    assert out["mixed"][1]["rmse"]["e"] != pytest.approx(npy["rmse"]["e"], rel=1e-6)   # F changes the energy
    e_out = (tmp_path / "npy" / "detail.e.out").read_text().splitlines()
    assert e_out[0] == f"# {tmp_path / 'npy'}: data_e pred_e" and len(e_out) == 1 + N
    e = np.loadtxt(tmp_path / "npy" / "detail.e.out")
    assert np.array_equal(e[:, 0], water["energies"].astype(np.float64))
    assert np.allclose(np.loadtxt(tmp_path / "npy" / "detail.e_peratom.out"), e / 192, rtol=1e-14)
    f = np.loadtxt(tmp_path / "npy" / "detail.f.out")
    assert f.shape == (N * 192, 6) and np.array_equal(f[:, :3], water["forces"].reshape(-1, 3).astype(np.float64))
    assert np.sqrt(np.mean((f[:, 3:] - f[:, :3]) ** 2)) == pytest.approx(npy["rmse"]["f"], rel=1e-9)
    assert not (tmp_path / "npy" / "detail.v.out").exists()           # no virial labels: no virial file
    headers = [ln for ln in (tmp_path / "mixed" / "detail.e.out").read_text().splitlines() if ln.startswith("#")]
    assert len(headers) == 2                                          # one block per composition, as dp test appends


def test_detail_files_carry_the_virial_as_dp_test_writes_it(tmp_path):
    rng = np.random.default_rng(4)
    system = tmp_path / "cells"
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0\n1\n1\n0\n1\n1\n")
    (system / "type_map.raw").write_text("O\nH\n")
    frames = 3
    coords = rng.uniform(0, 4, (frames, 18))
    labels = {"coord": coords, "box": np.tile(4.5 * np.eye(3).reshape(9), (frames, 1)),
              "energy": rng.normal(size=frames), "force": rng.normal(size=(frames, 18)),
              "virial": rng.normal(size=(frames, 9))}
    for name, array in labels.items():
        np.save(system / "set.000" / f"{name}.npy", array)
    model = tmp_path / "model.pt"
    save_model(build_model(ModelConfig.tiny(type_map=["O", "H"]), seed=2), model)
    assert main(["test", str(model), str(system), "--plot", str(tmp_path / "p.png"), "-d",
                 str(tmp_path / "out" / "detail")]) == 0
    v = np.loadtxt(tmp_path / "out" / "detail.v.out")
    assert v.shape == (frames, 18) and np.array_equal(v[:, :9], labels["virial"])
    assert np.allclose(np.loadtxt(tmp_path / "out" / "detail.v_peratom.out"), v / 6, rtol=1e-14)
    header = (tmp_path / "out" / "detail.v.out").read_text().splitlines()[0]
    assert header.endswith(": data_vxx data_vxy data_vxz data_vyx data_vyy data_vyz data_vzx data_vzy data_vzz "
                           "pred_vxx pred_vxy pred_vxz pred_vyx pred_vyy pred_vyz pred_vzx pred_vzy pred_vzz")
    assert not np.allclose(v[:, 9:], 0)


def test_data_import_of_mixed_keeps_the_composition(tmp_path, mixed_water):
    assert main(["data", "import", str(mixed_water), "--to", str(tmp_path / "ds")]) == 0
    systems = LabeledDataset(tmp_path / "ds").summary().systems
    assert systems == {"H128FO63-novirial": 3, "H128O64-novirial": N}     # not "O192", as before


def test_exploration_starts_from_mixed_data_with_each_frames_composition(mixed_water, original):
    """Starting structures read through the same reader (dpdata made mixed data one composition)."""
    from dpa3_al.explore.configurations import read_structures

    frames = read_structures(mixed_water, ":")
    assert len(frames) == N + 3
    assert frames[0].get_chemical_symbols() == original.symbols()
    assert frames[N].get_chemical_symbols()[5] == "F" and frames[N].get_chemical_symbols().count("F") == 1
    assert np.allclose(frames[N].positions, original.coords[0]) and frames[0].pbc.all()
