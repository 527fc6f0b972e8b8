"""Process-level performance settings for CPU evaluation.

glibc's default allocator returns large blocks to the kernel as soon as they are freed, so
every large temporary tensor is page-faulted in again on the next call: on 2 cores that
doubled the wall time of DPA3 evaluation (shared/design/performance.md measured the same on
deepmd-kit). :func:`tune_malloc` sets, at run time through ``mallopt``, the equivalent of

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=1073741824

so that freed memory is reused instead of unmapped. It is applied once, by the calculators and
the trainer; set DPA3_AL_MALLOC=default to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = {M_MMAP_THRESHOLD: 32 * 1024 * 1024, M_TRIM_THRESHOLD: 16 * 1024 ** 3, M_TOP_PAD: 1024 ** 3}
_state = {"applied": None}


def tune_malloc() -> str:
    """Apply the allocator settings once; returns a one-line description of what is in effect."""
    if _state["applied"] is not None:
        return _state["applied"]
    if os.environ.get("DPA3_AL_MALLOC", "").lower() == "default" or os.environ.get("GLIBC_TUNABLES"):
        _state["applied"] = "malloc: process default" + (" (GLIBC_TUNABLES set)" if os.environ.get("GLIBC_TUNABLES") else "")
        return _state["applied"]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(k, v) == 1 for k, v in _SETTINGS.items())
    except (OSError, AttributeError):
        ok = False
    _state["applied"] = ("malloc: glibc mallopt mmap_threshold=32MiB trim_threshold=16GiB top_pad=1GiB" if ok
                         else "malloc: default (mallopt unavailable)")
    return _state["applied"]
