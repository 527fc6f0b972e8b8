"""The labeled dataset (deepmd npy systems + a provenance index).

Rooms: :mod:`.records` (provenance and failure records, a frame's canonical form),
:mod:`.store` (:class:`LabeledDataset`: add, deduplicate, read, export), :mod:`.npy` (deepmd npy
files), :mod:`.readers` (extxyz and dpdata formats), :mod:`.collect` (the collect step).
"""

from .collect import CollectConfig, collect
from .npy import find_deepmd_systems
from .readers import read_labeled
from .records import AddReport, DatasetSummary, FailureRecord, FrameRecord, Provenance
from .store import LabeledDataset

__all__ = ["LabeledDataset", "Provenance", "FrameRecord", "FailureRecord", "AddReport", "DatasetSummary",
           "read_labeled", "find_deepmd_systems", "collect", "CollectConfig"]
