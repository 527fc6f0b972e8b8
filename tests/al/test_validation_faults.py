"""Issue 20's bad inputs: each is refused by `validate` as one line naming the file and the key,
quickly and without a traceback, and `submit` refuses exactly the same inputs with the same line.

Defects covered: 2 (alias bomb, deep nesting, non-UTF-8 bytes, absurd supercell), 4 (frame
index syntax, an index selecting nothing), 6 (run names, NaN/inf, huge counts, repeated keys,
``py/`` keys; validate == submit), 8 (the empty type map), 9 (checkpoint error text),
10 (label.ase.calculator restricted to ASE calculator classes).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dpa3_al.cli import main
from dpa3_al.common.typed_config import MAX_INT, ConfigError, field, from_dict
from dpa3_al.common.yamlio import MAX_DEPTH, load_yaml_text
from dpa3_al.config import load_run_config

from .config_edits import quickstart, with_key

from .config_edits import TEMPLATES
G = "explore.stages[0].task_groups[0]"
C0 = f"{G}.configurations[0]"


def _with_label(cfg: dict, label: dict) -> dict:
    return {**copy.deepcopy(cfg), "label": label}


def _bomb_text() -> str:
    """A "billion laughs" (9^9 strings) inside label.ase.kwargs: a few hundred bytes of YAML."""
    rows = ["    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = yaml.safe_dump({k: v for k, v in quickstart().items() if k != "label"})
    return text + "label:\n  kind: ase\n  ase:\n   kwargs:\n" + "\n".join(" " + r for r in rows) + "\n"


def _deep_text(depth: int = 5000) -> str:
    text = yaml.safe_dump({k: v for k, v in quickstart().items() if k != "label"})
    return text + "label: {kind: ase, ase: {kwargs: " + "{x: " * depth + "1" + "}" * depth + "}}\n"


def _duplicate_text() -> str:
    text = yaml.safe_dump(quickstart(), sort_keys=False)
    assert "\nseed: 1\n" in text
    return text.replace("\nseed: 1\n", "\nseed: 1\nname: other\n", 1)   # `name` is given twice


#: (id, the config as a dict or YAML text or bytes, text the one error line must contain)
BAD = [
    ("alias bomb in label.ase.kwargs", _bomb_text(), "billion laughs"),
    ("mappings 5000 deep", _deep_text(), f"nested more than {MAX_DEPTH} levels"),
    ("bytes that are not UTF-8", yaml.safe_dump(quickstart()).encode() + b"# caf\xe9\n", "is not UTF-8"),
    ("duplicate key", _duplicate_text(), "key 'name' is given twice in one mapping (lines"),
    ("supercell of 4e9 atoms", with_key(quickstart(), f"{G}.configurations",
                                   [{"lattice": {"symbols": "O", "crystal": "fcc", "a": 3.6, "cubic": True},
                                     "supercell": [1000, 1000, 1000]}]),
     "makes 4,000,000,000 atoms; the limit is 1,000,000"),
    ("a billion perturbed copies", with_key(quickstart(), f"{C0}.perturb", {"copies": 10**9, "atom": 0.1}),
     "exceed the limit of 20,000,000 atoms"),
    ("a billion bootstrap copies", {**with_key(quickstart(), "init_data", []), "bootstrap": {"copies": 10**9}},
     "bootstrap.copies: "),
    ("index abc", with_key(quickstart(), f"{C0}.index", "abc"), f"{C0}.index: 'abc' is not a frame index"),
    ("index with step 0", with_key(quickstart(), f"{C0}.index", "0:10:0"), "step of a slice cannot be 0"),
    ("index selecting no frame", with_key(quickstart(), f"{C0}.index", "100:200"), "selects none of its"),
    ("name with a slash", with_key(quickstart(), "name", "a/b"), "name: run name 'a/b'"),
    ("name ..", with_key(quickstart(), "name", ".."), "name: run name '..'"),
    ("name with $(...)", with_key(quickstart(), "name", "$(touch pwned)"), "name: run name '$(touch pwned)'"),
    ("empty name", with_key(quickstart(), "name", ""), "name: run name ''"),
    ("name of 41 characters", with_key(quickstart(), "name", "a" * 41), "use 1-40 lower-case letters"),
    ("NaN temperature", with_key(quickstart(), f"{G}.temps", [float("nan")]), f"{G}.temps[0]: nan is not a finite number"),
    ("infinite temperature", with_key(quickstart(), f"{G}.temps", [float("inf")]), f"{G}.temps[0]: inf is not a finite"),
    ("infinite timestep", with_key(quickstart(), f"{G}.timestep", float("inf")), f"{G}.timestep: inf is not a finite"),
    ("numb_steps 1e300", with_key(quickstart(), "train.training.numb_steps", 1e300),
     "train.training.numb_steps: 1e+300 is beyond 1e+12"),
    ("MD steps 1e13", with_key(quickstart(), f"{G}.steps", 10**13), f"{G}.steps: 10000000000000 is beyond"),
    ("py/ key in label.ase.kwargs", _with_label(quickstart(), {"kind": "ase", "ase": {"kwargs": {"py/object": "os.system"}}}),
     "label.ase.kwargs.py/object: keys starting with 'py/' are reserved"),
    ("nested py/ key", _with_label(quickstart(), {"kind": "ase", "ase": {"kwargs": {"a": [{"py/reduce": 1}]}}}),
     "label.ase.kwargs.a[0].py/reduce: keys starting with 'py/'"),
    ("calculator that is a function", _with_label(quickstart(), {"kind": "ase", "ase": {
        "calculator": "subprocess.run", "kwargs": {"args": "touch pwned", "shell": True}}}),
     "label.ase.calculator: 'subprocess.run' is a function; only ASE calculator classes"),
    ("calculator that is a non-calculator class", _with_label(quickstart(), {"kind": "ase", "ase": {"calculator": "ase.Atoms"}}),
     "label.ase.calculator: 'ase.Atoms' is a class that is not an ASE calculator"),
    ("calculator that does not import", _with_label(quickstart(), {"kind": "ase", "ase": {"calculator": "nowhere.Calc"}}),
     "label.ase.calculator: cannot import 'nowhere.Calc'"),
]


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "run.yaml"
    if isinstance(content, dict):
        path.write_text(yaml.safe_dump(content))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    data = tmp_path / "data"
    if not data.exists():
        data.symlink_to(TEMPLATES / "data")
    return path


def _error_line(capsys, verb: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    prefix = f"dpa3-al {verb}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix):]


@pytest.fixture
def no_launch(monkeypatch):
    """`submit` without starting a driver: every check and the run directory, no process."""
    import dpa3_al.workflows.driver as driver

    launched = []
    monkeypatch.setattr(driver, "_launch", lambda run, **kw: launched.append(run.root))
    return launched


@pytest.mark.parametrize("what,content,expected", BAD, ids=[b[0] for b in BAD])
def test_validate_and_submit_refuse_the_same_bad_input_with_the_same_line(tmp_path, capsys, no_launch,
                                                                          what, content, expected):
    path = _write(tmp_path, content)
    start = time.monotonic()
    assert main(["validate", str(path)]) == 1, f"{what}: validate accepted it"
    assert time.monotonic() - start < 20, f"{what}: validate took {time.monotonic() - start:.0f} s"
    line = _error_line(capsys, "validate")
    assert line.startswith(str(path)) and expected in line, line
    runs = tmp_path / "runs"
    assert main(["submit", str(path), "--runs", str(runs)]) == 1, f"{what}: submit accepted it"
    assert _error_line(capsys, "submit") == line
    assert not no_launch and not (runs.exists() and any(runs.iterdir())), "submit created a run"
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_frame_index_may_be_an_integer_or_a_slice(tmp_path):
    for index, frames in [(-1, 1), ("3", 1), ("0:12:4", 3), (":", None)]:
        path = _write(tmp_path, with_key(quickstart(), f"{C0}.index", index))
        spec = load_run_config(path).explore.stages[0].task_groups[0].configurations[0]
        assert spec.index == str(index)
        from dpa3_al.explore.configurations import build_pool

        pool = build_pool([spec], tmp_path, seed=0)
        assert frames is None and len(pool) > 3 or len(pool) == frames


def test_validate_and_submit_accept_the_same_good_config(tmp_path, capsys, no_launch):
    path = _write(tmp_path, quickstart())
    assert main(["validate", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    runs = tmp_path / "runs"
    assert main(["submit", str(path), "--runs", str(runs)]) == 0
    assert no_launch == [(runs / "quickstart").resolve()]
    assert (runs / "quickstart" / "plan.json").is_file()


def test_alias_bomb_is_refused_in_well_under_a_second():
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"run\.yaml: line \d+: expands to more than 200,000 values"):
        load_yaml_text(_bomb_text(), "run.yaml")
    assert time.monotonic() - start < 1.0


def test_safe_loader_keeps_ordinary_yaml_and_merge_keys():
    text = "base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\nlist: &l [1, 2]\nagain: *l\n"
    assert load_yaml_text(text, "f.yaml") == {"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3},
                                              "list": [1, 2], "again": [1, 2]}
    with pytest.raises(ConfigError, match="refers to the collection that contains it"):
        load_yaml_text("a: &x [1, *x]\n", "f.yaml")
    assert load_yaml_text("a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n", "f.yaml")["a"] is not None


def test_non_utf8_error_names_the_byte_offset(tmp_path, capsys):
    raw = b"name: water\n# caf\xe9\n"
    path = _write(tmp_path, raw)
    assert main(["validate", str(path)]) == 1
    line = _error_line(capsys, "validate")
    offset = raw.index(b"\xe9")
    assert f"byte offset {offset} (line 2): byte 0xe9 is not UTF-8" in line


@dataclass(frozen=True)
class Section:
    temp: float = field(300.0, unit="K")
    temps: list[float] = field(default_factory=list)
    count: int = field(1)
    free: dict[str, Any] = field(default_factory=dict)


def test_typed_config_refuses_non_finite_floats_and_huge_integers_with_the_key_path():
    for data, text in [({"temp": math.nan}, "s.temp: nan is not a finite number"),
                       ({"temp": "-inf"}, "s.temp: '-inf' is not a finite number"),
                       ({"temps": [1.0, math.inf]}, "s.temps[1]: inf is not a finite"),
                       ({"temp": 10**400}, f"s.temp: 1{'0' * 39}... (401 characters) is too large"),
                       ({"count": MAX_INT + 1}, "s.count: 1000000000001 is beyond 1e+12"),
                       ({"count": -1e300}, "s.count: -1e+300 is beyond"),
                       ({"free": {"ok": {"py/set": []}}}, "s.free.ok.py/set: keys starting with 'py/'")]:
        with pytest.raises(ConfigError) as err:
            from_dict(Section, data, path="s")
        assert text in str(err.value), str(err.value)
    ok = from_dict(Section, {"temp": "1e3", "count": MAX_INT, "free": {"python": {"x/py": 1}}})
    assert ok.temp == 1000.0 and ok.count == MAX_INT


def test_empty_type_map_is_the_elements_of_the_structures_and_data(tmp_path, capsys):
    cfg = quickstart()
    del cfg["train"]["model"]["type_map"]
    path = _write(tmp_path, cfg)
    assert load_run_config(path).train.model.type_map == ["H", "O"]   # by atomic number
    assert main(["validate", str(path)]) == 0
    lattice = [{"lattice": {"symbols": "Cu", "crystal": "fcc", "a": 3.61}}]
    copper = with_key(cfg, f"{G}.configurations", lattice)
    copper = with_key(copper, "explore.stages[1].task_groups[0].configurations", lattice)
    path = _write(tmp_path, copper)
    assert load_run_config(path).train.model.type_map == ["H", "O", "Cu"]   # init_data has O, H
    path = _write(tmp_path, {**copper, "init_data": []})
    assert load_run_config(path).train.model.type_map == ["Cu"]
    explicit = with_key(copper, "train.model.type_map", ["O", "H"])
    path = _write(tmp_path, explicit)
    assert main(["validate", str(path)]) == 1
    assert "elements ['Cu'] are not in train.model.type_map" in _error_line(capsys, "validate")


def test_checkpoint_errors_never_suggest_weights_only_false(tmp_path):
    from dpa3_al.common.errors import CheckpointError
    from dpa3_al.model import load_model

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "dpa3-al-model", "config": Payload()}, evil)
    for path, why in [(garbage, "corrupted, truncated or not a torch file"),
                      (evil, "it holds Python objects other than tensors and plain data")]:
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        text = str(err.value)
        assert text.startswith(f"{path}: not a valid checkpoint (") and why in text, text
        assert "weights_only" not in text and "will likely succeed" not in text and "\n" not in text, text
    assert not marker.exists()


def test_ase_backend_refuses_a_non_calculator_before_calling_it(tmp_path):
    from dpa3_al.label.config import AseConfig, LabelConfig
    from dpa3_al.label.inprocess import AseLabeler, _AseBackend, load_calculator_class
    from dpa3_al.label.results import LabelerUnavailable

    marker = tmp_path / "pwned"
    settings = AseConfig(calculator="subprocess.run", kwargs={"args": f"touch {marker}", "shell": True})
    with pytest.raises(LabelerUnavailable, match="'subprocess.run' is a function; only ASE calculator classes"):
        _AseBackend(settings)
    with pytest.raises(LabelerUnavailable, match="is a module"):
        AseLabeler(LabelConfig(kind="ase", ase=AseConfig(calculator="os.path"))).check(["Cu"])
    assert not marker.exists()
    from ase.calculators.emt import EMT

    assert load_calculator_class("ase.calculators.emt.EMT") is EMT
    assert "run configs you trust" in LabelConfig(kind="ase").describe()


@pytest.mark.parametrize("verb", ["train", "label"])
def test_every_verb_reads_its_config_through_the_safe_loader(tmp_path, capsys, verb):
    """`dpa3-al train/label CONFIG` refuse a repeated key (yaml.safe_load keeps the last one)."""
    config = tmp_path / "in.yaml"
    config.write_text("label:\n  kind: emt\n  kind: ase\n" if verb == "label" else
                      "training:\n  numb_steps: 10\n  numb_steps: 20\n")
    argv = [verb, str(config), "-o", str(tmp_path / "out")] if verb == "train" else \
        [verb, str(tmp_path / "frames.extxyz"), "--config", str(config), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "in.yaml" in err and "given twice" in err and "lines 2 and 3" in err, err


def test_the_cli_defaults_to_a_passive_openmp_wait_policy(tmp_path, monkeypatch):
    """Set before a verb imports torch (OpenMP reads it once); a value the user set wins."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main(["validate", str(tmp_path / "absent.yaml")])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main(["validate", str(tmp_path / "absent.yaml")])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
