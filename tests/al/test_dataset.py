"""The labeled dataset: layout, provenance round trip, dedup, crash safety, import/export, summary."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from dpa3_al.dataset import LabeledDataset, Provenance, read_labeled
from dpa3_al.label.results import LabeledFrame, LabelFailure, LabelMeta, attach_results
from dpa3_al.common.errors import InputError

DATA = Path(__file__).parents[1] / "data"
META = LabelMeta(labeler="ase", settings_hash="abc123def456", wall_time=0.5)


def emt_frame(seed: int, scale: float = 1.0, swap: bool = False) -> LabeledFrame:
    """A labeled Cu3Au-like cell with mixed atom order (Au first), EMT energy/forces/stress."""
    atoms = bulk("Cu", "fcc", a=3.7 * scale, cubic=True)
    atoms[0].symbol = "Au"
    atoms[2].symbol = "Au" if swap else "Cu"
    atoms.rattle(0.05, seed=seed)
    atoms.info.update(task=f"task-{seed:06d}", step=10 * seed, temperature=300.0 + seed, ensemble="nvt",
                      max_devi_f=0.1 * seed)
    atoms.calc = EMT()
    labeled = attach_results(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    return LabeledFrame(labeled, META)


def water(seed: int) -> LabeledFrame:
    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    rng = np.random.default_rng(seed)
    return LabeledFrame(attach_results(atoms, -10.0 - seed, rng.normal(size=(3, 3))), META)


def test_layout_is_deepmd_npy_and_dpdata_reads_it(tmp_path):
    import dpdata

    frames = [emt_frame(i) for i in range(3)] + [water(i) for i in range(2)]
    ds = LabeledDataset(tmp_path / "ds")
    report = ds.add(frames, Provenance(iteration=2, source="iter-000002/label"))
    assert report.added == 5 and report.duplicates == 0
    dirs = ds.system_dirs()
    assert [d.name for d in dirs] == ["AuCu3", "H2O-nopbc"]
    au = dirs[0]
    assert (au / "type_map.raw").read_text().split() == ["Cu", "Au"]  # sorted by atomic number
    assert (au / "type.raw").read_text().split() == ["0", "0", "0", "1"]
    assert (dirs[1] / "nopbc").is_file() and not (au / "nopbc").exists()
    assert np.all(np.load(dirs[1] / "set.000" / "box.npy") == 0)

    system = dpdata.LabeledSystem(str(au), fmt="deepmd/npy")
    assert len(system) == 3
    for i, frame in enumerate(frames[:3]):
        order = np.argsort(frame.atoms.numbers, kind="stable")
        np.testing.assert_allclose(system["coords"][i], frame.atoms.positions[order])
        np.testing.assert_allclose(system["forces"][i], frame.forces[order])
        np.testing.assert_allclose(system["virials"][i], frame.virial)
        assert system["energies"][i] == pytest.approx(frame.energy)
    molecules = dpdata.LabeledSystem(str(dirs[1]), fmt="deepmd/npy")
    assert molecules.nopbc and len(molecules) == 2
    multi = dpdata.MultiSystems()
    for d in dirs:
        multi.append(dpdata.LabeledSystem(str(d), fmt="deepmd/npy"))
    assert multi.get_nframes() == 5


def test_provenance_round_trips_through_reopen_and_extxyz_export_import(tmp_path):
    frames = [emt_frame(i) for i in range(3)]
    ds = LabeledDataset(tmp_path / "ds")
    ds.add(frames, Provenance(iteration=4, source="iter-000004/label"))
    records = LabeledDataset(tmp_path / "ds").records
    assert records == ds.records
    first = records[0]
    assert (first.iteration, first.task, first.step, first.labeler, first.settings_hash) == \
           (4, "task-000000", 0, "ase", "abc123def456")
    assert first.condition == {"temperature": 300.0, "ensemble": "nvt"}
    assert first.extra["max_devi_f"] == 0.0 and first.source == "iter-000004/label"

    back = list(LabeledDataset(tmp_path / "ds").frames())
    for frame, atoms in zip(frames, back):
        order = np.argsort(frame.atoms.numbers, kind="stable")
        np.testing.assert_allclose(atoms.get_forces(), frame.forces[order])
        np.testing.assert_allclose(atoms.get_stress(voigt=False), frame.stress, atol=1e-12)
        assert atoms.info["task"] == frame.atoms.info["task"]

    exported = LabeledDataset(tmp_path / "ds").export(tmp_path / "all.extxyz", "extxyz")
    copy = LabeledDataset(tmp_path / "copy")
    copy.import_path(exported)
    keys = ("system", "iteration", "task", "step", "condition", "labeler", "settings_hash")
    assert [[getattr(r, k) for k in keys] for r in copy.records] == [[getattr(r, k) for k in keys] for r in records]


def test_duplicates_are_skipped_within_and_across_adds(tmp_path):
    ds = LabeledDataset(tmp_path / "ds", dedup_tol=1e-3)
    base = emt_frame(0)
    assert ds.add([base, base]).duplicates == 1

    permuted = base.atoms[[3, 1, 0, 2]]
    permuted = LabeledFrame(attach_results(permuted, base.energy, base.forces[[3, 1, 0, 2]], base.stress), META)
    image = base.atoms.copy()
    image.positions[1] += image.cell[0] - image.cell[2]       # the same atom, another periodic image
    nudged = base.atoms.copy()
    nudged.positions += 2e-4                                     # within the tolerance
    moved = base.atoms.copy()
    moved.positions[2, 0] += 0.01                                # a different frame
    strained = base.atoms.copy()
    strained.set_cell(strained.cell * 1.01, scale_atoms=False)   # same positions, other cell
    extra = [LabeledFrame(attach_results(a, base.energy, base.forces, base.atoms.get_stress()), META)
             for a in (image, nudged, moved, strained)]
    report = ds.add([permuted, *extra])
    assert (report.added, report.duplicates) == (2, 3)
    assert len(LabeledDataset(tmp_path / "ds")) == 3
    again = LabeledDataset(tmp_path / "ds").add([emt_frame(0), emt_frame(1)])
    assert (again.added, again.duplicates) == (1, 1), "dedup also works against data on disk"


def test_crash_between_set_and_commit_leaves_a_readable_dataset(tmp_path, monkeypatch):
    import dpdata

    import dpa3_al.dataset.store as store

    ds = LabeledDataset(tmp_path / "ds")
    ds.add([emt_frame(0)], Provenance(iteration=0))

    def crash(path, data):
        raise KeyboardInterrupt("killed while committing")

    monkeypatch.setattr(store, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        ds.add([emt_frame(1), water(0)], Provenance(iteration=1))
    monkeypatch.undo()
    system = tmp_path / "ds" / "systems" / "AuCu3"
    assert (system / "set.001").is_dir() and (tmp_path / "ds" / "systems" / "H2O-nopbc").is_dir()

    reopened = LabeledDataset(tmp_path / "ds")
    assert not (system / "set.001").exists(), "the uncommitted set is removed on open"
    assert not (tmp_path / "ds" / "systems" / "H2O-nopbc").exists()
    assert len(reopened) == 1 and len(dpdata.LabeledSystem(str(system), fmt="deepmd/npy")) == 1
    report = reopened.add([emt_frame(1)], Provenance(iteration=1))
    assert report.added == 1 and report.sets == ("AuCu3/set.001",)
    assert reopened.summary().iterations == {"000": 1, "001": 1}


def test_failures_are_recorded_and_summarised(tmp_path, capsys):
    from dpa3_al.cli import main

    broken = emt_frame(5).atoms
    failures = [LabelFailure("timeout", "no result after 60 s", tmp_path / "task-000001", broken, META),
                LabelFailure("scf_not_converged", "pw.x: convergence NOT achieved", tmp_path / "task-000002",
                             broken, META)]
    ds = LabeledDataset(tmp_path / "run" / "dataset")
    ds.add([emt_frame(0), water(1), *failures], Provenance(iteration=3))
    ds.import_path(DATA / "label" / "vasp-ni18" / "OUTCAR", "vasp/outcar")
    summary = ds.summary()
    assert summary.frames == 3 and summary.failures == {"scf_not_converged": 1, "timeout": 1}
    assert summary.labelers == {"ase": 2, "imported": 1}
    assert summary.iterations == {"003": 2, "initial": 1}
    assert ds.failures[0].task == "task-000005" and ds.failures[0].formula == "AuCu3"

    assert main(["data", "summary", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "frames: 3 in 3 systems; failed labels: 2" in out
    assert "Ni18" in out and "scf_not_converged" in out and "timeout" in out


def test_import_deepmd_npy_recursively_extxyz_and_export(tmp_path):
    ds = LabeledDataset(tmp_path / "ds")
    report = ds.import_path(DATA / "water")
    assert report.added == 400
    assert [d.name for d in ds.system_dirs()] == ["H128O64-novirial"]
    assert ds.import_path(DATA / "water" / "data_1").duplicates == 160
    original = np.load(DATA / "water" / "data_0" / "set.000" / "energy.npy")
    stored = np.load(ds.system_dirs()[0] / "set.000" / "energy.npy")
    np.testing.assert_allclose(stored[: len(original)], original)

    frames = [emt_frame(i).atoms for i in range(2)]
    ase.io.write(tmp_path / "frames.extxyz", frames)
    assert ds.import_path(tmp_path / "frames.extxyz").added == 2

    out = ds.export(tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["AuCu3", "H128O64-novirial"]
    assert len(read_labeled(out)) == 402

    unlabeled = molecule("H2O")
    ase.io.write(tmp_path / "bare.extxyz", unlabeled)
    with pytest.raises(InputError, match="no energy/forces"):
        ds.import_path(tmp_path / "bare.extxyz")
    with pytest.raises(InputError, match="give --fmt"):
        ds.import_path(DATA / "label" / "vasp-ni18" / "OUTCAR")
    with pytest.raises(InputError, match="no energy and forces"):
        ds.add([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
