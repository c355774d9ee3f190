"""The long-lived worker processes' malloc settings (issue 27 item 9): a fixed mmap threshold and a trim
after each shard, so buffers freed by one shard are given back before the next."""

from __future__ import annotations

import subprocess
import sys

from workers import lifecycle


def test_steady_malloc_takes_on_glibc_and_release_memory_is_safe():
    if lifecycle._libc() is None:  # not glibc: both are no-ops
        assert lifecycle.steady_malloc() is False
        lifecycle.release_memory()
        return
    assert lifecycle.steady_malloc() is True
    lifecycle.release_memory()


CHILD = r"""
import ctypes, sys
from workers import lifecycle
steady = sys.argv[1] == "1"
if steady:
    lifecycle.steady_malloc()
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
# What a shard does: buffers of HDR size made and freed, small objects made between them and kept.
keep = []
base = rss()
for round in range(40):
    bufs = [(ctypes.c_ulonglong * 23552)() for _ in range(8)]
    for b in bufs:
        ctypes.memset(b, 1, ctypes.sizeof(b))
    keep.append(bytearray(4000))
    del bufs
    if steady:
        lifecycle.release_memory()
print(rss() - base)
"""


def test_freed_shard_buffers_do_not_stay_in_the_process():
    if lifecycle._libc() is None:
        return
    grown = {}
    for steady in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", CHILD, steady], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        grown[steady] = int(r.stdout)
    # With the fixed threshold and trims, what stays is the small kept objects (~160 KB), never the
    # 1.5 MB of buffers a round frees.
    assert grown["1"] < 1024, grown
    assert grown["1"] <= grown["0"], grown
