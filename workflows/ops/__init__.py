"""The loop's dflow OPs, one per file. Each OP declares its inputs and outputs, unpacks
paths, calls ONE function (named by import path in its ``func`` parameter; the default is
the project's real function) and packs the outputs. See docs/workflows.md for the contract
of every function.

Import the OP classes from their modules (``from dpa3_al.workflows.ops.train import Train``);
this package does not import them eagerly, so a step process loads only the OP it runs.
"""

OP_MODULES = {
    "bootstrap": ("dpa3_al.workflows.ops.bootstrap", "Bootstrap"),
    "train": ("dpa3_al.workflows.ops.train", "Train"),
    "prep-explore": ("dpa3_al.workflows.ops.prep_explore", "PrepExplore"),
    "run-explore": ("dpa3_al.workflows.ops.run_explore", "RunExplore"),
    "select": ("dpa3_al.workflows.ops.select_candidates", "Select"),
    "prep-label": ("dpa3_al.workflows.ops.prep_label", "PrepLabel"),
    "run-label": ("dpa3_al.workflows.ops.run_label", "RunLabel"),
    "collect": ("dpa3_al.workflows.ops.collect", "Collect"),
    "evaluate": ("dpa3_al.workflows.ops.evaluate", "Evaluate"),
    "decide": ("dpa3_al.workflows.ops.decide", "Decide"),
}


def op_class(step: str):
    """The OP class of a step name (``"run-explore"`` -> ``RunExplore``)."""
    import importlib

    from ..keys import base_step

    module, name = OP_MODULES[base_step(step)]
    return getattr(importlib.import_module(module), name)
