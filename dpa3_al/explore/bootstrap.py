"""Start from structures alone: perturbed copies of the starting structures, to be labeled
before the first training (the loop's ``bootstrap`` step, used when a run has no initial data).

Every configuration source of every task group of every stage is read once (its own
perturbation settings are ignored); each structure gives ``copies`` copies with a random
symmetric cell strain (|e_ij| <= ``cell``) and atom displacements (|dx| <= ``atom`` Å), seeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dpa3_al.common.typed_config import field

from .config import ExploreConfig, PerturbSpec
from .configurations import generate
from .tasks import atomic_write_text

log = logging.getLogger(__name__)

CANDIDATES = "candidates.extxyz"


@dataclass(frozen=True)
class BootstrapConfig:
    """Labels made before the first training when a run has no initial data."""

    copies: int = field(8, doc="perturbed copies of each starting structure", ge=1)
    cell: float = field(0.03, doc="maximum relative cell strain per component", ge=0, lt=1)
    atom: float = field(0.1, doc="maximum displacement of each atom along each axis", unit="Å", ge=0)
    keep_original: bool = field(True, doc="also label the unperturbed structures")
    seed: int = field(0, doc="random seed of the perturbations")


def bootstrap_frames(explore: ExploreConfig, cfg: BootstrapConfig, base_dir: Path) -> list:
    """Perturbed copies of every distinct starting structure of ``explore`` (ase.Atoms list)."""
    frames, seen = [], set()
    pert = PerturbSpec(copies=cfg.copies, cell=cfg.cell, atom=cfg.atom, keep_original=cfg.keep_original)
    for s, stage in enumerate(explore.stages):
        for g, group in enumerate(stage.task_groups):
            for k, spec in enumerate(group.configurations):
                key = repr(replace(spec, perturb=None))
                if key in seen:
                    continue
                seen.add(key)
                rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, s, g, k]))
                for conf in generate(replace(spec, perturb=pert), base_dir, rng):
                    conf.atoms.info.update(source="bootstrap", label=conf.label)
                    frames.append(conf.atoms)
    return frames


def write_bootstrap(explore: ExploreConfig, cfg: BootstrapConfig, base_dir: Path, workdir: Path) -> int:
    """The bootstrap step: write ``workdir/candidates.extxyz`` (what the labeling steps read as a
    selection folder); returns the frame count. ``base_dir``: where relative structure files are."""
    frames = bootstrap_frames(explore, cfg, base_dir)
    if not frames:
        raise ValueError("bootstrap: the explore section names no starting structures to perturb")
    import io

    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(workdir) / CANDIDATES, buf.getvalue())
    log.info("bootstrap: %d frames to label", len(frames))
    return len(frames)
