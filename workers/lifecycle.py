"""Process lifetime on Linux: a child that must not outlive its parent, even when the parent is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (PR_SET_PDEATHSIG).

    Safe to call between fork and exec.  When ``expected_parent`` is given and the parent
    is already gone (the race before the call), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


# -- memory of long-lived worker processes -----------------------------------------------------------
# A worker's pool process runs shard after shard for days.  Each shard makes and frees multi-100 KB
# buffers (HDR counts arrays, the loop's and the connections' buffers).  glibc serves an allocation
# above its mmap threshold with mmap and returns it on free, but after the first such free it raises
# the threshold to that size, so later buffers come from the heap, whose freed middle is not given
# back: a 60-minute soak showed the pool process's RSS climbing in ~1 MB steps at slice boundaries
# while its Python objects did not grow (tracemalloc).  A fixed threshold keeps big buffers on mmap,
# and a trim after each shard hands back what the heap freed.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed (setting it turns the dynamic raise off)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc has both; musl has neither
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def steady_malloc() -> bool:
    """Fix glibc's mmap threshold in this process (see above); False where there is no glibc."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_memory() -> None:
    """After a shard: collect cycles, then give the heap's free pages back to the kernel (glibc)."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
