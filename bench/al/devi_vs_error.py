"""Does the committee deviation rank frames by their true error? For one iteration of a finished
benchmark loop run: every explored frame's max_devi_f (model_devi.csv) against the committee
mean's true errors on it (EMT labels), Spearman correlations, and the share of the squared error
that the 10 highest-deviation frames hold.

    python bench/al/devi_vs_error.py RUN_DIR ITERATION
"""
import sys, json, numpy as np
from pathlib import Path
from ase.io import read
from ase.calculators.emt import EMT
from dpa3_al.model import DPA3Calculator
from scipy.stats import spearmanr
run = Path(sys.argv[1]); it = int(sys.argv[2])
d = run / f"iter-{it:06d}"
models = sorted(d.glob("train/member-*/model.pt"))
calcs = [DPA3Calculator(str(m)) for m in models]
rows = []
for task in sorted(d.glob("explore/task-*")):
    t = json.loads((task/"task.json").read_text())
    frames = read(task/"traj.extxyz", ":")
    import csv
    devi = list(csv.DictReader(open(task/"model_devi.csv")))
    for a, dv in zip(frames, devi):
        a = a.copy(); a.calc = EMT(); fref = a.get_forces(); eref = a.get_potential_energy()/len(a)
        fs = []; es=[]
        for c in calcs:
            b = a.copy(); b.calc = c; fs.append(b.get_forces()); es.append(b.get_potential_energy()/len(a))
        fs = np.array(fs); fm = fs.mean(0)
        err_atom = np.linalg.norm(fm - fref, axis=1)
        err0 = np.linalg.norm(fs[0]-fref, axis=1)
        dev_atom = np.sqrt(((fs - fm)**2).sum(-1).mean(0))
        rows.append(dict(T=t.get("temp", t.get("temperature")), task=task.name, devi=float(dv["max_devi_f"]), avg=float(dv["avg_devi_f"]),
            maxerr=err_atom.max(), rmse=np.sqrt((( fm-fref)**2).mean()), err0max=err0.max(), fmag=np.abs(fref).max(),
            epa=eref, rel=float(dv["max_devi_f"])/ (np.linalg.norm(fref,axis=1).mean()+0.5)))
import pandas as pd
df = pd.DataFrame(rows)
print(df.groupby("task")[["devi","maxerr","rmse","epa"]].mean())
for k in ["maxerr","rmse","err0max"]:
    print(k, "spearman devi", spearmanr(df.devi, df[k]).correlation, "avg", spearmanr(df.avg, df[k]).correlation, "rel", spearmanr(df.rel, df[k]).correlation)
df = df.sort_values("devi", ascending=False)
print("share of the squared frame force error in the 10 highest-deviation frames",
      round(float((df.rmse ** 2).head(10).sum() / (df.rmse ** 2).sum()), 3), "(random: %.3f)" % (10 / len(df)))
