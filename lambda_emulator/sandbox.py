"""Sandboxes for the local Lambda's instances: memory caps and CPU shares with cgroups.

AWS Lambda gives each execution environment its configured Memory Size as a hard limit (a
function that allocates beyond it is killed: ``Runtime.OutOfMemory``) and CPU in proportion to
memory: one vCPU at 1,769 MB, up to six at 10,240 MB.  ``Sandbox.detect`` finds out once which
cgroup interface this machine lets us use and makes a parent cgroup for one LocalLambda
(``fnbench-lambda-<pid>-<n>``, under this process's own cgroup where that works, else under the
hierarchy's root); ``Sandbox.cell`` makes one child per instance with

* cgroup v2: ``memory.max`` = Memory Size, ``memory.swap.max`` 0, ``memory.oom.group`` 1,
  ``cpu.max`` = "<quota> 100000";
* cgroup v1: ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap
  accounting exists) in the memory hierarchy, ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` in the
  cpu one;

where quota = Memory Size / 1769 of one CPU per 100 ms period (``cpu_quota_us``), at most 6 CPUs
and at most this machine's.  The quota applies from the end of the instance's Init phase (its first
``/invocation/next``, ``Cell.throttle``): Init runs with the CPU unthrottled, as measured on AWS
("the init code will execute faster than your handler code", bitesizedserverless.com, Lambda Cold
Starts and Bootstrap Code; not a documented guarantee).  ``FNBENCH_LAMBDA_INIT_CPU=memory`` caps
Init at the memory-scaled share too.  The instance's process joins its cell between fork and exec
(``Cell.preexec``, a ``preexec_fn``), so the runtime's first instruction already runs capped.
Its peak (v2 ``memory.peak``, v1 ``memory.max_usage_in_bytes``) is the REPORT's Max Memory Used
and its OOM-kill counter tells an out-of-memory death from a crash.

Where no interface can be used (no cgroupfs, read-only, not root, controllers not delegated,
``FNBENCH_LAMBDA_CGROUPS=off``) the sandbox is "none": instances run uncapped, and
``describe()`` says why.  Nothing here touches the event loop except the small async removal
helpers (``rmdir`` is retried while the kernel still counts the killed processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MB_PER_VCPU = 1769  # Lambda: one vCPU's worth of CPU at 1,769 MB
MAX_VCPU = 6  # at 10,240 MB
PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel's smallest CFS quota
ENV = "FNBENCH_LAMBDA_CGROUPS"
INIT_CPU_ENV = "FNBENCH_LAMBDA_INIT_CPU"  # "full" (default): Init unthrottled; "memory": capped like invocations
PREFIX = "fnbench-lambda-"
REMOVE_ATTEMPTS = 100
REMOVE_DELAY_S = 0.02
_seq = itertools.count(1)


def memory_bytes(memory_mb: int) -> int:
    """Lambda's MB are MiB: 128 MB is 134,217,728 bytes."""
    return int(memory_mb) * 1024 * 1024


def cpu_share(memory_mb: int, cpus: int) -> float:
    """CPUs an instance of this Memory Size gets: memory/1769, at most 6 and at most ``cpus``."""
    return max(0.0, min(memory_mb / MB_PER_VCPU, float(MAX_VCPU), float(max(cpus, 1))))


def cpu_quota_us(memory_mb: int, cpus: int, period_us: int = PERIOD_US) -> int:
    """CFS quota per ``period_us`` for that share (≥ the kernel's 1 ms minimum)."""
    return max(MIN_QUOTA_US, round(cpu_share(memory_mb, cpus) * period_us))


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def disabled_by_env() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no")


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _why(exc: OSError) -> str:
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, memory.oom_control) → {key: value}."""
    out = {}
    for line in text.splitlines():
        bits = line.split()
        if len(bits) == 2 and bits[1].lstrip("-").isdigit():
            out[bits[0]] = int(bits[1])
    return out


@dataclass
class Mount:
    fstype: str  # "cgroup2" or "cgroup"
    point: Path
    root: str  # the mount's root inside the hierarchy
    options: frozenset[str]  # super options (v1: the controllers)


def parse_mountinfo(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        out.append(Mount(tail[0], Path(point), fields[3], frozenset(tail[2].split(","))))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup → {controller: path}; the v2 entry under the key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        bits = line.split(":", 2)
        if len(bits) != 3:
            continue
        for name in bits[1].split(",") if bits[1] else [""]:
            out[name] = bits[2]
    return out


def _under(mount: Mount, path: str) -> Path:
    """Where this process's cgroup ``path`` lies in the mounted hierarchy."""
    rel = path
    if mount.root not in ("/", "") and (rel == mount.root or rel.startswith(mount.root.rstrip("/") + "/")):
        rel = rel[len(mount.root.rstrip("/")):]
    return mount.point / rel.lstrip("/")


def _rmdir(path: Path) -> bool | None:
    """True: gone; None: busy (retry); False: cannot (give up)."""
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        return None if exc.errno == errno.EBUSY else False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(base: Path) -> None:
    """Remove the empty parents that LocalLambdas of dead processes left (killed before close)."""
    try:
        entries = [e for e in os.scandir(base) if e.is_dir(follow_symlinks=False) and e.name.startswith(PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(PREFIX):].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            for child in os.scandir(entry.path):
                if child.is_dir(follow_symlinks=False):
                    _rmdir(Path(child.path))
        _rmdir(Path(entry.path))


@dataclass
class Cell:
    """One instance's cgroup(s): ``memory_dir`` and ``cpu_dir`` (the same directory on v2)."""

    kind: str  # "cgroup2" | "cgroup1"
    memory_dir: Path
    cpu_dir: Path
    memory_mb: int
    quota_us: int
    period_us: int = PERIOD_US
    removed: bool = False
    _procs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        dirs = [self.memory_dir] if self.memory_dir == self.cpu_dir else [self.memory_dir, self.cpu_dir]
        self._procs = [str(d / "cgroup.procs") for d in dirs]

    @property
    def dirs(self) -> list[Path]:
        return [self.memory_dir] if self.memory_dir == self.cpu_dir else [self.memory_dir, self.cpu_dir]

    def preexec(self) -> None:
        """``preexec_fn``: the child (between fork and exec) moves itself into the cell."""
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def throttle(self) -> None:
        """The Init phase is over: from now on the CPU share of its Memory Size."""
        if self.kind == "cgroup2":
            _write(self.cpu_dir / "cpu.max", f"{self.quota_us} {self.period_us}")
        else:
            _write(self.cpu_dir / "cpu.cfs_quota_us", str(self.quota_us))

    def limits(self) -> dict[str, int]:
        """What the kernel holds for the cell, read back: memory bytes, CPU quota and period (µs; quota -1: none)."""
        if self.kind == "cgroup2":
            mem = _read(self.memory_dir / "memory.max").strip()
            quota, period = _read(self.cpu_dir / "cpu.max").split()
            return {"memory_bytes": -1 if mem == "max" else int(mem),
                    "cpu_quota_us": -1 if quota == "max" else int(quota), "cpu_period_us": int(period)}
        return {"memory_bytes": int(_read(self.memory_dir / "memory.limit_in_bytes")),
                "cpu_quota_us": int(_read(self.cpu_dir / "cpu.cfs_quota_us")),
                "cpu_period_us": int(_read(self.cpu_dir / "cpu.cfs_period_us"))}

    def peak_bytes(self) -> int | None:
        """The cell's peak memory use (all its processes; page cache included), None where unknown."""
        name = "memory.peak" if self.kind == "cgroup2" else "memory.max_usage_in_bytes"
        try:
            return int(_read(self.memory_dir / name))
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        name = "memory.events" if self.kind == "cgroup2" else "memory.oom_control"
        try:
            return _keyed(_read(self.memory_dir / name)).get("oom_kill", 0)
        except OSError:
            return 0

    def out_of_memory(self, returncode: int | None) -> bool:
        """Did the OOM killer end the cell's process?  The counter where the kernel has one; else
        a SIGKILL while the limit was reached (v1 failcnt, or the peak at the limit)."""
        if self.oom_kills() > 0:
            return True
        if returncode != -signal.SIGKILL:
            return False
        if self.kind == "cgroup1":
            with contextlib.suppress(OSError, ValueError):
                if int(_read(self.memory_dir / "memory.failcnt")) > 0:
                    return True
        peak = self.peak_bytes()
        return peak is not None and peak >= memory_bytes(self.memory_mb) - 1024 * 1024

    def kill(self) -> None:
        """SIGKILL whatever is still in the cell (a runtime's children that left its process group)."""
        if self.kind == "cgroup2" and (self.memory_dir / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.memory_dir / "cgroup.kill", "1")
                return
        for path in self._procs:
            with contextlib.suppress(OSError, ValueError):
                for pid in _read(Path(path)).split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)

    def try_remove(self) -> bool | None:
        """rmdir every directory of the cell: True when all are gone, None when busy, False when it cannot."""
        result: bool | None = True
        for d in self.dirs:
            r = _rmdir(d)
            if r is False:
                return False
            if r is None:
                result = None
        self.removed = result is True
        return result


class Sandbox:
    """The cgroup backend of one LocalLambda: ``kind`` "cgroup2", "cgroup1" or "none"."""

    def __init__(self, kind: str, reason: str = "", *, memory_parent: Path | None = None,
                 cpu_parent: Path | None = None, cpus: int | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.memory_parent = memory_parent
        self.cpu_parent = cpu_parent
        self.cpus = cpus or machine_cpus()
        self.cells: list[Cell] = []
        self.failures = 0  # cells that could not be made (their instances ran uncapped)
        self.init_full_cpu = os.environ.get(INIT_CPU_ENV, "full").strip().lower() != "memory"
        self.last_failure = ""

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def parents(self) -> list[Path]:
        out = [p for p in (self.memory_parent, self.cpu_parent) if p is not None]
        return out[:1] if len(out) == 2 and out[0] == out[1] else out

    def describe(self) -> str:
        if not self.enabled:
            return (f"no cgroups usable here ({self.reason}): Memory Size is not enforced and CPU is not scaled; "
                    "Max Memory Used is the process's VmHWM")
        version = "v2" if self.kind == "cgroup2" else "v1"
        where = ", ".join(str(p) for p in self.parents)
        init = "Init unthrottled, " if self.init_full_cpu else "Init too, "
        text = (f"memory capped at Memory Size and CPU scaled to memory/{MB_PER_VCPU} MB "
                f"(at most {min(MAX_VCPU, self.cpus)} CPUs; {init}{INIT_CPU_ENV}=memory|full) with cgroup {version} ({where}); "
                "Max Memory Used is the cgroup's peak")
        if self.failures:
            text += f"; {self.failures} instance(s) ran uncapped: {self.last_failure}"
        return text

    # -- detection --------------------------------------------------------------------------
    @classmethod
    def detect(cls, enabled: bool = True, *, mountinfo: str | None = None, proc_cgroup: str | None = None,
               probe: bool = True) -> Sandbox:
        """The first usable of cgroup v2, cgroup v1, none; the parent cgroup is made here."""
        if not enabled:
            return cls("none", "cgroups=False")
        if disabled_by_env():
            return cls("none", f"{ENV}={os.environ.get(ENV)}")
        if not sys.platform.startswith("linux"):
            return cls("none", f"not Linux ({sys.platform})")
        try:
            mounts = parse_mountinfo(mountinfo if mountinfo is not None else _read(Path("/proc/self/mountinfo")))
            own = parse_proc_cgroup(proc_cgroup if proc_cgroup is not None else _read(Path("/proc/self/cgroup")))
        except OSError as exc:
            return cls("none", f"cannot read /proc/self: {_why(exc)}")
        name = f"{PREFIX}{os.getpid()}-{next(_seq)}"
        reasons = []
        for attempt in (cls._v2, cls._v1):
            box, why = attempt(mounts, own, name)
            if box is not None:
                if not probe or box._probe():
                    return box
                why = box.reason
                box._discard_parents()
            reasons.append(why)
        return cls("none", "; ".join(reasons))

    @classmethod
    def _v2(cls, mounts: list[Mount], own: dict[str, str], name: str) -> tuple[Sandbox | None, str]:
        v2 = [m for m in mounts if m.fstype == "cgroup2"]
        if not v2:
            return None, "no cgroup2 mount"
        why = []
        for mount in v2:
            bases = [_under(mount, own[""])] if "" in own else []
            bases += [mount.point] if mount.point not in bases else []
            for base in bases:
                try:
                    controllers = set(_read(base / "cgroup.controllers").split())
                except OSError as exc:
                    why.append(f"cgroup2 {base}: {_why(exc)}")
                    continue
                missing = {"memory", "cpu"} - controllers
                if missing:
                    why.append(f"cgroup2 {base}: no {', '.join(sorted(missing))} controller "
                               f"(has: {', '.join(sorted(controllers)) or 'none'})")
                    continue
                try:
                    enabled = set(_read(base / "cgroup.subtree_control").split())
                    if not {"memory", "cpu"} <= enabled:
                        _write(base / "cgroup.subtree_control", "+memory +cpu")
                    _sweep_stale(base)
                    parent = base / name
                    parent.mkdir()
                except OSError as exc:
                    why.append(f"cgroup2 {base}: {_why(exc)}")
                    continue
                try:
                    _write(parent / "cgroup.subtree_control", "+memory +cpu")
                except OSError as exc:
                    _rmdir(parent)
                    why.append(f"cgroup2 {parent}: {_why(exc)}")
                    continue
                return cls("cgroup2", memory_parent=parent, cpu_parent=parent), ""
        return None, "; ".join(why)

    @classmethod
    def _v1(cls, mounts: list[Mount], own: dict[str, str], name: str) -> tuple[Sandbox | None, str]:
        parents: dict[str, Path] = {}
        why = []
        for controller in ("memory", "cpu"):
            found = [m for m in mounts if m.fstype == "cgroup" and controller in m.options]
            if not found:
                why.append(f"no cgroup v1 {controller} hierarchy")
                break
            mount = found[0]
            bases = [_under(mount, own[controller])] if controller in own else []
            bases += [mount.point] if mount.point not in bases else []
            for base in bases:
                try:
                    _sweep_stale(base)
                    (base / name).mkdir()
                except OSError as exc:
                    why.append(f"cgroup v1 {controller} {base}: {_why(exc)}")
                    continue
                parents[controller] = base / name
                break
            else:
                break
        if set(parents) != {"memory", "cpu"}:
            for p in parents.values():
                _rmdir(p)
            return None, "; ".join(why)
        return cls("cgroup1", memory_parent=parents["memory"], cpu_parent=parents["cpu"]), ""

    def _probe(self) -> bool:
        """Make a cell, run a trivial process in it, remove it: proves the whole path works."""
        try:
            cell = self._make("probe", 128)
        except OSError as exc:
            self.reason = f"{self.kind} {self.memory_parent}: {_why(exc)}"
            return False
        try:
            subprocess.run([shutil.which("true") or sys.executable, *([] if shutil.which("true") else ["-S", "-c", ""])],
                           preexec_fn=cell.preexec, check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            self.reason = f"{self.kind} {self.memory_parent}: a process cannot join its cgroup ({exc})"
            ok = False
        else:
            ok = True
        for _ in range(REMOVE_ATTEMPTS):
            if cell.try_remove() is not None:
                break
            time.sleep(REMOVE_DELAY_S / 4)
        self.cells.remove(cell)
        return ok

    # -- cells --------------------------------------------------------------------------------
    def _make(self, name: str, memory_mb: int) -> Cell:
        assert self.memory_parent is not None and self.cpu_parent is not None
        quota = cpu_quota_us(memory_mb, self.cpus)
        mem, cpu = self.memory_parent / name, self.cpu_parent / name
        cell = Cell(self.kind, mem, cpu, memory_mb, quota)
        made = []
        try:
            for d in cell.dirs:
                d.mkdir()
                made.append(d)
            limit = str(memory_bytes(memory_mb))
            if self.kind == "cgroup2":
                _write(mem / "memory.max", limit)
                for extra, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (mem / extra).exists():
                        _write(mem / extra, value)
                _write(cpu / "cpu.max", f"{'max' if self.init_full_cpu else quota} {PERIOD_US}")
            else:
                _write(mem / "memory.limit_in_bytes", limit)
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    with contextlib.suppress(OSError):  # swap accounting may be off
                        _write(mem / "memory.memsw.limit_in_bytes", limit)
                _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(-1 if self.init_full_cpu else quota))
        except OSError:
            for d in made:
                _rmdir(d)
            raise
        self.cells.append(cell)
        return cell

    def cell(self, name: str, memory_mb: int) -> Cell | None:
        """A capped cgroup for one instance, or None (no backend, or it could not be made: counted)."""
        if not self.enabled:
            return None
        try:
            return self._make(name, memory_mb)
        except OSError as exc:
            self.failures += 1
            self.last_failure = _why(exc)
            return None

    async def remove(self, cell: Cell) -> bool:
        """rmdir the cell once its processes are gone (bounded retries); False if it stayed."""
        for _ in range(REMOVE_ATTEMPTS):
            result = cell.try_remove()
            if result is not None:
                break
            cell.kill()
            await asyncio.sleep(REMOVE_DELAY_S)
        if cell.removed and cell in self.cells:
            self.cells.remove(cell)
        return cell.removed

    def _discard_parents(self) -> None:
        for p in self.parents:
            _rmdir(p)

    async def close(self) -> bool:
        """Remove every cell left and the parent(s); True when nothing of ours stays."""
        if not self.enabled:
            return True
        ok = True
        for cell in list(self.cells):
            cell.kill()
            ok = await self.remove(cell) and ok
        for p in self.parents:
            for _ in range(REMOVE_ATTEMPTS):
                r = _rmdir(p)
                if r is not None:
                    ok = ok and r
                    break
                await asyncio.sleep(REMOVE_DELAY_S)
            else:
                ok = False
        return ok


def peak_mb(nbytes: int) -> int:
    return math.ceil(nbytes / (1024 * 1024))
