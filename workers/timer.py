"""Sub-millisecond sleeps for the pacer: a Linux timerfd armed at an absolute monotonic time.

uvloop (libuv) and asyncio both wait in whole milliseconds, so a plain ``asyncio.sleep``
wakes up to ~2 ms late, which would show up as send lag.  A timerfd registered with the
loop wakes epoll at the due time with the kernel's timer slack (~50 µs) and no spinning.
Falls back to sleeping short and yielding where timerfd is unavailable.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import math
import os
import sys
import time

_CLOCK_MONOTONIC = 1  # time.monotonic() reads CLOCK_MONOTONIC on Linux
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create  # noqa: B018 - probe the symbol
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


class Waker:
    """``await waker.until(t)`` returns at monotonic time ``t`` (or soon after).

    Any number of coroutines may wait at once: deadlines sit in a heap and the one timerfd
    is armed for the earliest.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = -1
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._armed = math.inf
        if _LIBC is not None:
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                # Timer slack defaults to 50 µs; 1 µs keeps send lag honest at high rates.
                _LIBC.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)
                self._fd = fd
                self._spec = _Itimerspec()
                self._loop.add_reader(fd, self._fired)

    def _arm(self, deadline: float) -> None:
        self._armed = deadline
        sec = int(deadline)
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = max(1, int((deadline - sec) * 1e9))  # 0 would disarm
        _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None)  # type: ignore[union-attr]

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._armed = math.inf
        heap = self._heap
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)
        if heap:
            self._arm(heap[0][0])

    async def until(self, deadline: float) -> None:
        if self._fd < 0:
            wait = deadline - time.monotonic()
            await asyncio.sleep(wait - 0.001 if wait > 0.0015 else 0)
            return
        fut = self._loop.create_future()
        heapq.heappush(self._heap, (deadline, next(self._order), fut))
        if deadline < self._armed:
            self._arm(deadline)
        await fut

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        for _, _, fut in self._heap:
            fut.cancel()
        self._heap.clear()
