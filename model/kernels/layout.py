"""The triple layout the per-triple C++ kernels rely on, defined once (model/graph.py builds it).

Triples of a centre with m angle edges are all m*m ordered pairs (j, k), centre by centre, j-major::

    centre 0 (m=2): (0,0) (0,1) (1,0) (1,1) | centre 1 (m=1): (2,2) | centre 2 (m=3): (3,3) (3,4) ...

so a centre's triples are one contiguous block of m*m rows, described by two offset arrays:
``a_off`` (centres + 1,) angle-edge offsets and ``t_off`` (centres + 1,) triple offsets. Imports
nothing of the model.
"""

from __future__ import annotations

import numpy as np
import torch


def block_triples(first: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(triple_j, triple_k) of centres whose m angle edges start at ``first``: all m*m ordered pairs,
    centre by centre, j-major."""
    first, m = np.asarray(first, dtype=np.int64), np.asarray(m, dtype=np.int64)
    per_triple_first = np.repeat(first, m * m)
    per_triple_m = np.repeat(m, m * m)
    q = np.arange(int((m * m).sum()), dtype=np.int64) - np.repeat(np.r_[0, np.cumsum(m * m)[:-1]], m * m)
    return per_triple_first + q // per_triple_m, per_triple_first + q % per_triple_m


def triple_index(a_off: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(triple_j, triple_k) of the centre-by-centre layout given by the angle-edge offsets."""
    a_off = a_off.numpy()
    return tuple(torch.from_numpy(t) for t in block_triples(a_off[:-1], a_off[1:] - a_off[:-1]))


def block_offsets(m) -> tuple[torch.Tensor, torch.Tensor]:
    """(angle-edge offsets, triple offsets), each (centres + 1,), of centres with m angle edges each."""
    m = torch.as_tensor(m, dtype=torch.int64)
    zero = m.new_zeros(1)
    return torch.cat([zero, m.cumsum(0)]), torch.cat([zero, (m * m).cumsum(0)])
