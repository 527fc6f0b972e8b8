"""The collect step: the previous iteration's dataset plus this iteration's labels, as a new dataset."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dpa3_al.common.typed_config import field

from .records import Provenance
from .store import LabeledDataset

__all__ = ["CollectConfig", "collect"]


@dataclass(frozen=True)
class CollectConfig:
    """Settings of the collect step."""

    dedup_tol: float = field(1e-3, doc="frames of one system that agree within this are one frame", unit="Å", gt=0)


def collect(cfg: CollectConfig, dataset: Path | None, labeled: Sequence[Path], iteration: int,
            workdir: Path) -> Path:
    """Workflow step: the previous dataset plus this iteration's labels, as a new dataset in ``workdir``.

    ``dataset`` (the previous iteration's, may be None) is never modified: its files are
    hard-linked (the store never rewrites a file, so sharing them is safe) or copied.
    ``labeled`` are run-label folders holding per-frame ``task-NNNNNN/`` directories.
    A rerun in the same ``workdir`` starts again from ``dataset``, so nothing is added twice.
    """
    from dpa3_al.label.tasks import read_results

    root = Path(workdir)
    if root.exists():
        for entry in root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    if dataset is not None and (Path(dataset) / "index").is_dir():
        shutil.copytree(dataset, root, copy_function=_link_or_copy, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".*"))
    store = LabeledDataset(root, dedup_tol=cfg.dedup_tol)
    for folder in labeled:
        store.add(read_results([Path(folder)]), Provenance(iteration=iteration, source=Path(folder).name))
    return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
