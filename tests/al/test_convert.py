"""``dpa3-al convert``: deepmd-kit inputs become the model deepmd-kit trained (its checkpoint is the
reference), with deepmd-kit's defaults written out where ours differ; our dpgen2 example becomes
a run config that validates; what cannot be mapped is printed with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dpa3_al.cli import main
from dpa3_al.common.errors import UserError
from dpa3_al.common.typed_config import from_dict
from dpa3_al.config import load_run_config
from dpa3_al.explore.config import ExploreConfig
from dpa3_al.interop.deepmd_input import Notes, convert_deepmd_input
from dpa3_al.interop.dpgen2_input import convert_dpgen2_input
from dpa3_al.model import load_model
from dpa3_al.model.train.config import TrainConfig, load_train_config
from dpa3_al.select import SelectConfig

DATA = Path(__file__).parents[1] / "data"
REFERENCE = DATA / "dpa3-reference"
INTEROP = DATA / "interop"


@pytest.mark.parametrize("case", ["small", "dynamic"])
def test_deepmd_input_converts_to_the_model_deepmd_kit_trained(tmp_path, capsys, case):
    source = REFERENCE / case / "input.json"
    out = tmp_path / "sub" / "train.yaml"
    assert main(["convert", "deepmd", str(source), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "valid training config" in printed
    assert "model.descriptor.seed: initial weights come from training.seed" in printed
    assert "training.disp_file: an output option" in printed
    cfg = load_train_config(out)
    trained = load_model(REFERENCE / case / "model.ckpt.pt").config       # deepmd-kit's own normalised config
    assert cfg.model.resolve(cfg.model.type_map) == trained
    given = json.loads(source.read_text())
    assert cfg.learning_rate.start_lr == given["learning_rate"]["start_lr"]
    assert cfg.learning_rate.decay_steps == given["learning_rate"]["decay_steps"]
    assert cfg.loss.limit_pref_f == given["loss"]["limit_pref_f"]
    assert (cfg.optimizer.type, cfg.optimizer.weight_decay, cfg.optimizer.gradient_max_norm) == ("Adam", 0.0, 0.0)
    assert cfg.training.numb_steps == given["training"]["numb_steps"] and cfg.training.seed == given["training"]["seed"]
    expected = [(source.parent / p).resolve() for p in given["training"]["training_data"]["systems"]]
    assert [p.resolve() for p in cfg.data.systems] == expected
    assert [p.resolve() for p in cfg.data.validation] == [(source.parent / "../../water/data_3").resolve()]
    assert not cfg.stopping.keep_best and cfg.stopping.patience == 0 and cfg.data.bias_fit == "labels"


def test_deepmd_defaults_are_written_where_ours_differ(tmp_path):
    minimal = {"model": {"type_map": ["O", "H"], "descriptor": {"type": "dpa3", "repflow": {}}, "fitting_net": {}},
               "training": {"numb_steps": 10, "training_data": {"systems": "data"}}}
    converted, unmapped = convert_deepmd_input(minimal, tmp_path, tmp_path)
    cfg = TrainConfig.from_dict(converted)
    ours = TrainConfig()
    for section, key, deepmd in (("descriptor", "a_compress_rate", 0), ("descriptor", "edge_init_use_dist", False),
                                 ("descriptor", "use_exp_switch", False), ("descriptor", "a_dim", 64),
                                 ("descriptor", "e_rcut_smth", 5.0), ("descriptor", "a_sel", 20),
                                 ("descriptor", "activation_function", "silu"),
                                 ("fitting", "activation_function", "tanh"), ("fitting", "neuron", [120, 120, 120])):
        assert getattr(getattr(cfg.model, section), key) == deepmd != getattr(getattr(ours.model, section), key), key
    assert cfg.model.precision == "float64" != ours.model.precision
    assert (cfg.optimizer.type, cfg.optimizer.weight_decay) == ("Adam", 0.0) != (ours.optimizer.type, 1e-3)
    assert cfg.learning_rate.start_lr == 1e-3 and cfg.learning_rate.stop_lr == 1e-8
    assert (cfg.loss.start_pref_e, cfg.loss.start_pref_f, cfg.loss.limit_pref_v) == (0.02, 1000.0, 0.0)
    assert [str(p) for p in cfg.data.systems] == ["data"] and cfg.data.validation_fraction == 0.0
    assert unmapped == []


def test_what_cannot_be_mapped_is_listed_with_a_reason(tmp_path):
    given = json.loads((REFERENCE / "small" / "input.json").read_text())
    given["model"]["descriptor"]["exclude_types"] = [[0, 1]]
    given["model"]["descriptor"]["repflow"]["no_such_option"] = 1
    given["loss"]["start_pref_ae"] = 1.0
    given["learning_rate"]["type"] = "cosine"
    given["training"]["training_data"]["auto_prob"] = "prob_sys_size;0:1:0.5"
    given["training"]["warmup_steps"] = 100
    _, unmapped = convert_deepmd_input(given, REFERENCE / "small", tmp_path)
    reasons = {u.key: u.reason for u in unmapped}
    assert "not supported by the DPA3 core" in reasons["model.descriptor.exclude_types"]
    assert "not a repflow option" in reasons["model.descriptor.repflow.no_such_option"]
    assert "not supported" in reasons["loss.start_pref_ae"]
    assert "exponential" in reasons["learning_rate.type"]
    assert "prob_sys_size and prob_uniform" in reasons["training.training_data.auto_prob"]
    assert "training.warmup_steps" in reasons


def test_multi_task_input_is_refused_with_what_to_do(tmp_path):
    given = json.loads((REFERENCE / "multitask" / "input.json").read_text())
    with pytest.raises(UserError, match="multi-task .* --head"):
        convert_deepmd_input(given, REFERENCE / "multitask", tmp_path)


def test_dpgen2_example_becomes_a_run_config_that_validates(tmp_path, capsys):
    out = tmp_path / "water-al.yaml"
    assert main(["convert", "dpgen2", str(INTEROP / "dpgen2_input.json"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "valid run config" in printed
    for key in ("inputs.mass_map", "explore.config", "explore.stages[1][0].pka_e", "explore.stages[1][1].lmp",
                "train.config.init_model_start_pref_e", "step_configs.run_train_config"):
        assert f"  {key}: " in printed, key
    assert main(["validate", str(out)]) == 0
    cfg = load_run_config(out)
    assert cfg.name == "water-al" and cfg.train.model.type_map == ["O", "H"] and cfg.committee == 4
    assert cfg.init_data == [(DATA / "water" / d).resolve() for d in ("data_0", "data_1")]
    assert cfg.train.model.descriptor.n_dim == 32 and cfg.train.model.precision == "float32"
    assert (cfg.train.init_model.steps_factor, cfg.train.init_model.lr_factor) == (0.25, pytest.approx(0.1))
    assert cfg.train.optimizer.gradient_max_norm == 5.0
    (nvt,), (npt, template) = (s.task_groups for s in cfg.explore.stages)
    assert (nvt.ensemble, nvt.temps, nvt.steps, nvt.traj_freq, nvt.n_sample) == ("nvt-nhc", [300.0, 400.0], 100, 10, 2)
    assert (nvt.timestep, nvt.tau_t, npt.tau_t) == (1.0, 50.0, 50.0)            # dpgen2 defaults, in fs
    assert (npt.ensemble, npt.press, npt.tau_p, npt.steps) == ("npt-iso", [1.0, 1000.0], 1000.0, 200)
    assert (template.ensemble, template.temps, template.steps, template.timestep) == ("nvt-nhc", [330.0, 360.0], 200,
                                                                                       0.5)
    assert nvt.configurations[0].format == "deepmd/npy"
    assert all(s.conv_accuracy == 0.85 and s.max_iter == 5 and not s.fatal_at_max for s in cfg.explore.stages)
    assert (cfg.select.f_lo, cfg.select.f_hi, cfg.select.max_select) == (0.08, 0.30, 50)
    assert cfg.label.kind == "vasp" and cfg.label.command == ("mpirun", "-n", "16", "vasp_std")
    assert cfg.label.vasp.incar == {"PREC": "Accurate", "ENCUT": 500, "ISMEAR": 0, "SIGMA": 0.05, "EDIFF": 1e-6,
                                    "LREAL": False}
    assert cfg.label.vasp.kspacing == 0.5 and cfg.label.vasp.potcars == {"O": "O", "H": "H"}
    assert cfg.workflow.engine == "dispatcher" and cfg.workflow.dispatcher.resources["cpu_per_node"] == 16
    assert "&id" not in out.read_text()                                # plain YAML, no anchors


def test_dpgen2_alloys_adaptive_levels_and_older_keys(tmp_path):
    given = {
        "inputs": {"type_map": ["Al", "Mg"], "init_data_sys": []},
        "train": {"type": "dp", "numb_models": 3, "template_script": {"training": {"numb_steps": 100}}},
        "explore": {
            "type": "lmp", "max_numb_iter": 2, "model_devi_f_trust_hi": 0.4,
            "convergence": {"type": "adaptive-lower", "rate_candi_f": 0.2, "n_checked_steps": 4,
                            "conv_tolerance": 0.01},
            "configurations": [{"lattice": ["fcc", 4.05], "replicate": [2, 2, 2], "numb_confs": 5,
                                "concentration": [[1.0, 0.0], [0.75, 0.25]], "atom_pert_dist": 0.05}],
            "stages": [[{"type": "lmp-md", "ensemble": "npt-a", "nsteps": 20, "temps": [300], "press": [1],
                         "trj_freq": 5}]]},
        "fp": {"type": "gaussian", "task_max": 7}}
    run, unmapped = convert_dpgen2_input(given, tmp_path, tmp_path)
    reasons = {u.key: u.reason for u in unmapped}
    assert "no labeler here" in reasons["fp.type"]
    select = from_dict(SelectConfig, run["select"], path="select")
    assert select.f_hi == 0.4 and select.adaptive.candidate_fraction == 0.2 and select.max_select == 7
    assert select.strategy == "weighted" and "select.strategy: random" in reasons["fp.task_max"]   # says it differs
    explore = from_dict(ExploreConfig, run["explore"], path="explore")
    (stage,) = explore.stages
    assert (stage.level_n_checked, stage.level_rtol, stage.max_iter) == (4, 0.01, 2)
    (group,) = stage.task_groups
    assert group.ensemble == "npt-full" and group.press == [1.0]
    pure, mixed = group.configurations
    assert (pure.lattice.symbols, pure.lattice.crystal, pure.lattice.a, pure.supercell) == ("Al", "fcc", 4.05, (2, 2, 2))
    assert pure.perturb.copies == 5 and pure.perturb.atom == 0.05 and not pure.substitute
    (sub,) = mixed.substitute
    assert (sub.element, sub.by, sub.fraction, sub.copies) == ("Al", "Mg", 0.25, 5)
    assert yaml.safe_load(yaml.safe_dump(run)) == run                   # plain data, ready for YAML


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_interop_defaults_table_is_complete_and_true(tmp_path):
    """docs/interop-defaults.md lists exactly the training keys whose defaults differ, with both values."""
    doc = (Path(__file__).parents[2] / "docs" / "interop-defaults.md").read_text()
    section = doc.split("## Training config")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]
    table = {r[0].strip("`"): (yaml.safe_load(r[1]), yaml.safe_load(r[2])) for r in rows}
    minimal = {"model": {"type_map": ["O", "H"], "descriptor": {"type": "dpa3", "repflow": {}}, "fitting_net": {}},
               "training": {"numb_steps": 2000, "training_data": {"systems": []}}}
    converted, _ = convert_deepmd_input(minimal, tmp_path, tmp_path)
    ours = _flat(TrainConfig().to_dict())
    deepmd = _flat(TrainConfig.from_dict(converted).to_dict())
    differ = {k for k in ours if ours[k] != deepmd[k]} - {"model.type_map"}
    assert set(table) == differ
    for key, (our_value, deepmd_value) in table.items():
        assert (ours[key], deepmd[key]) == (our_value, deepmd_value), key


def test_dpgen2_fp_of_abacus_cp2k_and_qe_become_our_labelers(tmp_path):
    from dpa3_al.interop.dpgen2_fp import convert_fp
    from dpa3_al.label.config import LabelConfig

    (tmp_path / "pp").mkdir()
    (tmp_path / "INPUT").write_text("INPUT_PARAMETERS\necutwfc 80   # Ry\nbasis_type lcao\npseudo_dir ./pp\n"
                                    "scf_thr 1e-7\n")
    (tmp_path / "cp2k.inp").write_text("&GLOBAL\n  PRINT_LEVEL LOW\n&END GLOBAL\n")
    cases = {
        "abacus": {"type": "abacus", "run_config": {"command": "abacus"},
                   "inputs_config": {"input_file": "INPUT", "pp_files": {"O": "pp/O.upf", "H": "pp/H.upf"},
                                     "orb_files": {"O": "pp/O.orb", "H": "pp/H.orb"}, "kpt_file": "KPT"}},
        "cp2k": {"type": "cp2k", "inputs_config": {"inp_file": "cp2k.inp"}},
        "qe": {"type": "qe", "inputs_config": {"pp_files": {"O": "pp/O.UPF", "H": "pp/H.UPF"}, "kspacing": 0.3,
                                               "ecut": 60}},
    }
    labels = {}
    for name, fp in cases.items():
        notes = Notes()
        section, _ = convert_fp(fp, tmp_path, tmp_path, notes)
        labels[name] = (from_dict(LabelConfig, section, path="label"), {n.key: n.reason for n in notes})
    abacus, notes = labels["abacus"]
    assert abacus.kind == "abacus" and abacus.command == ("abacus",)
    assert abacus.abacus.input == {"ecutwfc": 80, "basis_type": "lcao", "scf_thr": 1e-7}
    assert abacus.abacus.pseudo_dir == (tmp_path / "pp").resolve() and abacus.abacus.pseudopotentials["O"] == "O.upf"
    assert abacus.abacus.orbitals == {"O": "O.orb", "H": "H.orb"} and "fp.kpt_file" in notes
    cp2k, notes = labels["cp2k"]
    assert cp2k.kind == "cp2k" and "PRINT_LEVEL LOW" in cp2k.cp2k.inp and "fp.inp_file" in notes
    qe, notes = labels["qe"]
    assert qe.kind == "espresso" and qe.espresso.pseudopotentials == {"O": "O.UPF", "H": "H.UPF"}
    assert qe.espresso.kspacing == 0.3 and "fp.inputs_config.ecut" in notes
