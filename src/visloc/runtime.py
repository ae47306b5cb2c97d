"""Process-level tuning for CPU inference, applied by the command line (opt-in for library users), and the
thread pinning that keeps network descriptors the same bit for bit wherever a map is built.

glibc returns every large buffer (image pyramids, similarity matrices) to the kernel with ``munmap`` and
page-faults it back on the next image; raising the mmap and trim thresholds keeps those buffers in the
heap. On the 2-core development machines this makes OpenCV SIFT on 640x480 images about 30 % faster
(122 -> 86 ms per image, same process, measured in ``benchmarks``' conditions).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc caps the mmap threshold at 32 MiB on 64-bit systems.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024


def _mallopt():
    """glibc's ``mallopt``, or ``None`` off Linux/glibc (musl and other libcs have none)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None


def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds for this process. Returns whether it was applied
    (``False`` off Linux/glibc, where nothing changes)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    logger.debug("malloc tuning %s", "applied" if ok else "refused")
    return ok


_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``); returns whether it applied (``False`` off glibc).

    glibc gives threads that allocate at once arenas of their own; a server's worker and event-loop threads
    then keep freed memory in several arenas and resident memory creeps up: +5.8-6.7 % over 1,000 requests
    without the cap, +0.06 % with it (``benchmarks/service.py``, docs/results/service.md)."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the count.

    A convolution sums in an order that depends on the thread count, so a network descriptor computed with 2
    threads can differ in the last float bit from one computed with 1 (1.8e-7 measured on the shipped relpose
    encoder). Map builds compute database descriptors with one thread, the count of a cluster worker's task,
    so that a map is the same bit for bit whoever built it."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
