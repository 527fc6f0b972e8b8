"""The run report: numbers equal selection.json's, self-contained HTML, idempotent, missing pieces
reported instead of crashing, learning curves read by header names, the CLI verb.

Run directories are built with the project's own writers (MD task folders, ``select``, the
labeled dataset, ``schedule.decide``) on synthetic deviations; label task statuses, learning
curves and state.json are written in their documented formats."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from dpa3_al.cli import main
from dpa3_al.dataset import LabeledDataset, Provenance
from dpa3_al.explore.config import StopConfig
from dpa3_al.explore.deviation import DeviCsvWriter
from dpa3_al.explore.tasks import MDSettings, Task, atomic_write_json, write_task
from dpa3_al.label import LabelFailure
from dpa3_al.label.results import attach_results
from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import from_dict
from dpa3_al.report import build_report, load_run, read_lcurve
from dpa3_al.steps import decide
from dpa3_al.select import SelectConfig, select

nan = float("nan")
EXPLORE = {"stages": [{"max_iter": 3, "conv_accuracy": 0.6, "task_groups": [
    {"name": "bulk", "configurations": [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.61}}],
     "temps": [300]}]}]}
LCURVE_HEADER = "step,lr,rmse_e_trn,rmse_f_trn,rmse_v_trn,rmse_e_val,rmse_f_val,rmse_v_val,loss_trn,loss_val,wall_s"


# ----------------------------------------------------------------------------- run directory builders
def _ar4() -> Atoms:
    pos = [[1.0, 1.0, 1.0], [4.8, 1.0, 1.0], [1.0, 4.8, 1.0], [1.0, 1.0, 4.8]]
    return Atoms("Ar4", positions=pos, cell=np.eye(3) * 8.0, pbc=True)


def make_task(explore: Path, index: int, group: str, rows: list[tuple[float, float]], *, iteration: int,
              status: dict | None) -> Path:
    """An MD task folder (task.json, traj.extxyz, model_devi.csv, status.json) with hand-made
    deviations: rows of (max_devi_f eV/Å, max_devi_v eV/atom), one frame every 10 steps."""
    md = MDSettings("nvt-langevin", 300.0, None, 1.0, 100, 10, 0.01, 100.0, 1000.0)
    task = Task(name=f"task-{index:06d}", index=index, group=group, stage=0, iteration=iteration, conf_label="ar4",
                seed=index, md=md, stop=StopConfig(), atoms=_ar4())
    folder = explore / task.name
    write_task(task, folder)
    csv = DeviCsvWriter(folder / "model_devi.csv")
    with open(folder / "traj.extxyz", "w") as fh:
        for i, (f, v) in enumerate(rows):
            frame = _ar4()
            frame.positions[0] += [0.01 * i, 0.02 * index, 0.03 * iteration]
            frame.info["step"] = 10 * i
            ase.io.write(fh, frame, format="extxyz")
            csv.write(10 * i, {"max_devi_f": f, "min_devi_f": f / 2, "avg_devi_f": f / 1.5, "devi_e": 1e-3,
                               "max_devi_v": v, "min_devi_v": v / 3, "avg_devi_v": v / 2})
    csv.close()
    if status is not None:
        atomic_write_json(folder / "status.json", status)
    return folder


def write_member(train: Path, index: int, *, rows: int = 4, summary: dict | None = None) -> Path:
    """A committee member folder: model.pt (placeholder bytes), lcurve.csv, train_summary.json."""
    folder = train / f"member-{index:03d}"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    lines = [LCURVE_HEADER] + [f"{100 * s},1e-3,{0.1 / (s + 1)},{0.5 / (s + 1)},nan,{0.12 / (s + 1)},"
                               f"{0.6 / (s + 1)},nan,1.0,1.1,{s}" for s in range(rows)]
    (folder / "lcurve.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        atomic_write_json(folder / "train_summary.json", summary)
    return folder


def write_labels(label: Path, outcomes: list[str | None]) -> None:
    """label/batch-NNNNNN/task-NNNNNN/status.json: None = ok, else the failure reason."""
    for i, reason in enumerate(outcomes):
        status = {"status": "ok"} if reason is None else {"status": "failed", "reason": reason, "detail": "synthetic"}
        atomic_write_json(label / f"batch-{i:06d}" / f"task-{i:06d}" / "status.json", status)


def write_dataset(iter_dir: Path, previous: Path | None, iteration: int, n_frames: int, failures: list[str]) -> Path:
    """The iteration's dataset: the previous one's frames plus ``n_frames`` new EMT-free synthetic ones."""
    import shutil

    root = iter_dir / "dataset"
    if previous is not None:
        shutil.copytree(previous, root, ignore=shutil.ignore_patterns(".*"))
    store = LabeledDataset(root)
    rng = np.random.default_rng(iteration)
    frames = []
    for _ in range(n_frames):
        atoms = _ar4()
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(attach_results(atoms, energy=-1.0, forces=rng.normal(0, 0.1, (4, 3))))
    items = frames + [LabelFailure(reason=r, detail="synthetic", workdir=iter_dir / "label") for r in failures]
    store.add(items, Provenance(iteration=iteration, source="label"))
    return root


def make_iteration(run: Path, index: int, tasks: list[list[tuple[float, float]]], *, sel: dict,
                   labels: list[str | None], previous_dataset: Path | None, n_members: int = 3,
                   schedule: Path | None = None) -> Path:
    """One complete iteration folder, written with the project's real select / dataset / decide."""
    folder = run / f"iter-{index:06d}"
    for m in range(n_members):
        write_member(folder / "train", m, summary={"converged": m != 1, "reason": f"member {m} reason"})
    dirs = [make_task(folder / "explore", t, "bulk" if t % 2 == 0 else "surface", rows, iteration=index,
                      status={"status": "finished", "reason": None} if t != 1
                      else {"status": "stopped_early", "reason": "min_distance"})
            for t, rows in enumerate(tasks)]
    select(dirs, from_dict(SelectConfig, sel, path="select"), folder / "select")
    write_labels(folder / "label", labels)
    dataset = write_dataset(folder, previous_dataset, index, sum(r is None for r in labels),
                            [r for r in labels if r is not None])
    decide({"explore": EXPLORE}, schedule, folder / "select", dataset, index, folder / "decide")
    return folder


def write_state(run: Path, status: str, iteration: int, stage: str, failures: list[dict] | None = None,
                steps: dict | None = None) -> None:
    atomic_write_json(run / "state.json", {
        "name": run.name, "engine": "local", "workflow_id": run.name, "status": status, "iteration": iteration,
        "stage": stage, "updated": 1767000000.0, "driver_pid": None, "steps": steps or {},
        "failures": failures or [], "published": [], "message": ""})


def rng_rows(seed: int, n: int, virial: bool) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.0, 0.3, n)
    return [(float(x), float(rng.uniform(0, 0.02)) if virial else nan) for x in f]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """Two complete iterations: iteration 0 without virial deviations, iteration 1 with virial levels."""
    run = tmp_path / "runs" / "cu"
    run.mkdir(parents=True)
    # the committee size and conv_accuracy come from the run's frozen config (JSON is YAML)
    (run / "config.yaml").write_text(json.dumps({"train": {"training": {"numb_models": 3}}, "explore": EXPLORE}))
    tasks0 = [rng_rows(0, 12, False), rng_rows(1, 5, False) + [(nan, nan)], rng_rows(2, 9, False)]
    it0 = make_iteration(run, 0, tasks0, sel={"f_lo": 0.05, "f_hi": 0.2, "max_select": 4}, labels=[None, None,
                         "scf_not_converged", None], previous_dataset=None)
    tasks1 = [rng_rows(3, 10, True), rng_rows(4, 7, True), rng_rows(5, 11, True), rng_rows(6, 4, True)]
    make_iteration(run, 1, tasks1, sel={"f_lo": 0.08, "f_hi": 0.25, "v_lo": 0.005, "v_hi": 0.015, "max_select": 5},
                   labels=[None, "timeout", None, None, "timeout"], previous_dataset=it0 / "dataset",
                   schedule=it0 / "decide" / "schedule.json")
    write_state(run, "succeeded", 1, "decide")
    return run


def md_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of every Markdown table whose first header cell is ``first_header``."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells if cells[0] == first_header else []
        elif header and not set(line) <= set("| -"):
            rows.append(dict(zip(header, cells)))
    return rows


# ----------------------------------------------------------------------------- tests
def test_report_numbers_equal_selection_json_and_label_and_dataset_files(run_dir):
    out = build_report(run_dir)
    assert out == run_dir / "report"
    md = (out / "report.md").read_text()
    overview = md_table(md, "iteration")
    assert [r["iteration"] for r in overview] == ["0", "1"]
    for row in overview:
        folder = run_dir / f"iter-{int(row['iteration']):06d}"
        sel = json.loads((folder / "select" / "selection.json").read_text())
        assert sel["n_frames"] > 0 and sel["counts"]["candidate"] > 0
        for name in ("accurate", "candidate", "failed"):
            assert int(row[name]) == sel["counts"][name]
        assert int(row["frames"]) == sel["n_frames"]
        assert row["accurate ratio"] == f"{sel['ratios']['accurate']:.4f}"
        assert int(row["selected"]) == sel["n_selected"] == len(sel["selected"])
        statuses = [json.loads(p.read_text()) for p in (folder / "label").glob("*/task-*/status.json")]
        assert int(row["labeled"]) == sum(s["status"] == "ok" for s in statuses)
        assert int(row["label failed"]) == sum(s["status"] == "failed" for s in statuses)
        assert int(row["dataset frames"]) == LabeledDataset(folder / "dataset").summary().frames
        schedule = json.loads((folder / "decide" / "schedule.json").read_text())
        assert row["decision"] == schedule["decisions"][-1]["action"]
    # the per-iteration class tables repeat the same counts, with the ratios
    classes = md_table(md, "class")
    assert len(classes) == 8
    for k, it in enumerate((0, 1)):
        sel = json.loads((run_dir / f"iter-{it:06d}" / "select" / "selection.json").read_text())
        for row in classes[4 * k: 4 * k + 3]:
            assert int(row["frames"]) == sel["counts"][row["class"]]
            assert row["ratio"] == f"{sel['ratios'][row['class']]:.4f}"
    # failures by reason: labels and MD tasks stopped early
    assert md_table(md, "label failure reason") == [{"label failure reason": "scf_not_converged", "frames": "1"},
                                                    {"label failure reason": "timeout", "frames": "2"}]
    assert md_table(md, "stopped early: reason")[0] == {"stopped early: reason": "min_distance", "MD tasks": "1"}
    assert "failure records: scf_not_converged 1, timeout 2" in md                 # from the dataset's commits
    # the decision and its reason as schedule.json says
    reason = json.loads((run_dir / "iter-000001" / "decide" / "schedule.json").read_text())["decisions"][-1]["reason"]
    assert reason in md
    # learning curves and training convergence per member
    members = md_table(md, "member")
    assert len(members) == 6 and members[0]["last step"] == "300"
    assert float(members[0]["F RMSE train (eV/Å)"]) == pytest.approx(0.5 / 4)
    assert members[1]["converged (train_summary.json)"] == "no: member 1 reason"


def test_report_says_when_the_trust_band_does_not_discriminate(run_dir, tmp_path):
    # the fixture's iteration 1 holds about half its frames as candidates: no hint
    assert "does not discriminate" not in (build_report(run_dir) / "report.md").read_text()
    # a band that holds nearly every frame from iteration 1 on: the report says what to change
    run = tmp_path / "runs" / "wide"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps({"train": {"training": {"numb_models": 3}}, "explore": EXPLORE}))
    wide = {"f_lo": 0.001, "f_hi": 0.5, "max_select": 4}
    it0 = make_iteration(run, 0, [rng_rows(0, 12, False)], sel=wide, labels=[None] * 4, previous_dataset=None)
    make_iteration(run, 1, [rng_rows(1, 12, False)], sel=wide, labels=[None] * 4, previous_dataset=it0 / "dataset",
                   schedule=it0 / "decide" / "schedule.json")
    write_state(run, "succeeded", 1, "decide")
    md = (build_report(run) / "report.md").read_text()
    assert md.count("does not discriminate") == 1                # iteration 1 only: iteration 0's committee is new
    assert "100% of the explored frames are candidates" in md and "train.training.numb_steps" in md


def test_html_is_self_contained_and_shows_every_plot(run_dir):
    out = build_report(run_dir)
    html = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(sources) == len(pngs) >= 9
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "href=" not in html and "<link" not in html and "<script" not in html and "http" not in html
    # the PNG files are the same images the page embeds
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {(out / name).read_bytes() for name in pngs}
    assert {"iter-000000-devi-f.png", "iter-000001-devi-f.png", "iter-000001-devi-v.png", "iter-000000-lcurve.png",
            "overview-ratios.png", "overview-failures.png", "overview-dataset.png"} <= set(pngs)
    assert "iter-000000-devi-v.png" not in pngs          # iteration 0 recorded no virial deviation
    assert "No virial deviations recorded" in (out / "report.md").read_text()


def test_report_is_idempotent_and_writes_only_into_out(run_dir, tmp_path):
    before = sorted(p for p in run_dir.rglob("*") if p.is_file())
    out = build_report(run_dir, tmp_path / "elsewhere")
    assert sorted(p for p in run_dir.rglob("*") if p.is_file()) == before        # the run is only read
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "iter-000007-lcurve.png").write_bytes(b"stale plot of ours")
    (out / "mine.png").write_bytes(b"a file of the user")
    build_report(run_dir, out)
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert second.pop("mine.png") == b"a file of the user"
    assert second == first                      # same bytes, stale plot removed, no temporary files left


def test_running_iteration_missing_member_and_gaps_are_reported(run_dir):
    # iteration 2 is running: one member failed, one still training, one MD task running, nothing selected
    it2 = run_dir / "iter-000002"
    write_member(it2 / "train", 0)
    (it2 / "train" / "member-002").mkdir(parents=True)
    make_task(it2 / "explore", 0, "bulk", rng_rows(7, 5, False), iteration=2, status={"status": "finished"})
    make_task(it2 / "explore", 1, "bulk", rng_rows(8, 3, False), iteration=2, status=None)
    failed = {"key": "iter-000002--train-000001", "name": "train", "phase": "Failed", "iteration": 2, "index": 1,
              "log": "/x/log.txt", "reason": "exit status 1 (2 attempts)"}
    write_state(run_dir, "running", 3, "train", steps={failed["key"]: failed})    # iteration 3: no folder yet
    md = (build_report(run_dir) / "report.md").read_text()
    assert "## Iteration 2, stage 0: incomplete (run running)" in md
    assert "## Iteration 3: in progress" in md and "iter-000003/ is missing" in md
    assert "iter-000002--train-000001: exit status 1 (2 attempts)" in md
    members = [r for r in md_table(md, "member") if r["member"].startswith("member-00")][-3:]
    assert [(r["member"], r["model"]) for r in members] == [("member-000", "model.pt"), ("member-001", "missing"),
                                                           ("member-002", "missing")]
    assert "missing: no folder in train/" in md and "no model file (training failed or still running)" in md
    assert "2 MD tasks (finished 1, not_run 1); 8 recorded frames" in md
    assert "select: no selection.json yet" in md and "decide: no schedule.json yet" in md
    overview = md_table(md, "iteration")
    assert [r["decision"] for r in overview] == ["continue", "continue", "incomplete (run running)", "in progress"]
    assert overview[2]["accurate"] == "-" and overview[2]["frames"] == "-"


def test_failed_run_with_a_missing_iteration_folder(tmp_path):
    run = tmp_path / "r"
    make_task(run / "iter-000001" / "explore", 0, "bulk", rng_rows(9, 4, False), iteration=1,
              status={"status": "stopped_early", "reason": "nan"})
    fail = {"key": "iter-000001--run-explore-000000", "name": "run-explore", "phase": "Failed", "iteration": 1,
            "reason": "run-explore: only 0 tasks succeeded, 0.8 needed", "log": "/l"}
    write_state(run, "failed", 1, "run-explore", failures=[fail], steps={fail["key"]: fail})
    data = load_run(run)
    assert [it.exists for it in data.iterations] == [False, True]
    md = (build_report(run) / "report.md").read_text()
    assert "iter-000000/ is missing" in md and "status: failed" in md
    assert md_table(md, "step")[0]["reason"] == "run-explore: only 0 tasks succeeded, 0.8 needed"
    assert "Iteration 1, stage 0: incomplete (run failed)" in md
    assert "Trust levels unknown" in md and "Dataset: missing" in md


def test_empty_selection_and_no_frames_do_not_crash(tmp_path):
    run = tmp_path / "empty"
    folder = run / "iter-000000"
    dirs = [make_task(folder / "explore", 0, "bulk", [], iteration=0, status={"status": "stopped_early",
                                                                              "reason": "error"})]
    select(dirs, SelectConfig(), folder / "select")
    decide({"explore": EXPLORE}, None, folder / "select", None, 0, folder / "decide")
    write_state(run, "succeeded", 0, "decide")
    out = build_report(run)
    md = (out / "report.md").read_text()
    assert "Empty selection" in md and "no frames were recorded" in md
    assert "no finite deviation recorded" in md and "Labeling: no finished label task (0 frames selected)" in md
    row = md_table(md, "iteration")[0]
    assert (row["frames"], row["accurate"], row["accurate ratio"], row["selected"]) == ("0", "0", "-", "0")
    assert not list(out.glob("iter-000000-devi-*.png"))


def test_just_submitted_run_and_unusable_files(tmp_path, run_dir):
    fresh = tmp_path / "fresh"
    write_state(fresh, "submitted", None, None)
    md = (build_report(fresh) / "report.md").read_text()
    assert "status: submitted" in md and "0 iterations" in md and "No stage known yet." in md
    # a corrupt selection.json, a status that is not a JSON object, an lcurve without a step column
    it1 = run_dir / "iter-000001"
    (it1 / "select" / "selection.json").write_text('{"n_frames": 3, "coun')
    (it1 / "explore" / "task-000000" / "status.json").write_text("[1, 2]")
    (it1 / "train" / "member-002" / "lcurve.csv").write_text("epoch,rmse_f_trn\n1,0.2\n")
    md = (build_report(run_dir) / "report.md").read_text()
    assert "selection.json unreadable (" in md and "status.json unreadable (a JSON list, not an object)" in md
    assert "lcurve.csv unreadable (header ['epoch', 'rmse_f_trn'] does not start with step)" in md
    assert md_table(md, "iteration")[1]["accurate"] == "-"


def test_read_lcurve_by_header_names(tmp_path):
    path = tmp_path / "lcurve.csv"
    path.write_text("step,lr,rmse_e_trn,rmse_f_trn,rmse_v_trn,rmse_e_val,rmse_f_val,rmse_v_val,loss_trn\n"
                    "0,1e-3,0.1,0.5,nan,0.2,0.6,nan,3\n100,1e-3,0.05,0.3,nan,0.1,0.4,nan,2\n200,1e-3,0.0")
    curve = read_lcurve(path)
    assert curve.steps.tolist() == [0.0, 100.0]                       # the truncated last row is ignored
    assert set(curve.series) == {"e/train", "f/train", "v/train", "e/validation", "f/validation", "v/validation"}
    assert curve.last("f/validation") == 0.4 and math.isnan(curve.last("v/train"))
    # other spellings and deepmd-kit's whitespace lcurve.out
    path.write_text("#  step  lr  Energy_RMSE_Train  force-rmse-valid  rmse_val  loss\n"
                    "   0  1e-3  0.3  0.9  1.0  2\n  50  1e-3  0.2  0.7  0.8  1\n")
    curve = read_lcurve(path)
    assert set(curve.series) == {"e/train", "f/validation"} and curve.series["f/validation"].tolist() == [0.9, 0.7]
    path.write_text("step,loss\n")
    assert read_lcurve(path).series == {}
    path.write_text("epoch,rmse_f_trn\n1,0.3\n")
    with pytest.raises(ValueError, match="does not start with step"):
        read_lcurve(path)


def test_cli_prints_where_the_report_is_and_a_summary(run_dir, capsys, tmp_path):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    sel = json.loads((run_dir / "iter-000001" / "select" / "selection.json").read_text())
    assert f"{tmp_path / 'rep' / 'report.html'}" in out
    assert "run cu: succeeded; 2 iterations (2 complete)" in out
    assert f"iteration 1: accurate ratio {sel['ratios']['accurate']:.3f}" in out
    frames = LabeledDataset(run_dir / "iter-000001" / "dataset").summary().frames
    assert f"dataset: {frames} frames in 1 system(s)" in out
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is not a run directory" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError):
        load_run(tmp_path / "nowhere")


@pytest.mark.slow
def test_report_of_a_real_two_iteration_run(tmp_path, monkeypatch):
    """The loop with the real step functions (tests/workflows/test_wf_science.py: tiny models, EMT
    labels, ~40 s), then the report of its run directory."""
    import os

    from dpa3_al.workflows import Plan, submit, wait
    from tests.workflows import test_wf_science as science

    helpers = Path(science.__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(helpers), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(helpers))
    calls = {"train": {"func": "wf_science:train_member", "config": {"type_map": ["Cu"]}},
             "select": {"config": {"select": {"f_lo": 0.0, "f_hi": 1.0e9, "max_select": 3}}}}
    calls.update({step: {"config": science.EXPLORE} for step in ("prep-explore", "run-explore", "decide")})
    calls.update({step: {"config": science.LABEL} for step in ("prep-label", "run-label")})
    plan = from_dict(Plan, {"workflow": {"group_size": 2, "retries": 0, "local": {"poll_interval": 0.5}},
                            "loop": {"n_models": 2, "calls": calls}})
    run = submit(tmp_path / "runs", "cu", plan)
    assert wait(run.root, 600, 0.5).status == "succeeded"
    out = build_report(run.root)
    md = (out / "report.md").read_text()
    for row in md_table(md, "iteration"):
        sel = json.loads((run.root / f"iter-{int(row['iteration']):06d}" / "select" / "selection.json").read_text())
        assert [int(row[c]) for c in ("accurate", "candidate", "failed", "frames", "selected")] == \
            [sel["counts"]["accurate"], sel["counts"]["candidate"], sel["counts"]["failed"], sel["n_frames"],
             sel["n_selected"]]
        assert row["labeled"] == "3" and row["label failed"] == "0"
    assert md_table(md, "iteration")[-1]["dataset frames"] == "6"
    assert "lcurve.csv has no RMSE columns" in md              # the training stand-in writes no RMSE
    html = (out / "report.html").read_text()
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))
