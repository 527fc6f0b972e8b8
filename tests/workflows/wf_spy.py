"""A fake step function for calling OPs in-process: it records how the OP called it.

The OP tests pass ``func="tests.workflows.wf_spy:record"``; ``record`` accepts keyword
arguments only (an OP that passed a positional argument fails), keeps them in ``CALLS``
with whether ``workdir`` existed at call time, and returns what ``reply(kwargs)`` returns
(a test sets ``reply`` with ``monkeypatch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

FUNC = "tests.workflows.wf_spy:record"
CALLS: list[dict[str, Any]] = []
reply: Callable[[dict[str, Any]], Any] = lambda kwargs: None  # noqa: E731


def record(**kwargs: Any) -> Any:
    workdir = kwargs.get("workdir")
    CALLS.append({"kwargs": kwargs, "workdir_existed": workdir is not None and Path(workdir).is_dir()})
    return reply(kwargs)
