"""Atomic file writes and small hashing helpers shared by the labelers and the dataset.

Every file that another process may read is written to a temporary file in the same
directory and moved into place with :func:`os.replace`, so a reader sees either the old
file or the complete new one, never half of it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dpa3_al.model.fileio import replacing

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_npy",
    "atomic_write_with", "frame_fingerprint", "read_json",
]


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file next to ``path``, then move it into place."""
    with replacing(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=_json_default) + "\n")


def atomic_write_npy(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def frame_fingerprint(atoms) -> str:
    """Stable hash of a frame's species, positions (1e-8 Å), cell and periodicity."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update((np.round(np.asarray(atoms.positions, dtype=np.float64), 8) + 0.0).tobytes())
    digest.update((np.round(np.asarray(atoms.cell.array, dtype=np.float64), 8) + 0.0).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]
