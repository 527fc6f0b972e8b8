"""Where did each loop arm spend its labels? Selected frames per (start cell, temperature), summed
over the seeds and iterations of a benchmark tag (selection.json + each task's task.json).

    python bench/al/label_share.py TAG [ARMS] [SEEDS] [WORK]
    python bench/al/label_share.py lever-steps1600 a,b,o,v 1,2,3
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    tag = argv[0]
    arms = argv[1].split(",") if len(argv) > 1 else ["a", "b"]
    seeds = [int(s) for s in argv[2].split(",")] if len(argv) > 2 else [1, 2, 3]
    root = (Path(argv[3]) if len(argv) > 3 else Path("bench/out/al")) / "runs" / tag
    for arm in arms:
        count: Counter = Counter()
        for seed in seeds:
            run = root / f"{arm}-s{seed}"
            for sel in sorted(run.glob("iter-*/select/selection.json")):
                for rec in json.loads(sel.read_text())["selected"]:
                    task = json.loads((sel.parent.parent / "explore" / rec["task"] / "task.json").read_text())
                    count[(task["formula"], int(task["md"]["temperature"]))] += 1
        total = sum(count.values())
        if total:
            print(f"{arm}: {total} labels; " + "; ".join(f"{f}@{t} K {100 * n / total:.0f} %"
                                                       for (f, t), n in sorted(count.items(), key=lambda kv: (kv[0][1], kv[0][0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
