"""Plumbing shared by every room (``dpa3_al.common``): errors, typed configs, file I/O.

The bottom of the import graph: these modules import only the standard library (and nothing
from ``dpa3_al``, ``dpa3_al.model`` or ``dpa3_al.workflows``), so the model core, the
active-learning code and the workflows can all use them without import circles.
"""
