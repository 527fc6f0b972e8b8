"""The run config: shipped templates validate; every malformed config is one clear line."""

from __future__ import annotations


import pytest
import yaml

from dpa3_al.cli import main
from dpa3_al.config import load_run_config

from .config_edits import quickstart, with_key, without_key

from .config_edits import TEMPLATES
RUN_TEMPLATES = ["quickstart", "espresso-si", "finetune-water", "slurm", "argo"]


@pytest.mark.parametrize("name", RUN_TEMPLATES)
def test_templates_validate_and_build_a_plan(name):
    from dpa3_al.workflows.plan import plan_from_config

    cfg = load_run_config(TEMPLATES / f"{name}.yaml")
    plan = plan_from_config(cfg, TEMPLATES)
    assert plan.loop.n_models == cfg.committee == 4
    if cfg.workflow.engine != "local":     # training.stack auto: one member per step on a cluster
        assert plan.loop.stack == 1
    assert plan.loop.bootstrap == (not cfg.init_data)
    assert all(p.exists() for p in cfg.init_data)
    # a run with an accuracy target gives it to the steps that derive, measure and judge with it
    for step in ("select", "evaluate", "decide"):
        assert ("target" in plan.loop.calls[step].config) == (cfg.target is not None), step


def test_stack_auto_fills_the_local_engine_and_an_explicit_value_wins(tmp_path):
    from dpa3_al.workflows.plan import plan_from_config

    (tmp_path / "data").symlink_to(TEMPLATES / "data")          # the quickstart's relative paths
    for parallel, stack, expected in ((2, 0, 2), (4, 0, 1), (3, 0, 2), (1, 0, 4), (2, 1, 1), (1, 3, 3)):
        cfg = with_key(with_key(quickstart(), "workflow.local.parallel", parallel), "train.training.stack", stack)
        (tmp_path / "q.yaml").write_text(yaml.safe_dump(cfg))
        assert plan_from_config(load_run_config(tmp_path / "q.yaml"), TEMPLATES).loop.stack == expected, (parallel, stack)


def test_workflow_final_training_reaches_the_plan(tmp_path):
    """workflow.final_training (default true) is kept in the plan's workflow, the one place the loop reads it
    (tests/al/test_final_model.py: the final-train step is built or not)."""
    from dpa3_al.workflows.plan import plan_from_config

    (tmp_path / "data").symlink_to(TEMPLATES / "data")
    for value in (True, False):
        (tmp_path / "q.yaml").write_text(yaml.safe_dump(with_key(quickstart(), "workflow.final_training", value)))
        assert plan_from_config(load_run_config(tmp_path / "q.yaml"), TEMPLATES).workflow.final_training is value
    assert plan_from_config(load_run_config(TEMPLATES / "quickstart.yaml"), TEMPLATES).workflow.final_training is True


def test_argo_template_renders_offline(capsys):
    assert main(["render", str(TEMPLATES / "argo.yaml")]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["kind"] == "Workflow"
    names = {t["name"].split("-x0")[0] for t in doc["spec"]["templates"]}   # sliced templates: name-x<group>
    assert {"main", "iteration-block", "train", "prep-explore", "run-explore", "select", "prep-label", "run-label",
            "collect", "decide"} <= names


G = "explore.stages[0].task_groups[0]"
#: (what is wrong, how to break the quickstart config, text the error line must contain)
MALFORMED = [
    ("name not a string", lambda c: with_key(c, "name", 5), "name"),
    ("unknown top key", lambda c: with_key(c, "explor", {}), "explor: unknown key; did you mean 'explore'"),
    ("init_data not a list", lambda c: with_key(c, "init_data", "data/water-init"), "init_data"),
    ("missing init_data path", lambda c: with_key(c, "init_data", ["nowhere"]), "init_data"),
    ("seed not int", lambda c: with_key(c, "seed", "one"), "seed"),
    ("unknown train key", lambda c: with_key(c, "train.trainig", {}), "train.trainig"),
    ("unknown model key", lambda c: with_key(c, "train.model.ndim", 3), "train.model.ndim"),
    ("n_dim zero", lambda c: with_key(c, "train.model.descriptor.n_dim", 0), "train.model.descriptor.n_dim"),
    ("a_rcut > e_rcut", lambda c: with_key(c, "train.model.descriptor.a_rcut", 7.0), "train.model.descriptor.a_rcut"),
    ("a_sel > e_sel", lambda c: with_key(c, "train.model.descriptor.a_sel", 500), "train.model.descriptor.a_sel"),
    ("bad activation", lambda c: with_key(c, "train.model.descriptor.activation_function", "swish"),
     "train.model.descriptor.activation_function"),
    ("bad precision", lambda c: with_key(c, "train.model.precision", "float16"), "train.model.precision"),
    ("fitting neuron zero", lambda c: with_key(c, "train.model.fitting.neuron", [32, 0]), "train.model.fitting.neuron"),
    ("type_map not elements", lambda c: with_key(c, "train.model.type_map", ["O", "Xx"]), "type_map"),
    ("numb_models zero", lambda c: with_key(c, "train.training.numb_models", 0), "train.training.numb_models"),
    ("numb_steps negative", lambda c: with_key(c, "train.training.numb_steps", -5), "train.training.numb_steps"),
    ("start_lr negative", lambda c: with_key(c, "train.learning_rate.start_lr", -1.0), "train.learning_rate.start_lr"),
    ("stop_lr above start", lambda c: with_key(c, "train.learning_rate.stop_lr", 0.1), "train.learning_rate.stop_lr"),
    ("optimizer unknown", lambda c: with_key(c, "train", {**c["train"], "optimizer": {"type": "SGD"}}), "train.optimizer.type"),
    ("finetune file missing", lambda c: with_key(c, "train", {**c["train"], "finetune": {"model": "none.pt"}}),
     "train.finetune.model"),
    ("loop init_model", lambda c: with_key(c, "train", {**c["train"], "init_model": {"model": "x.pt"}}),
     "train.init_model.model"),
    ("no stages", lambda c: with_key(c, "explore.stages", []), "explore.stages"),
    ("unknown stage key", lambda c: with_key(c, "explore.stages[0].maxiter", 3), "explore.stages[0].maxiter"),
    ("max_iter zero", lambda c: with_key(c, "explore.stages[0].max_iter", 0), "explore.stages[0].max_iter"),
    ("conv_accuracy above 1", lambda c: with_key(c, "explore.stages[0].conv_accuracy", 1.5),
     "explore.stages[0].conv_accuracy"),
    ("negative temperature", lambda c: with_key(c, f"{G}.temps", [-10]), f"{G}.temps"),
    ("zero timestep", lambda c: with_key(c, f"{G}.timestep", 0), f"{G}.timestep"),
    ("negative steps", lambda c: with_key(c, f"{G}.steps", -1), f"{G}.steps"),
    ("zero traj_freq", lambda c: with_key(c, f"{G}.traj_freq", 0), f"{G}.traj_freq"),
    ("unknown ensemble", lambda c: with_key(c, f"{G}.ensemble", "npt"), f"{G}.ensemble"),
    ("npt without pressure", lambda c: with_key(c, f"{G}.ensemble", "npt-iso"), f"{G}"),
    ("file and lattice", lambda c: with_key(c, f"{G}.configurations[0].lattice", {"symbols": "Cu", "crystal": "fcc", "a": 3.6}),
     f"{G}.configurations[0]"),
    ("zero supercell", lambda c: with_key(c, f"{G}.configurations[0].supercell", [0, 1, 1]),
     f"{G}.configurations[0].supercell"),
    ("unknown group key", lambda c: with_key(c, f"{G}.temperature", [300]), f"{G}.temperature"),
    ("drive negative", lambda c: with_key(c, "explore.drive", -1), "explore.drive"),
    ("f_lo above f_hi", lambda c: with_key(c, "select.f_lo", 1.5), "select"),
    ("negative max_select", lambda c: with_key(c, "select.max_select", -1), "select.max_select"),
    ("unknown strategy", lambda c: with_key(c, "select.strategy", "best"), "select.strategy"),
    ("unknown select key", lambda c: with_key(c, "select.f_low", 0.1), "select.f_low"),
    ("unknown labeler", lambda c: with_key(c, "label.kind", "dft"), "label.kind"),
    ("zero label timeout", lambda c: with_key(c, "label.timeout", 0), "label.timeout"),
    ("negative retries", lambda c: with_key(c, "label.retries", -1), "label.retries"),
    ("wrong backend section", lambda c: with_key(c, "label.espresso", {"ecutwfc": 30}), "label"),
    ("unknown tblite method", lambda c: with_key(c, "label.tblite", {"method": "GFN3"}), "label.tblite.method"),
    ("unknown engine", lambda c: with_key(c, "workflow.engine", "k8s"), "workflow.engine"),
    ("group_size zero", lambda c: with_key(c, "workflow.group_size", 0), "workflow.group_size"),
    ("ratio above 1", lambda c: with_key(c, "workflow.continue_on_success_ratio", 2.0),
     "workflow.continue_on_success_ratio"),
    ("unknown step override", lambda c: with_key(c, "workflow", {**c["workflow"], "steps": {"labels": {"retries": 1}}}),
     "workflow.steps.labels"),
    ("bad batch type", lambda c: with_key(c, "workflow", {**c["workflow"], "engine": "dispatcher",
                                                      "dispatcher": {"machine": {"batch_type": "Foo",
                                                                                 "context_type": "LocalContext"}}}),
     "workflow.dispatcher.machine.batch_type"),
    ("bootstrap copies zero", lambda c: with_key(c, "bootstrap", {"copies": 0}), "bootstrap.copies"),
    ("bootstrap strain", lambda c: with_key(c, "bootstrap", {"cell": 1.5}), "bootstrap.cell"),
    ("missing group configurations file", lambda c: without_key(c, f"{G}.configurations[0].file"), f"{G}.configurations[0]"),
    ("structure file not there", lambda c: with_key(c, f"{G}.configurations", [{"file": "data/nothing.xyz"}]),
     f"{G}.configurations: configuration file"),
    ("structure element not in the type map", lambda c: with_key(c, f"{G}.configurations", [{"file": "data/si-diamond.extxyz"}]),
     f"{G}.configurations: elements ['Si'] are not in train.model.type_map"),
    ("deepmd folder without systems", lambda c: with_key(c, f"{G}.configurations", [{"file": "data/si-diamond.extxyz", "format": "deepmd/npy"}]),
     "no deepmd npy system"),
]


@pytest.mark.parametrize("what,mutate,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_is_one_line_naming_the_key(tmp_path, capsys, what, mutate, expected):
    bad = tmp_path / "run.yaml"
    bad.write_text(yaml.safe_dump(mutate(quickstart())))
    (tmp_path / "data").symlink_to(TEMPLATES / "data")
    code = main(["validate", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 1, f"{what}: accepted"
    assert "\n" not in err and "Traceback" not in err, err
    assert str(bad) in err and expected in err, err


def test_yaml_syntax_and_shape_errors(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text("name: x\ntrain: [1, 2\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "not valid YAML" in err and "line" in err and "\n" not in err
    bad.write_text("- a\n- b\n")
    assert main(["validate", str(bad)]) == 1
    assert "expected a mapping of sections" in capsys.readouterr().err
