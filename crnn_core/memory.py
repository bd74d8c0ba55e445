"""Keeping a long-running process's resident memory flat."""

from __future__ import annotations

import ctypes
import sys


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only).

    Tensors of ever-changing widths fragment glibc's heap: before channels-last, a training
    run's resident memory grew ~100 MB an epoch on the sample set (770 -> 1,080 MB in 3
    epochs) and stayed at ~430 MB with a trim after each epoch, at no measurable speed cost.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc (e.g. musl): nothing to do
