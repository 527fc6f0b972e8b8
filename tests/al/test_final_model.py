"""The final model: after the last iteration the committee trains on every label (final-train)
and the best member by validation error becomes final/model.pt (final-evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

from dpa3_al.evaluation import pick_final
from dpa3_al.steps import evaluate


def _member(root: Path, k: int, val_f: float | None, train_f: float = 0.5) -> Path:
    from dpa3_al.model import ModelConfig, build_model, save_model

    folder = root / f"member-{k:03d}"
    folder.mkdir(parents=True)
    save_model(build_model(ModelConfig.tiny(type_map=["Au", "Cu"]), seed=k), folder / "model.pt")
    (folder / "checkpoint.pt").write_bytes(b"not the model")
    (folder / "train_summary.json").write_text(json.dumps({"errors": {"train": {"f": train_f},
                                                                      "validation": {"f": val_f}}}))
    return folder


def test_the_member_with_the_lowest_validation_error_is_the_final_model(tmp_path):
    members = [_member(tmp_path / "train", k, v) for k, v in enumerate([0.09, 0.04, 0.07])]
    info = pick_final(members, tmp_path / "final")
    assert info["member"] == 1 and "0.04" in info["reason"]
    assert (tmp_path / "final" / "model.pt").read_bytes() == (members[1] / "model.pt").read_bytes()
    assert info["committee"] == [f"committee/member-{k:03d}.pt" for k in range(3)]
    assert json.loads((tmp_path / "final" / "final.json").read_text()) == info


def test_without_validation_errors_the_training_error_decides(tmp_path):
    members = [_member(tmp_path / "train", k, None, t) for k, t in enumerate([0.3, 0.2])]
    assert pick_final(members, tmp_path / "final")["member"] == 1


def test_final_evaluate_writes_the_final_model_and_its_test_errors(tmp_path):
    from tests.model.train_helpers import emt_system

    members = [_member(tmp_path / "train", k, v) for k, v in enumerate([0.05, 0.03])]
    init = emt_system(tmp_path / "init", n_frames=4, seed=1)
    dataset = emt_system(tmp_path / "dataset" / "sys", n_frames=3, seed=2).parent
    test = emt_system(tmp_path / "test", n_frames=2, seed=3)
    out = evaluate(config={}, models=members, selection=None, labeled=[], dataset=dataset, init_data=[init],
                   test_data=[test], calibration=None, iteration=3, final=True, workdir=tmp_path / "final")
    assert json.loads((out / "final.json").read_text())["member"] == 1
    test_json = json.loads((out / "test.json").read_text())
    assert test_json["iteration"] == "final" and test_json["labels"] == 7           # every label: 4 + 3
    assert [r["member"] for r in test_json["rows"]] == ["0", "1", "mean"]
    assert not (out / "calibration.json").exists()


def test_the_loop_ends_with_final_training_on_every_label():
    """The workflow's wiring: final-train and final-evaluate run when decide says done, on the
    collected dataset, continuing from the iteration's models."""
    from dflow.python import PythonOPTemplate

    from dpa3_al.common.typed_config import from_dict
    from dpa3_al.workflows import Plan
    from dpa3_al.workflows.argo import ArgoEngine
    from dpa3_al.workflows.engine import iter_steps
    from dpa3_al.workflows.loop import build_entry

    plan = from_dict(Plan, {"workflow": {"engine": "argo"}, "loop": {"n_models": 2, "init_data": ["d"]}})
    engine = ArgoEngine(plan.workflow, offline=True)
    engine.configure()
    steps = {s.name: s for s in iter_steps(build_entry(engine, plan.loop)) if isinstance(s.template, PythonOPTemplate)}
    final_train, final_eval, nxt = steps["final-train"], steps["final-evaluate"], steps.get("next-iteration")
    assert "done" in str(final_train.when) and "== true" in str(final_train.when)
    assert str(final_eval.when) == str(final_train.when)
    assert "collect" in str(final_train.inputs.artifacts["dataset"].source)
    assert "train" in str(final_train.inputs.artifacts["init_models"].source)
    assert "final-train" in str(final_eval.inputs.artifacts["models"].source)
    assert final_eval.inputs.parameters["final"].value is True
    assert nxt is None or "== false" in str(nxt.when)
    plan = from_dict(Plan, {"workflow": {"engine": "argo", "final_training": False}, "loop": {"n_models": 2}})
    engine = ArgoEngine(plan.workflow, offline=True)
    engine.configure()
    names = {s.name for s in iter_steps(build_entry(engine, plan.loop))}
    assert "final-train" not in names and "evaluate" in names


def test_status_names_the_final_model(tmp_path):
    """`dpa3-al status` says which model the run ends with (final/final.json, through FinalChoice)."""
    from dpa3_al.commands.run import final_model_line
    from dpa3_al.evaluation import FinalChoice

    assert final_model_line(tmp_path) is None                       # a run still going: no line
    FinalChoice("model.pt", 2, "lowest validation force RMSE 0.03 eV/Å of 4 members",
                ["committee/member-000.pt"]).write((tmp_path / "final").mkdir() or tmp_path / "final")
    line = final_model_line(tmp_path)
    assert line.startswith(f"final model: {tmp_path / 'final' / 'model.pt'} (member 2: lowest validation")
    assert FinalChoice.read(tmp_path / "final").committee == ["committee/member-000.pt"]
    (tmp_path / "final" / "final.json").write_text("{not json")
    assert FinalChoice.read(tmp_path / "final") is None and final_model_line(tmp_path) is None


def test_report_says_why_a_finished_run_has_no_final_model(tmp_path):
    """A succeeded run without final/ (workflow.final_training: false) is not 'no final model yet'."""
    from dpa3_al.report.accuracy import _final_blocks
    from dpa3_al.report.data import RunData

    def text(status):
        run = RunData(tmp_path, "r", {"status": status}, [])
        return " ".join(b.text for b in _final_blocks(run)[1:])

    assert "workflow.final_training: false" in text("succeeded")
    assert "No final model yet" in text("running") and "final_training" not in text("running")
