"""The Argo render and the image recipe (Containerfile) agree (issue 20, scale-out).

`dpa3-al render` names an image (workflow.argo.image) and runs each step as that image's
`python3` on a script importing dflow and dpa3_al.workflows.ops.*, with artifacts under /tmp.
The Containerfile at the repository root builds that image. It cannot be built or run here
(no container runtime, no registry, no Argo server), so these tests check the text of both:
the tag, the interpreter, that every module a step script imports is installed by the recipe,
the artifact paths, and the system packages the labelers need.
"""

from __future__ import annotations

import re
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml

from dpa3_al.config import load_run_config
from dpa3_al.workflows import render
from dpa3_al.workflows.plan import plan_from_config

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "Containerfile"


@pytest.fixture(scope="module")
def rendered():
    cfg = load_run_config(ROOT / "templates" / "argo.yaml")
    doc = yaml.safe_load(render(plan_from_config(cfg, ROOT / "templates"), "quickstart-argo"))
    scripts = [t["script"] for t in doc["spec"]["templates"] if "script" in t]
    assert scripts, "the render has no step templates"
    return cfg, doc, scripts


def _recipe() -> str:
    assert RECIPE.is_file(), "no Containerfile at the repository root"
    return RECIPE.read_text()


def _run_lines(text: str) -> str:
    """The recipe with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def test_the_rendered_image_is_the_one_the_recipe_documents_and_versions(rendered):
    cfg, _, scripts = rendered
    assert {s["image"] for s in scripts} == {cfg.workflow.argo.image}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    repo, _, tag = cfg.workflow.argo.image.rpartition(":")
    assert repo.rsplit("/", 1)[-1] == "dpa3-al" and tag == version
    built = re.findall(r"build -f Containerfile -t (\S+) \.", _recipe())
    assert built and set(built) == {cfg.workflow.argo.image}, "the recipe's build command must tag the image the template names"


def test_every_step_runs_the_recipes_python3_on_importable_modules(rendered):
    cfg, _, scripts = rendered
    assert {tuple(s["command"]) for s in scripts} == {(cfg.workflow.argo.python,)} == {("python3",)}
    recipe = _run_lines(_recipe())
    base = re.search(r"^FROM python:(\d+)\.(\d+)", recipe, re.M)
    assert base, "the image must come from an official python image (python3 on PATH)"
    assert (int(base.group(1)), int(base.group(2))) >= (3, 10)          # requires-python
    modules = set()
    for script in scripts:
        for a, b in re.findall(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))", script["source"], re.M):
            modules.update(m.strip() for m in (a or b).split(",") if m.strip())
    ours = sorted(m for m in modules if m.split(".")[0] == "dpa3_al")
    assert ours and all(find_spec(m) is not None for m in modules), modules
    # our modules come from the package folders the recipe copies and pip installs
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for module in ours:
        top = next(d for p, d in sorted(package_dirs.items(), key=lambda kv: -len(kv[0]))
                   if module == p or module.startswith(p + "."))
        assert re.search(rf"^COPY {re.escape(top)} ", recipe, re.M), f"{module}: {top}/ is not copied into the image"
    install = re.search(r"pip install .*-c constraints\.txt \"?\.(\[[\w,]+\])?\"?", recipe)
    assert install, "the recipe must pip install the repository with constraints.txt"
    assert re.search(r"^COPY .*constraints\.txt", recipe, re.M) and re.search(r"^COPY .*pyproject\.toml", recipe, re.M)
    assert "import dflow, dpa3_al.workflows.ops.train" in recipe        # the build fails if a step could not import


def test_artifacts_live_under_tmp_which_the_image_leaves_writable(rendered):
    _, doc, _ = rendered
    paths = []
    for template in doc["spec"]["templates"]:
        for side in ("inputs", "outputs"):
            paths += [a["path"] for a in (template.get(side) or {}).get("artifacts", []) if "path" in a]
    assert paths and all(re.match(r"/tmp/(inputs|outputs)/artifacts/\w+$", p) for p in paths), paths
    recipe = _run_lines(_recipe())
    assert not re.search(r"(chmod|chown)\s.*\s/tmp\b|VOLUME\s+/tmp", recipe), "the recipe must leave /tmp as it is"
    user = re.findall(r"^USER (\S+)", recipe, re.M)
    assert user and user[-1] != "root" and user[-1] != "0"               # unprivileged steps, /tmp 1777


def test_the_recipe_installs_the_labelers_system_packages(rendered):  # noqa: ARG001
    setup = (ROOT / "scripts" / "setup-env.sh").read_text()
    wanted = set(re.findall(r"apt_pkgs\+=\(([\w.-]+)\)", setup)) - {"slurm-wlm", "munge"}   # scheduler tests only
    assert {"quantum-espresso", "quantum-espresso-data", "cp2k"} <= wanted
    installed = set()
    for line in re.findall(r"apt-get install ([^&\n]+)", _run_lines(_recipe())):
        installed.update(w for w in line.split() if not w.startswith("-"))
    assert wanted <= installed, f"missing in the Containerfile: {sorted(wanted - installed)}"
