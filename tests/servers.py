"""Loopback servers the tests drive load at and read from: real sockets, no mocks.

Also the shared plumbing of the integration tests: ``need`` (skip locally, fail under ``make test``
and CI), ``strict``,
``free_port``, ``wait_for``, ``GroupLeader`` (stop or kill a process and its children), a real
``Prometheus`` scraping loopback targets, and fnbench's OpenTelemetry Collector build
(``OtelCollector``: OTLP in, OTLP JSON lines out; ``read_otlp_file`` parses them into ``OtlpData``).

FaultServer answers by path: /ok, /5xx, /429, /reset (RST before any response), /timeout
(never answers), /chunked (chunked 200), /close (200 then closes), /slow?ms=N,
/redirect (302 to itself: a redirect loop), /head?bytes=N (200 whose head is exactly N bytes),
/body?bytes=N (200 with an N-byte body, sent in 64 KiB writes), /endless-headers (a 200 status
line, then header lines as fast as the client reads them: up to ENDLESS_BYTES per connection,
for at most ENDLESS_S); any other path is a 200, and /timed* paths also record when each request
arrived (``times``).
It runs its own asyncio loop in a thread and counts requests per path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ENDLESS_BYTES = 512 * 1024 * 1024  # what /endless-headers sends on one connection at most
ENDLESS_S = 20.0  # … and for how long
_CHUNK = 64 * 1024
_HEADER_LINES = b"".join(b"x-pad-%05d: %s\r\n" % (i, b"a" * 100) for i in range(_CHUNK // 116))


def _head_of(size: int) -> bytes:
    """A 200 head (status line to the blank line) of exactly ``size`` bytes, and no body."""
    start, end = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n", b"\r\n"
    pad = size - len(start) - len(end) - len(b"x-pad: \r\n")
    return start + b"x-pad: " + b"a" * max(pad, 0) + b"\r\n" + end


class _FaultProtocol(asyncio.Protocol):
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            path = head.split(b" ", 2)[1].decode()
            self.handle(path)

    def handle(self, path: str) -> None:
        route, _, query = path.partition("?")
        self.server.hits[route] += 1
        if route.startswith("/timed"):  # arrival times (monotonic) of the /timed* routes: bursts are visible
            self.server.times[route].append(time.monotonic())
        t = self.transport
        if route == "/5xx":
            t.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail")
        elif route == "/429":
            t.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")
        elif route == "/reset":
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        elif route == "/timeout":
            pass
        elif route == "/chunked":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n")
        elif route == "/close":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            t.close()
        elif route == "/redirect":
            t.write(b"HTTP/1.1 302 Found\r\nlocation: /redirect\r\ncontent-length: 0\r\n\r\n")
        elif route == "/head":
            t.write(_head_of(int(query.partition("bytes=")[2])))
        elif route == "/body":
            size = int(query.partition("bytes=")[2])
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            self._stream(b"b" * _CHUNK, size, time.monotonic() + ENDLESS_S)
        elif route == "/endless-headers":
            t.write(b"HTTP/1.1 200 OK\r\n")
            self._stream(_HEADER_LINES, ENDLESS_BYTES, time.monotonic() + ENDLESS_S)
        elif route == "/slow":
            ms = float(query.partition("ms=")[2] or 10)
            asyncio.get_running_loop().call_later(
                ms / 1000, lambda: t.is_closing() or t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            )
        else:
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


    def _stream(self, chunk: bytes, left: int, until: float) -> None:
        """Write ``left`` bytes of ``chunk`` repeated, as fast as the client takes them (the write
        buffer kept under 1 MiB), until ``until`` or the connection closes."""
        t = self.transport
        while left > 0 and not t.is_closing() and time.monotonic() < until and t.get_write_buffer_size() < 1 << 20:
            piece = chunk[:left]
            t.write(piece)
            left -= len(piece)
        if left > 0 and not t.is_closing() and time.monotonic() < until:
            asyncio.get_running_loop().call_later(0.001, self._stream, chunk, left, until)


class FaultServer:
    def __init__(self, host: str = "127.0.0.1", ssl_context: Any = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.hits: Counter[str] = Counter()
        self.times: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=200_000))
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="fault-server")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await self.loop.create_server(
                lambda: _FaultProtocol(self), self.host, 0, backlog=1024, ssl=self.ssl_context
            )
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> FaultServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strict() -> bool:
    """True under `make test` (FNBENCH_TEST_STRICT, set once it has installed and built everything) and CI."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
               for name in ("FNBENCH_TEST_STRICT", "CI"))


def need(ok: bool, why: str) -> None:
    """Skip a bare `pytest` run when a tool is missing; under `make test` or CI a missing tool is a failure."""
    if not ok:
        if strict():
            pytest.fail(f"{why} (required under make test: it installs and builds everything)")
        pytest.skip(why)


def free_port() -> int:
    """A free loopback port for a server that must be told its port in advance.

    Drawn below the kernel's ephemeral range, so no bind(0) and no outgoing connection can be
    handed the same number between now and the moment the server binds it.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class GroupLeader:
    """A subprocess started with ``start_new_session=True`` (``self.proc``): ``stop`` and ``kill``
    reach its whole process group (a Celery worker's or scheduler's pool processes too)."""

    proc: subprocess.Popen
    stop_timeout_s = 10.0

    def kill(self) -> None:
        """SIGKILL the group at once (a host dying)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM the group; SIGKILL it if it has not exited within ``stop_timeout_s``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every: float = 0.1) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout_s}s")


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, directory: Path, targets: list[str]) -> None:
        need(shutil.which("prometheus") is not None, "prometheus not installed (apt install prometheus)")
        taken = {int(t.rsplit(":", 1)[1]) for t in targets}
        self.port = free_port()
        while self.port in taken:  # a just-released port can come back from the kernel
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: fnbench\n    static_configs: [{{targets: {targets!r}}}]\n"
        )
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             "--enable-feature=exemplar-storage"],  # the slowest requests' ids on the latency buckets
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> Prometheus:
        try:
            wait_for(self._ready, 30, "prometheus ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query; asserts that Prometheus accepted it."""
        r = httpx.post(f"{self.url}/api/v1/query", data={"query": expr, "time": f"{at:.3f}"}, timeout=10)
        assert r.status_code == 200, (expr, r.text)
        return r.json()["data"]["result"]

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """/api/v1/query_exemplars: [{seriesLabels, exemplars: [{labels, value, timestamp}]}]."""
        r = httpx.post(f"{self.url}/api/v1/query_exemplars", timeout=10,
                       data={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        assert r.status_code == 200, (expr, r.text)
        return r.json()["data"] or []

    def query_range(self, expr: str, start: float, end: float, step: float = 0.5) -> list[float]:
        """The values of a single-series range query (empty when there is no data)."""
        r = httpx.post(f"{self.url}/api/v1/query_range", timeout=10, data={
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        assert r.status_code == 200, (expr, r.text)
        result = r.json()["data"]["result"]
        return [float(v) for _, v in result[0]["values"]] if result else []



# --- OpenTelemetry Collector (issue 21) -----------------------------------------------------------
# fnbench's own collector build (tools/otelcol, `make otelcol`): the core OTLP receiver (gRPC and HTTP)
# and the contrib file exporter, which writes every request it receives as one OTLP JSON line.

REPO = Path(__file__).resolve().parent.parent
OTELCOL = REPO / "build" / "tools" / "otelcol"


def otelcol_binary() -> str | None:
    """The collector `make otelcol` builds (build/tools/otelcol), else an `otelcol` on PATH that is
    fnbench's build (its `components` list the file exporter); None when neither is there."""
    if OTELCOL.is_file() and os.access(OTELCOL, os.X_OK):
        return str(OTELCOL)
    found = shutil.which("otelcol")
    if found:
        try:
            listed = subprocess.run([found, "components"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        if "fileexporter" in listed:
            return found
    return None


@dataclass(frozen=True)
class OtlpBuckets:
    """One side (positive or negative) of an exponential histogram point: ``counts[i]`` is the
    bucket of index ``offset + i``, i.e. values in (base**(offset+i), base**(offset+i+1)]."""

    offset: int
    counts: list[int]


@dataclass(frozen=True)
class OtlpExemplar:
    value: float | int
    time_ns: int
    trace_id: str  # lowercase hex, "" when absent
    span_id: str
    attributes: dict[str, Any]  # OTLP's filtered_attributes


@dataclass(frozen=True)
class OtlpPoint:
    """One data point. Which fields are set depends on the metric's ``type``: ``value`` for sum and
    gauge; ``count``/``sum``/``min``/``max`` for the histograms (and count/sum for summary);
    ``bounds``/``bucket_counts`` for the explicit histogram; ``scale``/``zero_count``/
    ``zero_threshold``/``positive``/``negative`` for the exponential histogram; ``quantiles``
    (quantile → value) for summary. Absent fields are None (OTLP JSON leaves zero values out; they
    come back as 0 where the type has the field)."""

    attributes: dict[str, Any]
    start_ns: int
    time_ns: int
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    bounds: list[float] | None = None
    bucket_counts: list[int] | None = None
    scale: int | None = None
    zero_count: int | None = None
    zero_threshold: float | None = None
    positive: OtlpBuckets | None = None
    negative: OtlpBuckets | None = None
    quantiles: dict[float, float] | None = None
    exemplars: list[OtlpExemplar] = field(default_factory=list)
    flags: int = 0


@dataclass(frozen=True)
class OtlpMetric:
    """One metric of one export request. ``type``: "sum", "gauge", "histogram",
    "exponential_histogram" or "summary"; ``temporality``: "cumulative", "delta" or "" (gauge,
    summary); ``monotonic`` only means something for sums."""

    name: str
    type: str
    unit: str
    description: str
    temporality: str
    monotonic: bool
    points: list[OtlpPoint]
    resource: dict[str, Any]
    scope: str
    scope_version: str
    line: int  # which line of the file (0-based): later lines arrived later


@dataclass(frozen=True)
class OtlpSpan:
    name: str
    trace_id: str  # lowercase hex (32 digits)
    span_id: str  # lowercase hex (16 digits)
    parent_span_id: str  # "" for a root span
    kind: int  # OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    events: list[dict[str, Any]]  # {"name", "time_ns", "attributes"}
    links: list[dict[str, Any]]  # {"trace_id", "span_id", "attributes"}
    trace_state: str
    resource: dict[str, Any]
    scope: str
    line: int


@dataclass
class OtlpData:
    """What the collector's file exporter wrote, parsed: every metric and span in arrival order."""

    metrics: list[OtlpMetric] = field(default_factory=list)
    spans: list[OtlpSpan] = field(default_factory=list)
    log_records: int = 0
    lines: int = 0

    def metric_names(self) -> set[str]:
        return {m.name for m in self.metrics}

    def metrics_named(self, name: str) -> list[OtlpMetric]:
        """Every export of metric ``name``, oldest first (a cumulative metric is sent again at each
        export, so the last is the current total)."""
        return [m for m in self.metrics if m.name == name]

    def last(self, name: str) -> OtlpMetric | None:
        found = self.metrics_named(name)
        return found[-1] if found else None

    def points(self, name: str, **attributes: Any) -> list[OtlpPoint]:
        """The points of the last export of ``name`` whose attributes include ``attributes``."""
        metric = self.last(name)
        if metric is None:
            return []
        return [p for p in metric.points if all(p.attributes.get(k) == v for k, v in attributes.items())]

    def spans_named(self, name: str) -> list[OtlpSpan]:
        return [s for s in self.spans if s.name == name]

    def span(self, span_id: str) -> OtlpSpan | None:
        return next((s for s in self.spans if s.span_id == span_id.lower()), None)


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)  # OTLP JSON writes 64-bit integers as strings


def _float(value: Any) -> float | None:
    return None if value is None else float(value)  # "NaN", "Infinity" come as strings


def otlp_value(value: dict[str, Any]) -> Any:
    """An OTLP JSON AnyValue as Python: str, bool, int, float, list, dict, bytes (base64) or None."""
    if not value:
        return None
    kind, raw = next(iter(value.items()))
    if kind == "stringValue":
        return raw
    if kind == "boolValue":
        return bool(raw)
    if kind == "intValue":
        return int(raw)
    if kind == "doubleValue":
        return float(raw)
    if kind == "arrayValue":
        return [otlp_value(v) for v in (raw or {}).get("values", [])]
    if kind == "kvlistValue":
        return otlp_attributes((raw or {}).get("values", []))
    if kind == "bytesValue":
        return base64.b64decode(raw)
    raise ValueError(f"unknown OTLP AnyValue kind {kind!r}")


def otlp_attributes(pairs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: otlp_value(kv.get("value") or {}) for kv in pairs or []}


_TEMPORALITY = {0: "", 1: "delta", 2: "cumulative"}


def _exemplars(raw: list[dict[str, Any]] | None) -> list[OtlpExemplar]:
    out = []
    for e in raw or []:
        value: float | int = int(e["asInt"]) if "asInt" in e else float(e.get("asDouble", 0.0))
        out.append(OtlpExemplar(value=value, time_ns=_int(e.get("timeUnixNano")),
                                trace_id=e.get("traceId", "").lower(), span_id=e.get("spanId", "").lower(),
                                attributes=otlp_attributes(e.get("filteredAttributes"))))
    return out


def _point(kind: str, p: dict[str, Any]) -> OtlpPoint:
    common: dict[str, Any] = dict(
        attributes=otlp_attributes(p.get("attributes")), start_ns=_int(p.get("startTimeUnixNano")),
        time_ns=_int(p.get("timeUnixNano")), exemplars=_exemplars(p.get("exemplars")),
        flags=_int(p.get("flags")))
    if kind in ("sum", "gauge"):
        value: float | int = int(p["asInt"]) if "asInt" in p else float(p.get("asDouble", 0.0))
        return OtlpPoint(value=value, **common)
    if kind == "histogram":
        return OtlpPoint(count=_int(p.get("count")), sum=_float(p.get("sum")), min=_float(p.get("min")),
                         max=_float(p.get("max")), bounds=[float(b) for b in p.get("explicitBounds", [])],
                         bucket_counts=[int(c) for c in p.get("bucketCounts", [])], **common)
    if kind == "exponential_histogram":
        def side(raw: dict[str, Any] | None) -> OtlpBuckets:
            raw = raw or {}
            return OtlpBuckets(offset=_int(raw.get("offset")), counts=[int(c) for c in raw.get("bucketCounts", [])])

        return OtlpPoint(count=_int(p.get("count")), sum=_float(p.get("sum")), min=_float(p.get("min")),
                         max=_float(p.get("max")), scale=_int(p.get("scale")), zero_count=_int(p.get("zeroCount")),
                         zero_threshold=_float(p.get("zeroThreshold", 0.0)), positive=side(p.get("positive")),
                         negative=side(p.get("negative")), **common)
    if kind == "summary":
        return OtlpPoint(count=_int(p.get("count")), sum=_float(p.get("sum")), quantiles={
            float(q.get("quantile", 0.0)): float(q.get("value", 0.0)) for q in p.get("quantileValues", [])}, **common)
    raise ValueError(f"unknown OTLP metric type {kind!r}")


_METRIC_KINDS = {"sum": "sum", "gauge": "gauge", "histogram": "histogram",
                 "exponentialHistogram": "exponential_histogram", "summary": "summary"}


def parse_otlp_line(record: dict[str, Any], line: int, into: OtlpData) -> None:
    """Add one OTLP JSON export request (metrics, traces or logs) to ``into``."""
    for rm in record.get("resourceMetrics", []):
        resource = otlp_attributes((rm.get("resource") or {}).get("attributes"))
        for sm in rm.get("scopeMetrics", []):
            scope = sm.get("scope") or {}
            for m in sm.get("metrics", []):
                key = next((k for k in _METRIC_KINDS if k in m), None)
                if key is None:
                    raise ValueError(f"line {line + 1}: metric {m.get('name')!r} has no data of a known type")
                kind, data = _METRIC_KINDS[key], m[key] or {}
                into.metrics.append(OtlpMetric(
                    name=m.get("name", ""), type=kind, unit=m.get("unit", ""), description=m.get("description", ""),
                    temporality=_TEMPORALITY.get(_int(data.get("aggregationTemporality")), ""),
                    monotonic=bool(data.get("isMonotonic", False)),
                    points=[_point(kind, p) for p in data.get("dataPoints", [])],
                    resource=resource, scope=scope.get("name", ""), scope_version=scope.get("version", ""), line=line))
    for rs in record.get("resourceSpans", []):
        resource = otlp_attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            scope = (ss.get("scope") or {}).get("name", "")
            for s in ss.get("spans", []):
                status = s.get("status") or {}
                into.spans.append(OtlpSpan(
                    name=s.get("name", ""), trace_id=s.get("traceId", "").lower(), span_id=s.get("spanId", "").lower(),
                    parent_span_id=s.get("parentSpanId", "").lower(), kind=_int(s.get("kind")),
                    start_ns=_int(s.get("startTimeUnixNano")), end_ns=_int(s.get("endTimeUnixNano")),
                    attributes=otlp_attributes(s.get("attributes")), status_code=_int(status.get("code")),
                    status_message=status.get("message", ""),
                    events=[{"name": e.get("name", ""), "time_ns": _int(e.get("timeUnixNano")),
                             "attributes": otlp_attributes(e.get("attributes"))} for e in s.get("events", [])],
                    links=[{"trace_id": lk.get("traceId", "").lower(), "span_id": lk.get("spanId", "").lower(),
                            "attributes": otlp_attributes(lk.get("attributes"))} for lk in s.get("links", [])],
                    trace_state=s.get("traceState", ""), resource=resource, scope=scope, line=line))
    for rl in record.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            into.log_records += len(sl.get("logRecords", []))


def read_otlp_file(path: Path) -> OtlpData:
    """Parse a file exporter's output (one OTLP JSON export request per line). A last line without
    its newline is one the collector is still writing: it is left for the next read."""
    data = OtlpData()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return data
    lines = text.split("\n")
    complete = lines[:-1]  # "" after the final newline, or a line still being written
    for number, line in enumerate(complete):
        if line.strip():
            parse_otlp_line(json.loads(line), number, data)
    data.lines = len(complete)
    return data


class OtelCollector(GroupLeader):
    """fnbench's OpenTelemetry Collector (tools/otelcol) on free loopback ports: the OTLP receiver
    (``http_endpoint`` "http://127.0.0.1:P" for OTLP/HTTP, ``grpc_endpoint`` "127.0.0.1:Q") and the
    file exporter writing what arrives to ``output``; ``read()`` parses it, ``wait_for(check)``
    polls it. Metrics, traces and logs pipelines all go to the same file. Its own log: ``log``."""

    def __init__(self, directory: Path, flush_interval_ms: int = 100) -> None:
        binary = otelcol_binary()
        need(binary is not None, "fnbench's OpenTelemetry Collector is not built (make otelcol)")
        assert binary is not None
        self.binary = binary
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.http_port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        self.http_endpoint = f"http://127.0.0.1:{self.http_port}"
        self.grpc_endpoint = f"127.0.0.1:{self.grpc_port}"
        self.output = directory / "otlp.jsonl"
        self.log = directory / "otelcol.log"
        self.config = directory / "otelcol.yaml"
        pipeline = "{receivers: [otlp], exporters: [file]}"
        self.config.write_text(
            "receivers:\n  otlp:\n    protocols:\n"
            f"      grpc: {{endpoint: '127.0.0.1:{self.grpc_port}'}}\n"
            f"      http: {{endpoint: '127.0.0.1:{self.http_port}'}}\n"
            "exporters:\n  file:\n"
            f"    path: {json.dumps(str(self.output))}\n"
            f"    flush_interval: {int(flush_interval_ms)}ms\n"
            "service:\n"
            # no telemetry server of its own (it would listen on :8888), its log at warn
            "  telemetry:\n    metrics: {level: none}\n    logs: {level: warn, encoding: console}\n"
            f"  pipelines:\n    metrics: {pipeline}\n    traces: {pipeline}\n    logs: {pipeline}\n"
        )

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"otelcol exited with {self.proc.returncode}: {self.log_text()[-4000:]}")
        for port in (self.http_port, self.grpc_port):
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            except OSError:
                return False
        return True

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> OtelCollector:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([self.binary, f"--config=file:{self.config}"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # The receivers start last (after the exporters): both ports open = the pipeline is up.
            wait_for(self._listening, 30, "otelcol listening")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self) -> OtlpData:
        return read_otlp_file(self.output)

    def wait_for(self, check: Callable[[OtlpData], Any], timeout_s: float = 30, what: str = "OTLP data") -> OtlpData:
        """Read the output until ``check(data)`` is true (at most ``timeout_s``); the last read."""
        last: list[OtlpData] = []

        def ready() -> bool:
            last[:] = [self.read()]
            return bool(check(last[0]))

        try:
            wait_for(ready, timeout_s, what)
        except AssertionError as e:
            data = last[0] if last else OtlpData()
            raise AssertionError(f"{e}; got metrics {sorted(data.metric_names())}, spans "
                                 f"{[s.name for s in data.spans]}; otelcol log: {self.log_text()[-2000:]}") from None
        return last[0]
