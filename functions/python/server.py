"""fnbench benchmark subject — Python HTTP server (standard library only).

Implements functions/CONTRACT.md over a small asyncio HTTP/1.1 server
(keep-alive, Content-Length and chunked request bodies). Listens on
$HOST:$PORT (default 127.0.0.1:8080). CPU-bound workloads run on the event
loop, exactly as a single-threaded Python function instance would; `sleep`
awaits asyncio.sleep so other connections are served meanwhile.
"""

import time

_T0 = time.perf_counter()  # earliest in-process point (see CONTRACT.md, init_ms)

import asyncio  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w  # noqa: E402

INIT_MS = 0.0

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


def _error(status: int, msg: str) -> tuple[int, dict]:
    return status, {"error": msg, "runtime": w.RUNTIME, "instance": w.INSTANCE}


async def dispatch(method: str, target: str, body: bytes) -> tuple[int, dict]:
    path = target.split("?", 1)[0]
    if path == "/health":
        if method in ("GET", "HEAD"):
            return 200, {"status": "ok", "runtime": w.RUNTIME, "instance": w.INSTANCE}
        return _error(405, "method not allowed")
    if method != "POST":
        return _error(404, "not found") if method == "GET" else _error(405, "method not allowed")
    workload = path[1:]
    t0 = time.perf_counter()
    cold = w.take_cold()
    try:
        params = w.check_params(w.parse_json(body))
        if workload == "sleep":
            ms = w.sleep_ms(params)
            await asyncio.sleep(ms / 1000.0)
            result = {"slept_ms": ms}
        else:
            result = w.run_sync(workload, params)
    except w.BadRequest as e:
        return _error(400, str(e))
    except MemoryError:
        return _error(500, "out of memory")
    except Exception as e:  # never let one request take the server down
        return _error(500, f"internal error: {type(e).__name__}: {e}")
    handler_ms = (time.perf_counter() - t0) * 1000.0
    return 200, w.envelope(workload, cold, INIT_MS, handler_ms, result)


class _TooLarge(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readline()
            n = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if n == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            size += n
            if size > w.MAX_BODY_BYTES:
                raise _TooLarge
            chunks.append(await reader.readexactly(n))
            await reader.readline()
    n = int(headers.get("content-length", "0") or "0")
    if n < 0:
        raise ValueError("negative content-length")
    if n > w.MAX_BODY_BYTES:
        raise _TooLarge
    return await reader.readexactly(n) if n else b""


async def handle_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line in (b"\r\n", b"\n"):
                continue
            try:
                method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            except ValueError:
                await _write(writer, *_error(400, "bad request line"), keep_alive=False)
                break
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            conn = headers.get("connection", "").lower()
            keep_alive = (version == "HTTP/1.1" and conn != "close") or (
                version == "HTTP/1.0" and conn == "keep-alive"
            )
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                body = await _read_body(reader, headers)
            except _TooLarge:
                await _write(writer, *_error(413, "request body too large"), keep_alive=False)
                break
            except ValueError:
                await _write(writer, *_error(400, "bad request framing"), keep_alive=False)
                break
            status, obj = await dispatch(method, target, body)
            await _write(writer, status, obj, keep_alive=keep_alive, head=method == "HEAD")
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def _write(
    writer: asyncio.StreamWriter, status: int, obj: dict, *, keep_alive: bool, head: bool = False
) -> None:
    try:
        payload = w.dumps(obj)
    except (ValueError, TypeError, RecursionError) as e:
        status = 500
        payload = w.dumps({"error": f"could not encode response: {type(e).__name__}"})
    head_lines = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1")
    writer.write(head_lines if head else head_lines + payload)
    await writer.drain()


def report_port(port: int) -> None:
    """CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a newline to
    that descriptor and close it (the parent learns the port of PORT=0 and that we listen)."""
    raw = os.environ.get("FNBENCH_READY_FD", "")
    if raw.isdigit() and int(raw) > 2:
        try:
            os.write(int(raw), b"%d\n" % port)
            os.close(int(raw))
        except OSError:
            pass  # the parent stopped waiting: nothing to tell


async def main() -> None:
    global INIT_MS
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    server = await asyncio.start_server(handle_conn, host, port, backlog=1024)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: None if stop.done() else stop.set_result(None)
        )
    INIT_MS = w.init_ms_since(_T0)
    report_port(server.sockets[0].getsockname()[1])
    await stop
    # SIGTERM/SIGINT: stop accepting and exit at once; in-flight requests are dropped.
    server.close()


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    sys.stdout.flush()
    os._exit(0)  # no lingering-connection teardown: exit promptly
