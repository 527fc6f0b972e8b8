"""dpgen2's ``fp`` section as our ``label`` section: vasp (INCAR file, pp_files, kspacing, kgamma),
abacus (INPUT file, pp_files, orb_files), cp2k (inp_file), qe/pwscf (pp_files, kspacing);
``run_config.command`` -> ``label.command``. Labeler folders are written as absolute paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .deepmd_input import Notes


def _abs(path: Path) -> str:
    """Labeler folders (pseudopotentials, orbitals): absolute, as the labelers read them where they run."""
    return str(Path(path).resolve())


FP_KEYS = {"vasp": {"incar", "kspacing", "kgamma", "pp_files"}, "abacus": {"input_file", "pp_files", "orb_files",
                                                                          "kpt_file"},
           "cp2k": {"inp_file"}, "espresso": {"pp_files", "kspacing"}}
FP_KINDS = {"vasp": "vasp", "abacus": "abacus", "cp2k": "cp2k", "qe": "espresso", "pwscf": "espresso",
            "espresso": "espresso"}


def convert_fp(fp: dict, base: Path, out_dir: Path, notes: Notes) -> tuple[dict[str, Any], int | None]:
    kind = FP_KINDS.get(str(fp.get("type", "")).lower())
    top = {"type", "task_max", "run_config", "config", "inputs_config"}
    nested = "inputs_config" in fp
    config = fp.get("inputs_config") or {k: v for k, v in fp.items() if k not in top}
    command = (fp.get("run_config") or fp.get("config") or {}).get("command")
    label: dict[str, Any] = {}
    if kind is not None:
        readers = {"vasp": _vasp, "abacus": _abacus, "cp2k": _cp2k, "espresso": _espresso}
        label = readers[kind](config, base, out_dir, notes)
        if command:
            label["command"] = command
        notes.rest(config, "fp.inputs_config." if nested else "fp.", FP_KEYS[kind], "not mapped (see our label: section)")
    elif fp:
        notes.add("fp.type", f"{fp.get('type')!r} has no labeler here (vasp, abacus, cp2k, qe are mapped): the label "
                  "section is left at its default (tblite); set label.kind")
    notes.rest(fp, "fp.", top | (set() if nested else set(config)), "not mapped (see our label: section)")
    return label, fp.get("task_max")


def _files_by_element(files: dict, key: str, notes: Notes) -> tuple[str | None, dict[str, str]]:
    """{element: path} -> (their common folder, {element: file name}); None when they are in several folders."""
    paths = {el: Path(p) for el, p in files.items()}
    folders = {p.parent for p in paths.values()}
    if len(folders) != 1:
        notes.add(key, "the files are in several folders; put them in one folder (one pseudo_dir here)")
        return None, {}
    return str(folders.pop()), {el: p.name for el, p in paths.items()}


def _put_folder(section: dict, config: dict, key: str, folder: str, names: str, base: Path, notes: Notes) -> None:
    """``fp.<key>`` {element: file} -> ``section[folder]`` (their one folder) and ``section[names]``
    ({element: file name}); a note instead when the files are in several folders."""
    if config.get(key):
        where, files = _files_by_element({el: base / p for el, p in config[key].items()}, f"fp.{key}", notes)
        if where is not None:
            section[folder], section[names] = _abs(Path(where)), files


def _key_values(text: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``KEY = VALUE`` (INCAR; several per line with ';') or ``key value`` (ABACUS INPUT) lines,
    comments (# !) removed, numbers and logicals parsed."""
    out: dict[str, Any] = {}
    for raw in text.splitlines():
        content = re.split(r"[#!]", raw, maxsplit=1)[0]
        for line in (content.split(";") if "=" in content else [content]):
            line = line.strip()
            if not line or line.upper() in skip:
                continue
            key, _, value = line.partition("=") if "=" in line else line.partition(" ")
            out[key.strip()] = _number(value.strip())
    return out


def _number(value: str) -> Any:
    if value.upper() in (".TRUE.", "T", "TRUE"):
        return True
    if value.upper() in (".FALSE.", "F", "FALSE"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _vasp(config: dict, base: Path, out_dir: Path, notes: Notes) -> dict[str, Any]:
    vasp: dict[str, Any] = {}
    if config.get("incar"):
        incar = _key_values((base / config["incar"]).read_text())
        if "KSPACING" in incar:
            vasp["kspacing"] = float(incar.pop("KSPACING"))
        if incar.pop("KGAMMA", True) is False:
            notes.add("fp.incar.KGAMMA", "false: the k-point grid here is always Γ-centred")
        vasp["incar"] = incar
    if config.get("kspacing"):
        vasp["kspacing"] = float(config["kspacing"])
    if config.get("kgamma") is False:
        notes.add("fp.kgamma", "false: the k-point grid here is always Γ-centred")
    pots = {el: Path(p) for el, p in (config.get("pp_files") or {}).items()}
    if pots and all(p.name == "POTCAR" for p in pots.values()) and len({p.parent.parent for p in pots.values()}) == 1:
        vasp["potcar_dir"] = _abs(base / next(iter(pots.values())).parent.parent)
        vasp["potcars"] = {el: p.parent.name for el, p in pots.items()}
    elif pots:
        notes.add("fp.pp_files", "the vasp labeler reads <potcar_dir>/<name>/POTCAR: store each file as "
                  "<dir>/<name>/POTCAR and set label.vasp.potcar_dir and potcars")
    return {"kind": "vasp", "vasp": vasp}


def _abacus(config: dict, base: Path, out_dir: Path, notes: Notes) -> dict[str, Any]:
    abacus: dict[str, Any] = {}
    if config.get("input_file"):
        abacus["input"] = _key_values((base / config["input_file"]).read_text(), skip=("INPUT_PARAMETERS",))
        for key in ("pseudo_dir", "orbital_dir", "calculation"):
            abacus["input"].pop(key, None)
    _put_folder(abacus, config, "pp_files", "pseudo_dir", "pseudopotentials", base, notes)
    _put_folder(abacus, config, "orb_files", "orbital_dir", "orbitals", base, notes)
    if config.get("kpt_file"):
        notes.add("fp.kpt_file", "k-points come from label.abacus.kspacing here (a Γ-centred grid)")
    return {"kind": "abacus", "abacus": abacus}


def _cp2k(config: dict, base: Path, out_dir: Path, notes: Notes) -> dict[str, Any]:
    cp2k: dict[str, Any] = {}
    if config.get("inp_file"):
        cp2k["inp"] = (base / config["inp_file"]).read_text()
        notes.add("fp.inp_file", "merged into the input the cp2k labeler generates (its FORCE_EVAL/SUBSYS are "
                  "ours): check label.cp2k.inp")
    return {"kind": "cp2k", "cp2k": cp2k}


def _espresso(config: dict, base: Path, out_dir: Path, notes: Notes) -> dict[str, Any]:
    espresso: dict[str, Any] = {}
    _put_folder(espresso, config, "pp_files", "pseudo_dir", "pseudopotentials", base, notes)
    if config.get("kspacing"):
        espresso["kspacing"] = float(config["kspacing"])
    return {"kind": "espresso", "espresso": espresso}
