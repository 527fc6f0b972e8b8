"""Atomic file writes: a temporary file in the same folder, fsync, ``os.replace``, fsync of the folder.

The one implementation for every file of state or data (run state, plans, step records,
labels, datasets, checkpoints, reports). A reader (or a crash) never sees a half-written
file, and once a write has returned, the new file survives a power loss (the folder's entry
is on disk too). :func:`replace_entry` does the last two steps for an entry made another way
(a folder filled in place, a symlink). Files get the usual permissions
(0666 minus the umask), not mkstemp's private 0600, so run directories stay readable by the
group on a cluster. Lives in the lowest room so that the model, the active-learning code and
the workflows share one implementation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["read_json_object", "known_fields", "replacing", "atomic_write", "atomic_write_path", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "json_default", "fsync_dir", "replace_entry"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path``; when the block ends without error it is fsynced and
    moved onto ``path``, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        replace_entry(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders
    cannot be opened (some file systems, Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_entry(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move a complete ``tmp`` (file, folder or symlink, same folder as ``dest``) onto ``dest``
    with ``os.replace`` and flush the folder entry. The caller has written (and, for a file,
    fsynced) ``tmp``."""
    os.replace(tmp, dest)
    fsync_dir(Path(dest).parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a binary temporary file next to ``path``, then move it into place."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def atomic_write_path(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` (a writer that wants a file name, e.g. ``ase.io.write``) for a
    temporary file next to ``path``, then move it into place."""
    with replacing(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(obj: Any) -> Any:
    """JSON for what our records hold besides plain types: paths, numpy scalars and arrays."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):          # numpy scalars and arrays, torch tensors
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps: Any) -> Path:
    """``data`` as indented JSON (paths and numpy values allowed); ``dumps`` go to ``json.dumps``."""
    return atomic_write_text(path, json.dumps(data, **{"indent": 1, "default": json_default, **dumps}) + "\n")


def read_json_object(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """The JSON object in ``path``, or in ``path/name`` when ``path`` is a folder (a step's output).

    Raises:
        FileNotFoundError: no such file (e.g. the step has not run). ValueError: not JSON, or not
            an object (a file contract's readers then add what they expected).
    """
    path = Path(path)
    path = path / name if path.is_dir() else path
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON {type(data).__name__}, not an object")
    return data


def known_fields(cls: type, data: Any) -> dict[str, Any]:
    """The items of the JSON object ``data`` that are fields of the dataclass ``cls``: what a
    file contract's reader passes to ``cls(**...)``, keys written by another version dropped.

    Raises:
        ValueError: ``data`` is not an object.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    known = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in known}
