"""glibc's heap kept for reuse while training runs.

A CPU training step allocates and frees the same activation buffers (16 MiB for a task of 32
ensemble tiles) thousands of times. Under glibc's default, adaptive settings, freed memory at
the top of a heap is handed back to the kernel and a large block may be mapped afresh, so steps
fault their buffers' pages back in: 185-254 page faults a tile in the fused ensemble's CPU
steps, about 1 under :func:`heap_reuse`, which :func:`training.train` runs in. It raises the
thresholds for the duration of a run, then gives the memory freed meanwhile back to the system.
Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
#: what glibc's adaptive thresholds become once a process has freed a large block (their
#: ceilings on 64-bit systems), set back after a run: a value set stays fixed, so glibc's
#: initial 128 KiB would map every larger block afresh for the rest of the process
_AFTER = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 64 * 2**20}
#: blocks up to this size come from the heap rather than their own mapping
MMAP_THRESHOLD = 64 * 2**20
#: free memory kept at a heap's top before any is given back
TRIM_THRESHOLD = 256 * 2**20


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own symbol: musl has a mallopt that ignores us
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def heap_reuse():
    """Keep freed heap memory (up to :data:`TRIM_THRESHOLD` a heap) and serve blocks up to
    :data:`MMAP_THRESHOLD` from it while the block runs; the process may hold that much more
    memory meanwhile. Yields whether the settings took effect."""
    libc = _glibc()
    applied = bool(libc) and all([libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                  libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)])
    try:
        yield applied
    finally:
        if libc:
            for parameter, value in _AFTER.items():
                libc.mallopt(parameter, value)
            libc.malloc_trim(0)  # what the run freed goes back, wherever it lies in a heap
