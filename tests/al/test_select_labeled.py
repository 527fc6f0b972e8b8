"""Selection never spends a label twice: candidates already in the dataset are filtered out."""

from __future__ import annotations

import json

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa3_al.dataset import LabeledDataset, Provenance
from dpa3_al.select import SelectConfig, frame_key, labeled_frames, select
from tests.al.test_select import _dirs, explored  # noqa: F401  (fixture)


def test_frame_key_ignores_atom_order_and_periodic_images():
    a = Atoms("CuAuCuAu", positions=[[0, 0, 0], [1.9, 1.9, 0], [0, 1.9, 1.9], [1.9, 0, 1.9]],
              cell=[3.8, 3.8, 3.8], pbc=True)
    shuffled = a[[3, 0, 2, 1]]
    shifted = a.copy()
    shifted.positions[1] += [3.8, 0, 0]          # the same atom one cell further
    moved = a.copy()
    moved.positions[2, 0] += 0.01
    assert frame_key(a, 1e-3) == frame_key(shuffled, 1e-3) == frame_key(shifted, 1e-3)
    assert frame_key(a, 1e-3) != frame_key(moved, 1e-3)
    swapped = a.copy()
    swapped.numbers[[0, 1]] = swapped.numbers[[1, 0]]   # same positions, species exchanged
    assert frame_key(a, 1e-3) != frame_key(swapped, 1e-3)


def test_frames_already_in_the_dataset_are_not_selected_again(explored, tmp_path):  # noqa: F811
    cfg = SelectConfig(f_lo=0.05, f_hi=0.15, max_select=3, strategy="highest")
    first = [s["frame"] for s in select(_dirs(explored), cfg, tmp_path / "it0").selected]
    # label the selected frames into a real dataset (it stores atoms sorted by element, in its own layout)
    frames = ase.io.read(tmp_path / "it0" / "candidates.extxyz", ":")
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
    ds = LabeledDataset(tmp_path / "dataset")
    assert ds.add(frames, Provenance(iteration=0)).added == 3
    known = labeled_frames([tmp_path / "dataset", tmp_path / "absent"])
    assert len(known) == 3
    again = select(_dirs(explored), cfg, tmp_path / "it1", labeled=known)
    data = json.loads((tmp_path / "it1" / "selection.json").read_text())
    assert sorted(f["frame"] for f in data["filters"]["labeled"]["frames"]) == sorted(first)
    assert "already labeled" in data["filters"]["labeled"]["frames"][0]["why"]
    chosen = [s["frame"] for s in again.selected]
    assert chosen and not set(chosen) & set(first)
    # without the dataset the same frames come back (what the loop did before)
    assert [s["frame"] for s in select(_dirs(explored), cfg, tmp_path / "it1b").selected] == first
