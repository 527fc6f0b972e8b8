"""The step adapters the workflow calls: prepare_label -> run_label -> collect (no dflow here)."""

from __future__ import annotations

import os

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from dpa3_al.dataset import LabeledDataset
from dpa3_al.label import LabelerUnavailable
from dpa3_al.steps import collect, prepare_label, run_label


def candidates(tmp_path, n: int, tag_first: int = 0):
    frames = []
    for i in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05, seed=100 * tag_first + i)
        atoms.info.update(task=f"task-{i:06d}", step=5 * i, temperature=600.0, ensemble="npt")
        frames.append(atoms)
    select = tmp_path / f"select-{tag_first}"
    select.mkdir()
    ase.io.write(select / "candidates.extxyz", frames)
    return select


def label_iteration(tmp_path, select, iteration: int, config: dict):
    tasks = prepare_label(config, select, iteration, tmp_path / f"prep-{iteration}")
    outs = []
    for task in tasks:
        out = tmp_path / f"run-{iteration}" / task.name
        run_label(config, task, out)
        outs.append(out)
    return tasks, outs


def test_prepare_run_collect_builds_the_next_dataset_without_touching_the_previous(tmp_path):
    config = {"label": {"kind": "ase", "frames_per_task": 2}}
    tasks, outs = label_iteration(tmp_path, candidates(tmp_path, 5), 1, config)
    assert [t.name for t in tasks] == ["batch-000000", "batch-000001", "batch-000002"]
    assert sorted(p.name for p in outs[1].glob("task-*")) == ["task-000002", "task-000003"]

    first = collect({}, None, outs, 1, tmp_path / "it1" / "dataset")
    ds1 = LabeledDataset(first)
    assert len(ds1) == 5 and ds1.summary().iterations == {"001": 5}
    assert ds1.records[3].task == "task-000003" and ds1.records[3].condition["ensemble"] == "npt"

    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    _, outs2 = label_iteration(tmp_path, candidates(tmp_path, 3, tag_first=1), 2, config)
    second = collect({"dedup_tol": 1e-3}, first, outs2 + outs, 2, tmp_path / "it2" / "dataset")
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before, "previous dataset untouched"
    ds2 = LabeledDataset(second)
    assert len(ds2) == 8 and ds2.summary().iterations == {"001": 5, "002": 3}
    shared = second / "systems" / "Cu4" / "set.000" / "coord.npy"
    assert os.path.samefile(shared, first / "systems" / "Cu4" / "set.000" / "coord.npy")

    again = collect({}, first, outs2, 2, tmp_path / "it2" / "dataset")
    assert len(LabeledDataset(again)) == 8, "a retried collect adds nothing twice"
    np.testing.assert_allclose(np.load(shared), np.load(first / "systems" / "Cu4" / "set.000" / "coord.npy"))


def test_prepare_tasks_checks_the_labeler_before_any_task(tmp_path):
    select = tmp_path / "select"
    select.mkdir()
    ase.io.write(select / "candidates.extxyz", [molecule("SiH4")])
    with pytest.raises(LabelerUnavailable, match="no EMT parameters for Si"):
        prepare_label({"kind": "ase"}, select, 0, tmp_path / "prep")
    assert prepare_label({"kind": "ase"}, tmp_path / "empty", 0, tmp_path / "prep2") == []
