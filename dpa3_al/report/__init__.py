"""The run report (``dpa3-al report``): a run directory in, ``report.md`` + ``report.html`` out.

Rooms: :mod:`.data` (the run's files -> a data model, through each contract's own reader),
:mod:`.lcurve` (learning curves), :mod:`.document` (blocks and their Markdown/HTML rendering),
:mod:`.plots` (the figures), :mod:`.build` (blocks of a run; writing the report).
"""

from .build import build_document, build_report, write_report
from .data import IterationData, RunData, load_run
from .lcurve import LearningCurve, read_lcurve

__all__ = ["build_report", "load_run", "write_report", "build_document", "read_lcurve", "LearningCurve", "RunData",
           "IterationData"]
