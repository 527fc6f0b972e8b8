"""Shared fixtures: data locations and small structures."""

from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread: the tests use tiny models (threading only adds overhead), and results
# then do not depend on how busy the machine is (2 OpenMP threads on a loaded 2-core machine
# stall at every barrier).
torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def water_frame(system: str = "data_0", frame: int = 0):
    """(positions (192,3), types (192,) [O=0,H=1], cell (3,3)) of the shipped DFT water data."""
    d = DATA / "water" / system
    coord = np.load(d / "set.000" / "coord.npy")[frame].reshape(-1, 3).astype(np.float64)
    box = np.load(d / "set.000" / "box.npy")[frame].reshape(3, 3).astype(np.float64)
    types = np.loadtxt(d / "type.raw", dtype=np.int64)
    return coord, types, box


@pytest.fixture
def water_atoms():
    from ase import Atoms

    coord, types, box = water_frame()
    return Atoms(symbols=["O" if t == 0 else "H" for t in types], positions=coord, cell=box, pbc=True)
