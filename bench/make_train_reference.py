"""Regenerate tests/data/train-reference/adamw_steps with deepmd-kit (installed in its own venv):

    python bench/make_train_reference.py --deepmd /work/dp-venv/bin/dp

Writes frame/ (water frame 0 + a synthetic virial label), input.json, init.pt (deepmd-kit's
initial weights: one step at lr 1e-12) and after4.pt (after four steps at lr 1e-3 -> 2e-4);
the checkpoints keep only their ``model`` entry. See tests/data/train-reference/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bench_train import SMALL, deepmd_input
from common import ROOT

OUT = ROOT / "tests" / "data" / "train-reference" / "adamw_steps"
STRIP = ("import sys, torch; o = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
         "torch.save({'model': o['model']}, sys.argv[2])")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deepmd", required=True, help="deepmd-kit's dp executable")
    args = ap.parse_args()
    frame = OUT / "frame"
    shutil.rmtree(OUT, ignore_errors=True)
    (frame / "set.000").mkdir(parents=True)
    src = ROOT / "tests" / "data" / "water" / "data_0"
    for f in src.glob("*.raw"):
        shutil.copy(f, frame / f.name)
    for f in (src / "set.000").glob("*.npy"):
        np.save(frame / "set.000" / f.name, np.load(f)[:1])
    v = np.random.default_rng(7).normal(0, 2.0, (3, 3))
    np.save(frame / "set.000" / "virial.npy", ((v + v.T) / 2).reshape(1, 9))
    model = {**SMALL, "descriptor": {**SMALL["descriptor"], "n_dim": 16, "e_dim": 8, "a_dim": 4, "nlayers": 2},
             "fitting": {**SMALL["fitting"], "neuron": [16, 16]}, "precision": "float64"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    python = str(Path(args.deepmd).with_name("python"))
    for name, lr, steps in (("init", (1e-12, 1e-12), 1), ("after4", (1e-3, 2e-4), 4)):
        inp = deepmd_input(model, [frame], [], steps, lr=lr, decay_steps=1)
        inp["training"]["save_freq"] = steps
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "input.json").write_text(json.dumps(inp, indent=1))
            run = subprocess.run([args.deepmd, "--pt", "train", "input.json", "--skip-neighbor-stat"], cwd=tmp,
                                 env=env, capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"dp train failed ({run.returncode}):\n{run.stderr[-3000:]}")
            subprocess.run([python, "-c", STRIP, str(Path(tmp) / f"model.ckpt-{steps}.pt"), str(OUT / f"{name}.pt")],
                           check=True)
        if name == "after4":
            inp["training"]["training_data"]["systems"] = ["frame"]
            (OUT / "input.json").write_text(json.dumps(inp, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
