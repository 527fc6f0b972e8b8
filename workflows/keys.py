"""Stable step keys: ``iter-000003--run-explore-000017``.

Every step of the loop has a key built by :func:`step_key`. dflow uses the key to find a
step again (reuse on resume, ``query_step(key=...)``), and the run directory uses it to
know where a step's outputs go. The format is fixed because users and tools grep for it:

- ``iter-NNNNNN``: the iteration, six digits;
- ``--``: separator (step names never contain two dashes in a row);
- the step name (one of :data:`STEP_NAMES` or a helper name such as ``next-iteration``);
- ``-NNNNNN``: optional index of a fan-out step (the group index of a grouped fan-out).

This module is stdlib-only: the step runner and the run-directory code import it without
importing dflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["STEP_NAMES", "FANOUT_STEPS", "HEAVY_STEPS", "BOOTSTRAP_STEPS", "FINAL_STEPS", "CALL_NAMES", "base_step",
           "StepKey", "step_key", "parse_step_key",
           "iteration_name"]

#: The steps of one iteration block, in execution order.
STEP_NAMES = ("train", "prep-explore", "run-explore", "select", "prep-label", "run-label",
              "collect", "evaluate", "decide")
#: Steps before iteration 0 of a run without initial data: perturbed starting structures,
#: labeled by the labeling steps (same OPs and functions as in the loop, prefixed names).
BOOTSTRAP_STEPS = ("bootstrap", "bootstrap-prep-label", "bootstrap-run-label", "bootstrap-collect")
#: Steps after the last iteration's decide (keyed in that iteration): the committee trains on
#: every label, then the final model is chosen (same OPs and functions as train and evaluate).
FINAL_STEPS = ("final-train", "final-evaluate")
#: Names a run config may give a function or settings for (``LoopSpec.calls``).
CALL_NAMES = STEP_NAMES + ("bootstrap",)
#: Steps that fan out over tasks (one dflow slice per group of ``group_size`` tasks).
FANOUT_STEPS = ("run-explore", "run-label")
#: Steps that the ``dispatcher`` engine sends to the batch scheduler.
HEAVY_STEPS = ("train", "run-explore", "run-label")

_ITER_RE = r"iter-(?P<iteration>\d{6})"
_KEY_RE = re.compile(_ITER_RE + r"--(?P<name>[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*)(?:-(?P<index>\d{6}))?$")


@dataclass(frozen=True)
class StepKey:
    """A parsed step key."""

    iteration: int
    name: str
    index: int | None = None

    def __str__(self) -> str:
        return step_key(self.iteration, self.name, self.index)


def base_step(name: str) -> str:
    """The loop step whose OP, function, settings and policy a step uses
    (``"bootstrap-run-label"`` -> ``"run-label"``, ``"final-train"`` -> ``"train"``; other names unchanged)."""
    for prefix in ("bootstrap-", "final-"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def iteration_name(iteration: int | str) -> str:
    """``3 -> "iter-000003"``; a string (a dflow placeholder such as
    ``"{{inputs.parameters.iter_name}}"``) is returned unchanged."""
    if isinstance(iteration, str):
        return iteration
    if iteration < 0 or iteration > 999_999:
        raise ValueError(f"iteration {iteration} is outside 0..999999")
    return f"iter-{iteration:06d}"


def step_key(iteration: int | str, name: str, index: int | str | None = None) -> str:
    """The key of one step.

    Args:
        iteration: iteration number, or a dflow placeholder resolving to ``iter-NNNNNN``.
        name: step name, lower case words joined by single dashes.
        index: fan-out index, or a placeholder (``"{{item}}"``, rendered by dflow with
            the sequence format ``%06d``); None for a step that does not fan out.

    >>> step_key(3, "run-explore", 17)
    'iter-000003--run-explore-000017'
    """
    if "--" in name or not re.fullmatch(r"[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*", name):
        raise ValueError(f"step name {name!r} must be lower-case words joined by single dashes")
    key = f"{iteration_name(iteration)}--{name}"
    if index is None:
        return key
    if isinstance(index, str):
        return f"{key}-{index}"
    if index < 0 or index > 999_999:
        raise ValueError(f"step index {index} is outside 0..999999")
    return f"{key}-{index:06d}"


def parse_step_key(key: str | None) -> StepKey | None:
    """Inverse of :func:`step_key`; None for keys that are not ours (dflow helper steps).

    A trailing six-digit group is read as the index: step names never end in six digits.
    """
    if not key:
        return None
    match = _KEY_RE.match(key)
    if not match:
        return None
    index = match.group("index")
    return StepKey(int(match.group("iteration")), match.group("name"), int(index) if index else None)
