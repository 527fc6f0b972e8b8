"""Run an external program (pw.x, VASP, ABACUS) in a task directory with a timeout.

The program runs in its own process group; on timeout the whole group (mpirun and its
ranks included) is killed and the frame fails with reason ``timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .results import LabelError
from .worker import die_with_parent, thread_env

if TYPE_CHECKING:
    import numpy as np
    from ase import Atoms

    from .base import Computed

__all__ = ["run_program", "tail_text"]


def run_program(argv: Sequence[str], cwd: Path, *, timeout: float, threads: int = 1, stdout: str = "stdout.txt",
                stderr: str = "stderr.txt", env: dict[str, str] | None = None) -> int:
    """Run ``argv`` in ``cwd`` (stdout/stderr to files there); return its exit status.

    Raises:
        LabelError: ``timeout`` after ``timeout`` s (process group killed), ``crash`` when the
            program cannot be started.
    """
    with open(cwd / stdout, "wb") as out, open(cwd / stderr, "wb") as err:
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=thread_env(threads, env), start_new_session=True,
                                    preexec_fn=die_with_parent)
        except OSError as exc:
            raise LabelError("crash", f"cannot start {argv[0]!r}: {exc}") from None
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise LabelError("timeout", f"{argv[0]} ran longer than {timeout:g} s and was killed "
                                        f"(outputs in {cwd})") from None


def tail_text(path: Path, lines: int = 6) -> str:
    """The last non-empty lines of a text file, joined with ' | ' (for failure details)."""
    if not path.is_file():
        return f"({path.name} missing)"
    text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:]) or f"({path.name} empty)"


def grouped_order(symbols: Sequence[str]) -> "np.ndarray":
    """Stable permutation grouping atoms by species in order of first appearance.

    VASP (POSCAR/POTCAR) and ABACUS (STRU) want atoms of one species together; results
    come back in this order and are mapped back with ``unsorted[order] = sorted``.
    """
    import numpy as np

    first = {s: i for i, s in reversed(list(enumerate(symbols)))}
    return np.argsort([first[s] for s in symbols], kind="stable")


def keyword_value(value: Any, true: str, false: str) -> str:
    """A value in a keyword input file (VASP INCAR, ABACUS INPUT): booleans as ``true`` /
    ``false``, lists and tuples space-separated, anything else as ``str``."""
    if isinstance(value, bool):
        return true if value else false
    if isinstance(value, (list, tuple)):
        return " ".join(keyword_value(v, true, false) for v in value)
    return str(value)


def check_positions(expected: "np.ndarray", found: "np.ndarray", cell: "np.ndarray", pbc: Sequence[bool],
                    source: Path, tol: float = 2e-3) -> None:
    """Raise ``missing_output`` if the output's positions (Å) are not the input's (stale output)."""
    import numpy as np

    delta = np.asarray(found, dtype=float) - np.asarray(expected, dtype=float)
    if any(pbc):
        frac = np.linalg.solve(np.asarray(cell).T, delta.T).T
        frac -= np.round(frac) * np.asarray(pbc, dtype=float)
        delta = frac @ np.asarray(cell)
    worst = float(np.abs(delta).max()) if delta.size else 0.0
    if worst > tol:
        raise LabelError("missing_output", f"{source} holds another structure (positions differ by up to "
                                           f"{worst:.3g} Å); the program did not write its own output")


def in_input_order(computed: "Computed", positions: "np.ndarray", atoms: "Atoms", order: "np.ndarray",
                   source: Path) -> "Computed":
    """The results of the species-grouped structure ``atoms[order]`` back in ``atoms``' order,
    once the output's ``positions`` (Å, grouped) are checked to be the input's (read from ``source``)."""
    import numpy as np

    check_positions(atoms.positions[order], positions, atoms.cell.array, atoms.pbc, source)
    forces = np.empty_like(computed["forces"])
    forces[order] = computed["forces"]
    computed["forces"] = forces
    return computed
