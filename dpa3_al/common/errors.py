"""Errors of the model core. Every message names what is wrong, where, and what to do."""


class UserError(Exception):
    """An error caused by input (file, config, structure), with a complete message.

    The CLI prints such errors as one line without a traceback.
    """


class InputError(UserError, ValueError):
    """A structure or dataset that the model cannot evaluate (unknown element, NaN, overlap)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read: corrupted, unsupported descriptor, unknown head."""


class MemoryEstimateError(UserError, MemoryError):
    """A system that would not fit in memory; raised before any allocation."""
