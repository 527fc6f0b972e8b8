"""Our importer reproduces deepmd-kit 3.2's own predictions on its reference checkpoints."""

import numpy as np
import pytest

from dpa3_al.model import load_model
from dpa3_al.model.graph import Batch

from ..conftest import DATA

REF = DATA / "dpa3-reference"
CASES = [  # (folder, head, sets)
    ("small", None, ["water_pbc", "water_cluster"]),
    ("dynamic", None, ["water_pbc", "water_cluster"]),
    ("multitask", "water", ["water_pbc", "water_cluster", "hco_pbc", "mixed_cluster"]),
    ("multitask", "hco", ["hco_pbc", "hco_pbc_b", "water_cluster", "mixed_cluster"]),
    ("multitask/sharefit", "water", ["water_pbc", "water_cluster", "hco_pbc", "mixed_cluster"]),
    ("multitask/sharefit", "hco", ["hco_pbc", "hco_pbc_b", "water_cluster", "mixed_cluster"]),
    ("multitask/finetune_water", None, ["water_pbc", "water_cluster"]),
]


@pytest.mark.parametrize("folder,head,sets", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_reference_predictions(folder, head, sets):
    model = load_model(REF / folder / "model.ckpt.pt", head=head)
    ref = np.load(REF / folder / "reference.npz")
    assert list(model.type_map) == [str(t) for t in ref["type_map"]]
    pre = f"{head}__" if head else ""
    for s in sets:
        k = f"{pre}{s}__"
        coord, atype = ref[k + "coord"], ref[k + "atype"]
        periodic = (k + "cell") in ref.files
        frames = [(coord[f], atype, ref[k + "cell"][f] if periodic else None, np.array([periodic] * 3))
                  for f in range(len(coord))]
        out = model(Batch.from_arrays(frames))          # all frames of a set in one batch
        np.testing.assert_allclose(out.energy.detach().numpy(), ref[k + "energy"], rtol=0, atol=1e-8)
        np.testing.assert_allclose(out.atom_energy.detach().numpy(), ref[k + "atom_energy"].reshape(-1),
                                   rtol=0, atol=1e-8)
        np.testing.assert_allclose(out.forces.detach().numpy(), ref[k + "force"].reshape(-1, 3), rtol=0, atol=1e-8)
        np.testing.assert_allclose(out.virial.detach().numpy(), ref[k + "virial"], rtol=0, atol=1e-8)


def test_descriptor_matches_reference(water_atoms):
    from dpa3_al.model import DPA3Calculator

    ref = np.load(REF / "dynamic" / "reference.npz")
    from ase import Atoms

    atoms = Atoms(numbers=np.where(ref["water_pbc__atype"] == 0, 8, 1), positions=ref["water_pbc__coord"][0],
                  cell=ref["water_pbc__cell"][0], pbc=True)
    calc = DPA3Calculator(REF / "dynamic" / "model.ckpt.pt")
    np.testing.assert_allclose(calc.get_descriptor(atoms), ref["water_pbc__descriptor"][0], rtol=0, atol=1e-10)


def test_multitask_head_required_lists_heads():
    from dpa3_al.model import CheckpointError

    with pytest.raises(CheckpointError, match="water, hco"):
        load_model(REF / "multitask" / "model.ckpt.pt")
    with pytest.raises(CheckpointError, match="no head 'nope'"):
        load_model(REF / "multitask" / "model.ckpt.pt", head="nope")
    assert load_model(REF / "multitask" / "model.ckpt.pt", head="WATER").metadata["head"] == "water"
