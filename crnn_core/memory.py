"""Keeping a long-running process's resident memory flat."""

from __future__ import annotations

import ctypes
import sys


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only).

    Batches of ever-changing widths fragment glibc's heap: without this, a run's resident
    memory grew by ~100 MB an epoch on the sample set (770 -> 1,080 MB in 3 epochs); with a
    trim after each epoch it stayed at ~430 MB, at no measurable speed cost.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc (e.g. musl): nothing to do
