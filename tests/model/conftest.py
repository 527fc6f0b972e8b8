"""Fixtures shared by the deepmd-kit and LAMMPS interop tests of this folder."""

from __future__ import annotations

import pytest

from dpa3_al.model import load_model
from dpa3_al.model.interop.deepmd_export import export_checkpoint

from .interop_helpers import DP_PY, NO_DEEPMD, REF, exported_option, run_deepmd

# name -> (option set, or a reference checkpoint and its head): the models the tests freeze
FROZEN = {"dynamic": "dynamic", "compress_split": "compress_split", "dpa31_float32": "dpa31_float32",
          "sharefit-hco": (REF / "multitask" / "sharefit" / "model.ckpt.pt", "hco")}


@pytest.fixture(scope="session")
def frozen_models(tmp_path_factory) -> dict[str, tuple[object, object]]:
    """name -> (our model, its export frozen by `dp --pt freeze`): every freeze of the session in two
    deepmd-kit processes side by side, instead of one `dp` process (~18 s) per test."""
    if not DP_PY.exists():
        pytest.skip(NO_DEEPMD)
    work = tmp_path_factory.mktemp("frozen")
    jobs, out = [], {}
    for name, what in FROZEN.items():
        if isinstance(what, str):                  # an option set: our model, exported whole
            model, exported = exported_option(what, work)
            jobs.append({"freeze": exported, "output": work / f"{name}.pth"})
        else:                                      # one head of a whole multi-task export
            src, head = what
            export_checkpoint(src, work / f"{name}.pt")
            model = load_model(src, head=head)
            jobs.append({"freeze": work / f"{name}.pt", "output": work / f"{name}.pth", "head": head})
        out[name] = (model, work / f"{name}.pth")
    run_deepmd(jobs, work)
    return out
