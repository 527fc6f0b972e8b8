"""Training data: deepmd npy / extxyz / LabeledDataset reading, type mapping, bad input, sampling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa3_al.model.train.batching import FrameSampler, TrainingData, parse_batch_size
from dpa3_al.model.train.data import data_elements, load_systems, read_npy_system, split_validation
from dpa3_al.common.errors import InputError

WATER = Path(__file__).parents[1] / "data" / "water"


def _npy_system(root: Path, n_frames=3, types=(0, 1, 1), type_map=("O", "H"), virial=True, nopbc=False,
                seed=0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "type.raw").write_text("\n".join(str(t) for t in types) + "\n")
    if type_map is not None:
        (root / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if nopbc:
        (root / "nopbc").write_text("")
    s = root / "set.000"
    s.mkdir()
    nat = len(types)
    np.save(s / "coord.npy", rng.uniform(0, 5, (n_frames, nat * 3)))
    np.save(s / "box.npy", np.zeros((n_frames, 9)) if nopbc else np.tile(np.eye(3).reshape(9) * 6, (n_frames, 1)))
    np.save(s / "energy.npy", rng.normal(size=n_frames))
    np.save(s / "force.npy", rng.normal(size=(n_frames, nat * 3)))
    if virial:
        np.save(s / "virial.npy", rng.normal(size=(n_frames, 9)))
    return root


def test_water_systems_are_found_recursively_and_read():
    systems = load_systems([WATER])
    assert [Path(s.name).name for s in systems] == ["data_0", "data_1", "data_2", "data_3"]
    assert [s.n_frames for s in systems] == [80, 160, 80, 80]        # data_1 has set.000 and set.001
    s = systems[0]
    assert s.coords.shape == (80, 192, 3) and s.forces.shape == (80, 192, 3) and s.cells.shape == (80, 3, 3)
    assert s.coords.dtype == np.float64 and not s.has_virial.any()
    raw = np.load(WATER / "data_0" / "set.000" / "force.npy")
    assert np.array_equal(s.forces.reshape(80, -1), raw.astype(np.float64))
    assert data_elements(systems) == ["H", "O"]


def test_types_are_mapped_onto_the_model_type_map_by_name():
    s = read_npy_system(WATER / "data_0")
    raw = np.loadtxt(WATER / "data_0" / "type.raw", dtype=int)          # 0 = O, 1 = H in type_map.raw
    assert np.array_equal(s.model_types(["O", "H"]), raw)
    assert np.array_equal(s.model_types(["H", "C", "O"]), np.where(raw == 0, 2, 0))
    with pytest.raises(InputError, match=r"data_0.*\['O'\].*not in the model's type map \['H', 'C'\]"):
        s.model_types(["H", "C"])


def test_system_without_type_map_uses_model_indices(tmp_path):
    s = read_npy_system(_npy_system(tmp_path / "sys", type_map=None))
    assert s.elements is None
    assert np.array_equal(s.model_types(["Cu", "Al"]), [0, 1, 1])
    with pytest.raises(InputError, match="type index 1 .* has 1 types"):
        s.model_types(["Cu"])


def test_nopbc_and_virial(tmp_path):
    s = read_npy_system(_npy_system(tmp_path / "mol", nopbc=True))
    assert s.cells is None and s.has_virial.all() and s.virial.shape == (3, 3, 3)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "set.000" / "force.npy").unlink(), r"set.000/force.npy: missing"),
    (lambda d: np.save(d / "set.000" / "energy.npy", np.zeros(2)), r"energy.npy: shape \(2,\) does not fit 3 frames"),
    (lambda d: np.save(d / "set.000" / "force.npy", np.zeros((3, 6))), r"force.npy: shape \(3, 6\) does not fit"),
    (lambda d: np.save(d / "set.000" / "energy.npy", np.array([0.0, np.nan, 1.0])), r"energy.npy: NaN .* \[1\]"),
    (lambda d: shutil.rmtree(d / "set.000"), r"empty system: no set"),
    (lambda d: (d / "type.raw").write_text(""), r"type.raw: empty"),
    (lambda d: (d / "type.raw").write_text("0\n1\n2\n"), r"type index 2 but .*type_map.raw names only 2"),
    (lambda d: np.save(d / "set.000" / "box.npy", np.zeros((3, 9))), r"box.npy: zero-volume cell"),
])
def test_bad_input_gives_one_clear_error_naming_the_file(tmp_path, breakage, message):
    d = _npy_system(tmp_path / "bad")
    breakage(d)
    with pytest.raises(InputError, match=message) as err:
        load_systems([tmp_path])
    assert str(d) in str(err.value)


def test_missing_path_and_directory_without_systems(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_systems([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no deepmd npy system"):
        load_systems([tmp_path / "empty"])


def _labeled(symbols, seed, pbc=True):
    rng = np.random.default_rng(seed)
    n = len(Atoms(symbols))
    atoms = Atoms(symbols, positions=rng.uniform(0, 4, (n, 3)), cell=np.eye(3) * 7 if pbc else None, pbc=pbc)
    stress = rng.normal(size=6) * 0.01
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
    if pbc:
        results["stress"] = stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def test_extxyz_frames_grouped_into_systems_with_virial_from_stress(tmp_path):
    import ase.io
    from ase.stress import voigt_6_to_full_3x3_stress

    frames = [_labeled("CuAl", 0), _labeled("CuAl", 1), _labeled("Cu3", 2), _labeled("CuAl", 3, pbc=False)]
    ase.io.write(tmp_path / "d.extxyz", frames)
    systems = load_systems([tmp_path / "d.extxyz"])
    assert [s.n_frames for s in systems] == [2, 1, 1]
    first = systems[0]
    assert first.elements == ["Cu", "Al"] and first.periodic
    np.testing.assert_allclose(first.energy, [frames[0].get_potential_energy(), frames[1].get_potential_energy()])
    expect = -voigt_6_to_full_3x3_stress(frames[1].calc.results["stress"]) * frames[1].get_volume()
    np.testing.assert_allclose(first.virial[1], expect, atol=1e-12)
    assert not systems[2].periodic and not systems[2].has_virial.any()


def test_extxyz_without_labels_is_refused(tmp_path):
    import ase.io

    ase.io.write(tmp_path / "u.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(InputError, match="frame 0 has no energy"):
        load_systems([tmp_path / "u.extxyz"])


def test_labeled_dataset_is_read(tmp_path):
    from dpa3_al.dataset import LabeledDataset, Provenance

    frames = [_labeled("CuAl2", k) for k in range(3)] + [_labeled("Cu2", 10 + k) for k in range(2)]
    ds = LabeledDataset(tmp_path / "dataset")
    ds.add(frames, Provenance(iteration=0, source="test"))
    systems = load_systems(ds.system_dirs())
    assert sorted(s.n_frames for s in systems) == [2, 3]
    assert sorted(s.n_frames for s in load_systems([tmp_path / "dataset"])) == [2, 3]   # recursive discovery
    by_n = {s.n_frames: s for s in systems}
    energies = sorted(f.get_potential_energy() for f in frames[:3])
    np.testing.assert_allclose(sorted(by_n[3].energy), energies, rtol=1e-12)
    assert by_n[3].has_virial.all() and set(by_n[3].symbols()) == {"Cu", "Al"}


def test_batch_size_rules():
    assert parse_batch_size(4, 192) == 4
    assert parse_batch_size("auto", 192) == 1 and parse_batch_size("auto", 8) == 4
    assert parse_batch_size("auto:100", 30) == 4
    with pytest.raises(InputError):
        parse_batch_size("many", 3)


def test_sampler_probabilities_batches_and_exact_state_restore():
    systems = load_systems([WATER / "data_0", WATER / "data_1"])
    data = TrainingData(systems, ["O", "H"], batch_size=2)
    np.testing.assert_allclose(data.probs, [1 / 3, 2 / 3])               # prob_sys_size: 40 and 80 batches
    sampler = FrameSampler(data, seed=3)
    draws = [sampler.next_picks() for _ in range(300)]
    assert all(len(p) == 2 and p[0][0] == p[1][0] for p in draws)       # one system per batch
    share = np.mean([p[0][0] == 1 for p in draws])
    assert 0.55 < share < 0.78
    first = [f for p in draws[:200] for s, f in p if s == 0]
    assert len(set(first[:80])) == min(80, len(first))                   # no repeats within a pass
    state = sampler.state_dict()
    ahead = [sampler.next_picks() for _ in range(20)]
    other = FrameSampler(data, seed=99)
    other.load_state_dict(state)
    assert [other.next_picks() for _ in range(20)] == ahead
    batch, labels = data.batch(ahead[0])
    assert batch.n_frames == 2 and labels.forces.shape == (384, 3) and labels.natoms.tolist() == [192.0, 192.0]


def test_validation_split_is_seeded_and_disjoint():
    systems = load_systems([WATER / "data_0"])
    train, val = split_validation(systems, 0.1, seed=5)
    assert train[0].n_frames + val[0].n_frames == 80 and 3 <= val[0].n_frames <= 14      # ~8, binomial
    train2, val2 = split_validation(systems, 0.1, seed=5)
    assert np.array_equal(val[0].energy, val2[0].energy)
    rows = {tuple(c[:3, 0]) for c in np.concatenate([train[0].coords, val[0].coords])}
    assert len(rows) == 80
    _, other = split_validation(systems, 0.1, seed=6)          # another member, another hold-out
    assert not np.array_equal(other[0].energy, val[0].energy)


def test_validation_split_stays_put_as_the_data_grow():
    # the loop appends labels to its systems and a member continues from its previous model: a frame
    # it trained on must never move into its validation set, nor a held-out frame into training
    full = load_systems([WATER / "data_0"])[0]
    small = full.subset(np.arange(0, 80, 2))                  # 40 frames; then all 80, in another order
    grown = full.subset(np.r_[np.arange(0, 80, 2), np.arange(79, 0, -2)])
    (t_small,), (v_small,) = split_validation([small], 0.1, seed=5)
    (t_grown,), (v_grown,) = split_validation([grown], 0.1, seed=5)
    key = lambda s: {float(e) for e in s.energy}                               # noqa: E731
    assert key(t_small) <= key(t_grown) and key(v_small) <= key(v_grown)
    assert v_small.n_frames >= 1 and v_grown.n_frames > v_small.n_frames
