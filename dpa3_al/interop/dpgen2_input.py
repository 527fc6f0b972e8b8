"""A dpgen2 ``input.json`` as our run config (``dpa3-al convert dpgen2``).

What is mapped (dpgen2 key -> ours; units converted: dpgen2's times are in ps, ours in fs):

- ``inputs.type_map`` -> ``train.model.type_map``; ``init_data_prefix`` + ``init_data_sys`` ->
  ``init_data``; ``valid_data_prefix`` + ``valid_data_sys`` -> ``test_data``.
- ``train``: ``numb_models`` -> ``train.training.numb_models``; ``template_script`` (a deepmd-kit
  input, inline or a file) through :mod:`dpa3_al.interop.deepmd_input`; ``config.init_model_*``
  -> ``train.init_model`` factors.
- ``explore`` (``lmp``): ``configurations`` (``file`` globs, ``alloy`` lattices with
  concentrations and perturbations) -> each task group's ``configurations`` (by ``conf_idx``);
  ``stages`` of ``lmp-md`` tasks (ensemble, temps, press, nsteps, dt, tau_t, tau_p, trj_freq,
  n_sample) and ``lmp-template`` tasks (trj_freq and the revisions named like TEMP, PRESS,
  NSTEPS) -> ``explore.stages[].task_groups``; ``max_numb_iter``, ``fatal_at_max``,
  ``convergence`` (``fixed-levels``: ``conv_accuracy``, ``level_f_lo/hi``, ``level_v_lo/hi``;
  ``adaptive-lower``: ``rate_candi_f``/``numb_candi_f``, ``level_f_hi``, ``n_checked_steps``,
  ``conv_tolerance``), and the older ``conv_accuracy``, ``f_trust_lo/hi`` and dpgen's
  ``model_devi_f_trust_lo/hi`` -> stage convergence and ``select`` trust levels.
- ``fp``: ``vasp`` (INCAR file, pp_files, kspacing), ``abacus`` (INPUT file, pp_files,
  orb_files), ``cp2k`` (inp_file), ``qe``/``pwscf`` (pp_files) -> ``label``; ``task_max`` ->
  ``select.max_select``; ``run_config.command`` -> ``label.command``.

Everything else is listed with the reason it was not mapped (cluster and dflow settings map to
our ``workflow:`` section by hand).
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Any

from dpa3_al.common.errors import UserError

from .deepmd_input import Unmapped, Notes, convert_deepmd_input
from .dpgen2_fp import convert_fp

ENSEMBLES = {"nvt": "nvt-nhc", "npt": "npt-iso", "npt-i": "npt-iso", "npt-iso": "npt-iso", "npt-a": "npt-full",
             "npt-aniso": "npt-full", "npt-t": "npt-full", "npt-tri": "npt-full", "nve": "nve"}
FORMATS = {"vasp/poscar": "vasp", "vasp/contcar": "vasp", "lammps/lmp": "lammps-data", "lammps/data": "lammps-data",
           "deepmd/npy": "deepmd/npy", "extxyz": "extxyz", "xyz": "extxyz", "auto": None}
MD_KEYS = {"type", "ensemble", "ens", "temps", "Ts", "press", "Ps", "nsteps", "dt", "tau_t", "tau_p", "trj_freq",
           "t_freq", "traj_freq", "conf_idx", "sys_idx", "n_sample"}
_WORKFLOW = ("dflow_config", "dflow_s3_config", "bohrium_config", "lebesgue_context_config", "default_step_config",
             "step_configs", "upload_python_packages", "upload_python_package", "name")


def convert_dpgen2_input(data: dict, base: Path, out_dir: Path, name: str = "run"
                         ) -> tuple[dict[str, Any], list[Unmapped]]:
    """dpgen2 ``input.json`` (``data``, read from folder ``base``) -> (RunConfig mapping, unmapped keys).
    Paths become relative to ``out_dir`` (where the YAML goes)."""
    if not isinstance(data, dict):
        raise UserError("a dpgen2 input must be a JSON object with inputs, train, explore, fp")
    notes = Notes()
    inputs = data.get("inputs", {})
    run: dict[str, Any] = {"name": name, "description": "converted from a dpgen2 input"}
    run["init_data"] = _data_paths(inputs, "init_data", base, out_dir, notes)
    test = _data_paths(inputs, "valid_data", base, out_dir, notes)
    if test:
        run["test_data"] = test
    run["train"] = _train(data.get("train", {}), inputs, base, out_dir, notes)
    run["explore"], run["select"] = _explore(data.get("explore", {}), inputs.get("type_map") or [], base, out_dir,
                                             notes)
    run["label"], task_max = convert_fp(data.get("fp", {}), base, out_dir, notes)
    if task_max is not None:
        run["select"]["max_select"] = int(task_max)
        notes.add("fp.task_max", f"mapped to select.max_select {int(task_max)}; dpgen2 draws that many candidates at "
                  f"random, dpa3-al by default draws them weighted by their force deviation (select.strategy: "
                  f"weighted; docs/al-benchmark.md: lower test errors at equal labels). Add select.strategy: "
                  f"random for dpgen2's rule")
    notes.rest(inputs, "inputs.", {"type_map", "init_data_prefix", "init_data_sys", "valid_data_prefix",
                                   "valid_data_sys", "mass_map", "mixed_type"})
    if "mass_map" in inputs:
        notes.add("inputs.mass_map", "masses are ASE's element masses (MD here has no per-type mass)")
    if inputs.get("mixed_type"):
        notes.add("inputs.mixed_type", "deepmd/npy/mixed data is recognised by its files (no switch needed)")
    workflow = _workflow(data, notes)
    if workflow:
        run["workflow"] = workflow
    notes.rest(data, "", {"inputs", "train", "explore", "fp", *_WORKFLOW})
    return run, list(notes)


def _workflow(data: dict, notes: Notes) -> dict[str, Any]:
    """A dpdispatcher executor (default_step_config first, else a step's) -> workflow engine dispatcher."""
    steps = data.get("step_configs") or {}
    candidates = [("default_step_config", data.get("default_step_config") or {})]
    candidates += [(f"step_configs.{k}", v) for k, v in steps.items() if isinstance(v, dict)]
    chosen = next(((k, c["executor"]) for k, c in candidates
                   if isinstance(c.get("executor"), dict) and c["executor"].get("type") == "dispatcher"), None)
    for key, config in candidates:
        if chosen is None or key != chosen[0]:
            if config:
                notes.add(key, "step settings (images, executors): our workflow: section has one engine for all "
                          "steps" + ("" if chosen is None else f" (the dispatcher of {chosen[0]} is used)"))
    for key in _WORKFLOW:
        if key in data and key not in ("default_step_config", "step_configs"):
            notes.add(key, "cluster/dflow settings: set our workflow: section (engine local, dispatcher or argo)")
    if chosen is None:
        return {}
    key, executor = chosen
    out: dict[str, Any] = {"engine": "dispatcher", "dispatcher": {}}
    if executor.get("machine_dict"):
        out["dispatcher"]["machine"] = dict(executor["machine_dict"])
    if executor.get("resources_dict"):
        out["dispatcher"]["resources"] = dict(executor["resources_dict"])
    notes.rest(executor, f"{key}.executor.", {"type", "machine_dict", "resources_dict"})
    notes.rest(candidates[[k for k, _ in candidates].index(key)][1], f"{key}.", {"executor"},
               "step template settings (images): not mapped")
    return out


def _data_paths(inputs: dict, kind: str, base: Path, out_dir: Path, notes: Notes) -> list[str]:
    systems = inputs.get(f"{kind}_sys") or []
    prefix = inputs.get(f"{kind}_prefix") or ""
    found: list[str] = []
    for item in [systems] if isinstance(systems, str) else systems:
        if not isinstance(item, str):
            notes.add(f"inputs.{kind}_sys", f"{item!r}: only paths (with globs) are mapped")
            continue
        pattern = str(base / prefix / item)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        found += [_rel(Path(m), out_dir) for m in matches]
    return found


def _rel(path: Path, out_dir: Path) -> str:
    """Data and structure paths: relative to the output file (the run config resolves them so)."""
    return os.path.relpath(Path(path).resolve(), out_dir.resolve())


# ---------------------------------------------------------------------------- train


def _train(train: dict, inputs: dict, base: Path, out_dir: Path, notes: Notes) -> dict[str, Any]:
    if train.get("type", "dp") != "dp":
        notes.add("train.type", f"{train['type']!r}: only deepmd-kit training (dp) is mapped")
    template = train.get("template_script", {})
    if isinstance(template, str):
        path = base / template
        if not path.is_file():
            raise UserError(f"train.template_script {template!r}: {path} does not exist")
        template = json.loads(path.read_text())
    out, sub = convert_deepmd_input(template, base, out_dir, with_data=False)
    notes += [Unmapped(f"train.template_script.{n.key}", n.reason) for n in sub]
    if inputs.get("type_map"):
        out.setdefault("model", {})["type_map"] = list(inputs["type_map"])
    out["training"]["numb_models"] = int(train.get("numb_models", 4))
    _init_model(train.get("config", {}), out, notes)
    if train.get("init_models_paths"):
        notes.add("train.init_models_paths", "iteration 0 trains from scratch here; to start from a pre-trained "
                  "model set train.finetune.model")
    notes.rest(train, "train.", {"type", "template_script", "numb_models", "config", "init_models_paths"})
    return out


def _init_model(config: dict, out: dict, notes: Notes) -> None:
    """dpgen2's init-model settings as our continuation factors (steps and lr relative to a fresh run)."""
    policy = str(config.get("init_model_policy", "no"))
    if policy == "no":
        notes.add("train.config.init_model_policy", "'no' (retrain from scratch each iteration): here each "
                  "iteration continues the previous model (train.init_model factors)")
    steps = out["training"].get("numb_steps")
    if "init_model_numb_steps" in config and steps:
        out["init_model"] = {"steps_factor": float(config["init_model_numb_steps"]) / float(steps)}
    if "init_model_start_lr" in config:
        out.setdefault("init_model", {})["lr_factor"] = (float(config["init_model_start_lr"])
                                                         / float(out["learning_rate"]["start_lr"]))
    notes.rest(config, "train.config.", {"init_model_policy", "init_model_numb_steps", "init_model_start_lr"},
               "not mapped (continued training uses the loss prefactors of the run)")


# ---------------------------------------------------------------------------- explore


def _explore(explore: dict, type_map: list[str], base: Path, out_dir: Path, notes: Notes
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    if explore.get("type", "lmp") != "lmp":
        notes.add("explore.type", f"{explore['type']!r}: only LAMMPS-style MD exploration (lmp) is mapped")
    select, convergence = _trust_levels(explore, notes)
    confs = _configurations(explore, type_map, base, out_dir, notes)
    stages = []
    for s, stage in enumerate(explore.get("stages", [])):
        groups = [g for t, task in enumerate(stage) if (g := _task_group(task, f"explore.stages[{s}][{t}]", confs,
                                                                        base, notes)) is not None]
        for g, group in enumerate(groups):
            group["name"] = f"stage{s}-{g}"
        stages.append({"task_groups": groups, "max_iter": int(explore.get("max_numb_iter", 10)),
                       "fatal_at_max": bool(explore.get("fatal_at_max", True)), **convergence})
    if "config" in explore:
        notes.add("explore.config", "the LAMMPS command: MD here runs in ASE with the committee")
    notes.rest(explore, "explore.", {"type", "config", "configurations", "configuration_prefix", "stages",
                                     "max_numb_iter", "fatal_at_max", "convergence", "conv_accuracy", "f_trust_lo",
                                     "f_trust_hi", "v_trust_lo", "v_trust_hi", "model_devi_f_trust_lo",
                                     "model_devi_f_trust_hi", "model_devi_v_trust_lo", "model_devi_v_trust_hi"})
    return {"stages": stages}, select


def _trust_levels(explore: dict, notes: Notes) -> tuple[dict[str, Any], dict[str, Any]]:
    conv = explore.get("convergence", {})
    kind = conv.get("type", "fixed-levels")

    def pick(*keys: str) -> float | None:
        for source, key in [(conv, k) for k in keys] + [(explore, k) for k in keys]:
            if source.get(key) is not None:
                return float(source[key])
        return None

    select: dict[str, Any] = {}
    for ours, keys in (("f_lo", ("level_f_lo", "f_trust_lo", "model_devi_f_trust_lo")),
                       ("f_hi", ("level_f_hi", "f_trust_hi", "model_devi_f_trust_hi")),
                       ("v_lo", ("level_v_lo", "v_trust_lo", "model_devi_v_trust_lo")),
                       ("v_hi", ("level_v_hi", "v_trust_hi", "model_devi_v_trust_hi"))):
        value = pick(*keys)
        if value is not None:
            select[ours] = value
    convergence: dict[str, Any] = {}
    accuracy = pick("conv_accuracy")
    if accuracy is not None:
        convergence["conv_accuracy"] = accuracy
    used = {"type", "conv_accuracy", "level_f_lo", "level_f_hi", "level_v_lo", "level_v_hi"}
    if kind == "adaptive-lower":
        adaptive: dict[str, Any] = {"candidate_fraction": float(conv.get("rate_candi_f", 0.1))}
        if conv.get("numb_candi_f"):
            adaptive = {"candidate_fraction": None, "candidate_count": int(conv["numb_candi_f"])}
        select["adaptive"] = adaptive
        convergence["level_n_checked"] = int(conv.get("n_checked_steps", 2))
        convergence["level_rtol"] = float(conv.get("conv_tolerance", 0.05))
        notes.add("explore.convergence.conv_tolerance", "mapped to level_rtol: converged when the lower level's "
                  "relative spread over the last n_checked_steps iterations is below it (dpgen2's test is close "
                  "but not identical)")
        used |= {"rate_candi_f", "numb_candi_f", "n_checked_steps", "conv_tolerance"}
    elif kind not in ("fixed-levels", "fixed-levels-max-select"):
        notes.add("explore.convergence.type", f"{kind!r}: only fixed-levels and adaptive-lower are mapped")
    notes.rest(conv, "explore.convergence.", used)
    return select, convergence


def _configurations(explore: dict, type_map: list[str], base: Path, out_dir: Path, notes: Notes
                    ) -> list[list[dict[str, Any]]]:
    """Each dpgen2 configuration entry as the list of our configuration specs it stands for."""
    prefix = explore.get("configuration_prefix") or ""
    out = []
    for i, conf in enumerate(explore.get("configurations", [])):
        key = f"explore.configurations[{i}]"
        kind = conf.get("type", "alloy" if "lattice" in conf else "file")
        if kind == "file":
            out.append(_file_confs(conf, key, base / prefix, out_dir, notes))
        elif kind == "alloy":
            out.append(_alloy_confs(conf, key, type_map, notes))
        else:
            notes.add(key, f"configuration type {kind!r} is not mapped")
            out.append([])
    return out


def _file_confs(conf: dict, key: str, base: Path, out_dir: Path, notes: Notes) -> list[dict[str, Any]]:
    fmt = conf.get("fmt", "auto")
    if fmt not in FORMATS:
        notes.add(f"{key}.fmt", f"{fmt!r}: not a format mapped here (ASE guesses from the file name)")
    files: list[str] = []
    for pattern in conf.get("files", []):
        full = str(base / conf.get("prefix", "") / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not matches:
            notes.add(f"{key}.files", f"{pattern!r} matches no file here")
        files += matches
    if conf.get("remove_pbc"):
        notes.add(f"{key}.remove_pbc", "non-periodic starting structures: give them without a cell instead")
    notes.rest(conf, f"{key}.", {"type", "files", "fmt", "prefix", "remove_pbc"})
    spec = {} if FORMATS.get(fmt) is None else {"format": FORMATS[fmt]}
    return [{"file": _rel(Path(f), out_dir), **spec} for f in files]


def _alloy_confs(conf: dict, key: str, type_map: list[str], notes: Notes) -> list[dict[str, Any]]:
    lattice = conf.get("lattice", ["fcc", None])
    crystal, a = lattice[0], (float(lattice[1]) if len(lattice) > 1 and lattice[1] is not None else None)
    concentrations = conf.get("concentration") or [[1.0] + [0.0] * (len(type_map) - 1)]
    copies = int(conf.get("numb_confs", 1))
    perturb = {k: float(conf[d]) for k, d in (("cell", "cell_pert_frac"), ("atom", "atom_pert_dist")) if conf.get(d)}
    specs = []
    for conc in concentrations:
        share = dict(zip(type_map, (float(c) / sum(conc) for c in conc)))
        host = max(share, key=share.get)
        left, subs = 1.0, []
        for element, part in share.items():
            if element != host and part > 0:
                subs.append({"element": host, "by": element, "fraction": part / left, "copies": copies})
                left -= part
        spec: dict[str, Any] = {"lattice": {"symbols": host, "crystal": crystal, "a": a,
                                            "cubic": crystal in ("sc", "fcc", "bcc", "diamond")},
                                "supercell": list(conf.get("replicate", [1, 1, 1])), "substitute": subs}
        if perturb or not subs:
            spec["perturb"] = {"copies": 1 if subs else copies, "keep_original": not perturb, **perturb}
        specs.append(spec)
    notes.rest(conf, f"{key}.", {"type", "lattice", "replicate", "numb_confs", "concentration", "cell_pert_frac",
                                 "atom_pert_dist"})
    return specs


def _task_group(task: dict, key: str, confs: list[list[dict]], base: Path, notes: Notes) -> dict | None:
    kind = task.get("type", "lmp-md")
    idx = task.get("conf_idx", task.get("sys_idx", list(range(len(confs)))))
    group: dict[str, Any] = {"configurations": [spec for i in idx for spec in confs[i]]}
    if task.get("n_sample"):
        group["n_sample"] = int(task["n_sample"])
    if kind in ("lmp-md", "lmp-npt", "lmp-nvt"):
        _md_fields(task, key, group, notes)
    elif kind == "lmp-template":
        _template_fields(task, key, group, base, notes)
    else:
        notes.add(key, f"task type {kind!r} is not mapped (lmp-md and lmp-template are)")
        return None
    return group


def _md_fields(task: dict, key: str, group: dict, notes: Notes) -> None:
    """dpgen2's lmp-md settings (its defaults: nve, 100 steps, dt 1 fs, tau_t 50 fs, tau_p 500 fs) in fs."""
    pick = lambda *names, default=None: next((task[n] for n in names if task.get(n) is not None), default)  # noqa: E731
    ensemble = str(pick("ensemble", "ens", default="nve")).lower()
    if ensemble not in ENSEMBLES:
        notes.add(f"{key}.ensemble", f"{ensemble!r} is not mapped: nvt-nhc used")
    group["ensemble"] = ENSEMBLES.get(ensemble, "nvt-nhc")
    group["temps"] = [float(t) for t in pick("temps", "Ts", default=[300.0])]
    press = pick("press", "Ps")
    if group["ensemble"].startswith("npt"):
        group["press"] = [float(p) for p in (press or [1.0])]
    elif press:
        notes.add(f"{key}.press", f"pressures are not used by ensemble {ensemble!r}")
    group["steps"] = int(pick("nsteps", default=100))
    group["traj_freq"] = int(pick("trj_freq", "t_freq", "traj_freq", default=10))
    group["timestep"] = 1000.0 * float(pick("dt", default=0.001))                # ps -> fs
    group["tau_t"] = 1000.0 * float(pick("tau_t", default=0.05))
    group["tau_p"] = 1000.0 * float(pick("tau_p", default=0.5))
    notes.rest(task, f"{key}.", MD_KEYS)


def _template_fields(task: dict, key: str, group: dict, base: Path, notes: Notes) -> None:
    """lmp-template: the revisions that name a temperature, pressure or step count become MD settings."""
    notes.add(f"{key}.lmp", "the LAMMPS template's own commands (fixes, PLUMED, dumps) are not run: MD here is the "
              "ASE engine with the settings below taken from the revisions")
    ensemble, values, dt = "nvt", {}, None
    template = base / str(task.get("lmp", ""))
    if template.is_file():
        text = template.read_text()
        found = re.search(r"^\s*fix\s+\S+\s+\S+\s+(nvt|npt|nve)\b", text, re.M)
        ensemble = found.group(1) if found else ensemble
        step = re.search(r"^\s*timestep\s+([0-9.eE+-]+)\s*$", text, re.M)      # ps (units metal)
        dt = float(step.group(1)) if step else None
    for name, vals in (task.get("revisions") or {}).items():
        upper = name.upper()
        slot = ("temps" if "TEMP" in upper else "press" if "PRESS" in upper else "steps" if "NSTEP" in upper
                else None)
        if slot is None:
            notes.add(f"{key}.revisions.{name}", "not a temperature, pressure or step count: not mapped")
        elif slot == "steps" and len(vals) > 1:
            notes.add(f"{key}.revisions.{name}", f"{vals}: one step count per task group here ({vals[0]} used)")
        values[slot] = vals
    md = {"ensemble": ensemble, "temps": values.get("temps", [300.0]), "nsteps": (values.get("steps") or [100])[0],
          "trj_freq": task.get("trj_freq", 10), **({} if dt is None else {"dt": dt})}
    if values.get("press"):
        md["press"] = values["press"]
        md["ensemble"] = "npt" if ensemble == "nvt" else ensemble
    _md_fields(md, key, group, Notes())
    for extra in ("plm", "plm_template"):
        if task.get(extra):
            notes.add(f"{key}.{extra}", "PLUMED is not available in the ASE engine")
    notes.rest(task, f"{key}.", {"type", "lmp", "plm", "plm_template", "revisions", "trj_freq", "conf_idx",
                                 "sys_idx", "n_sample"})
