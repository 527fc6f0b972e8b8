"""Atomic file writes and small hashing helpers shared by the labelers and the dataset.

The writers are :mod:`dpa3_al.common.fileio`'s (the one implementation: temporary file in
the same directory, fsync, ``os.replace``, fsync of the directory), re-exported with the
labelers' names and sorted-key JSON, so a reader sees either the old file or the complete
new one, and a finished write survives a crash.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from dpa3_al.common.fileio import atomic_write_bytes, atomic_write_text
from dpa3_al.common.fileio import atomic_write_json as _write_json
from dpa3_al.common.fileio import atomic_write_path as atomic_write_with

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_npy",
    "atomic_write_with", "frame_fingerprint", "read_json",
]


def atomic_write_json(path: Path, data: Any) -> Path:
    """Sorted-key JSON (stable diffs of status and index files)."""
    return _write_json(path, data, sort_keys=True)


def atomic_write_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def frame_fingerprint(atoms) -> str:
    """Stable hash of a frame's species, positions (1e-8 Å), cell and periodicity."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update((np.round(np.asarray(atoms.positions, dtype=np.float64), 8) + 0.0).tobytes())
    digest.update((np.round(np.asarray(atoms.cell.array, dtype=np.float64), 8) + 0.0).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]
