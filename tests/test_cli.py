"""The command line's shape: every verb runs a function and says what it does; the verbs about
one run take RUN and --runs; ``dpa3-al label`` labels frames end to end (ASE EMT, seconds)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dpa3_al.cli import build_parser, main


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_verb_runs_a_function_and_has_a_help_line() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in action._choices_actions}
    verbs = _verbs(parser)
    assert {"train", "test", "info", "explore", "select", "label", "report", "convert", "export", "submit",
            "status", "resume", "stop", "list", "render", "download", "validate", "data"} <= set(verbs)
    for name, sub in verbs.items():
        assert helps.get(name), f"{name}: no one-line help in 'dpa3-al --help'"
        if name != "data":             # data dispatches to its own sub-verbs
            assert callable(sub.get_default("func")), f"{name}: runs no function"


@pytest.mark.parametrize("verb, first_words", [
    ("explore", "Expand the task groups of one stage"), ("select", "Read every DIR/task-*/"),
    ("report", "Read a run directory"), ("convert", "Convert a deepmd-kit training input"),
    ("export", "Write MODEL (ours, or a deepmd-kit checkpoint)"), ("label", "Label the frames of an extxyz"),
])
def test_single_verb_modules_describe_the_verb_with_their_docstring(verb: str, first_words: str) -> None:
    description = _verbs(build_parser())[verb].description
    assert description.startswith(first_words), description


@pytest.mark.parametrize("verb", ["status", "resume", "stop", "download"])
def test_verbs_about_one_run_take_run_and_runs(verb: str) -> None:
    args = build_parser().parse_args([verb, "water", "--runs", "elsewhere"])
    assert (args.run, args.runs) == ("water", Path("elsewhere"))
    assert args.func.__name__ == f"cmd_{verb}"
    assert build_parser().parse_args([verb, "water"]).runs == Path("runs")


def test_model_verbs_share_model_and_head() -> None:
    parser = build_parser()
    for argv in (["export", "m.pt", "--head", "h", "-o", "x.pt"], ["test", "m.pt", "d", "--head", "h"],
                 ["info", "m.pt", "--head", "h"]):
        args = parser.parse_args(argv)
        assert (args.model, args.head) == (Path("m.pt"), "h"), argv
    args = parser.parse_args(["select", "dir", "--models", "a.pt", "--head", "h"])
    assert (args.head, args.device) == ("h", "cpu")


def test_label_verb_labels_frames_and_collects_them(tmp_path: Path) -> None:
    import ase.io
    from ase.build import bulk

    frames = [bulk("Cu", "fcc", a=3.6 + 0.02 * i, cubic=True) for i in range(2)]
    ase.io.write(tmp_path / "frames.extxyz", frames, format="extxyz")
    (tmp_path / "label.yaml").write_text("label:\n  kind: ase\n")
    out = tmp_path / "work"
    assert main(["label", str(tmp_path / "frames.extxyz"), "--config", str(tmp_path / "label.yaml"),
                 "--out", str(out)]) == 0
    labeled = ase.io.read(out / "labeled.extxyz", index=":")
    assert len(labeled) == 2
    energies = [a.get_potential_energy() for a in labeled]
    assert energies[0] != energies[1]           # different lattice constants, different EMT energies


def test_schema_and_template_verbs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["schema", "select"]) == 0
    assert capsys.readouterr().out.startswith("select:\n")
    assert main(["template"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["template", "quickstart", "-o", str(tmp_path / "q.yaml")]) == 0
    assert (tmp_path / "q.yaml").is_file()
