"""Train one committee member exactly as the loop's train step does (arm (c) of bench_al.py).

    python bench/al/train_member.py SPEC.json

SPEC: {"train": <the run config's train section>, "data": [dirs], "init_model": path | null,
"member": i, "iteration": k, "workdir": dir}. Calls the same function as the workflow's train
step (``dpa3_al.steps:train_member``), so seeds, validation split, init-model
schedule and stopping are the loop's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:                  # the workflow's step adapter (after the restructure)
        from dpa3_al.steps import train_member
    except ImportError:   # before it: the trainer's own step function
        from dpa3_al.model.train.trainer import train_member

    init = Path(spec["init_model"]) if spec.get("init_model") else None
    train_member(spec["train"], [Path(p) for p in spec["data"]], init, spec["member"], spec["iteration"],
                 Path(spec["workdir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
