"""AWS event stream (``application/vnd.amazon.eventstream``): the framing of InvokeWithResponseStream.

One message (as AWS documents it for Transcribe/S3 Select/Lambda streaming and as botocore's
``botocore/eventstream.py`` decodes it)::

    prelude:  total length (uint32 BE) · headers length (uint32 BE) · CRC32 of those 8 bytes
    headers:  name length (uint8) · name · value type (uint8) · value (type 7, string: uint16 BE length · UTF-8)
    payload
    message CRC32 (of everything before it)

Lambda's events (botocore's lambda service model, shape InvokeWithResponseStreamResponseEvent):
``:event-type`` ``PayloadChunk`` (the payload is the function's bytes) and ``InvokeComplete``
(a JSON payload ``{"ErrorCode", "ErrorDetails", "LogResult"}``, every member optional),
``:message-type`` ``event``.

``encode_event`` writes one message (the local Lambda's side); ``Decoder`` reads them
incrementally from whatever pieces the socket gives (fnbench's invoker), bounded and checked:
a bad CRC or a length beyond the bounds raises ``EventStreamError``.
"""

from __future__ import annotations

import struct
import zlib

PRELUDE = struct.Struct(">II")
CRC = struct.Struct(">I")
# botocore's bounds (botocore/eventstream.py: _MAX_HEADERS_LENGTH, _MAX_PAYLOAD_LENGTH).
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_MIN_MESSAGE = 16  # prelude (12) + message CRC (4)
_STRING = 7


class EventStreamError(ValueError):
    """Bytes that are not a well-formed event stream message."""


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += bytes((len(n),)) + n + bytes((_STRING,)) + struct.pack(">H", len(v)) + v
    return bytes(out)


def encode_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    head = encode_headers(headers)
    total = _MIN_MESSAGE + len(head) + len(payload)
    prelude = PRELUDE.pack(total, len(head))
    prelude += CRC.pack(zlib.crc32(prelude))
    body = prelude + head + payload
    return body + CRC.pack(zlib.crc32(body))


def encode_event(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    return encode_message([(":event-type", event_type), (":content-type", content_type),
                           (":message-type", "event")], payload)


def _decode_headers(raw: bytes | memoryview) -> dict[str, object]:
    out: dict[str, object] = {}
    i, n = 0, len(raw)
    while i < n:
        ln = raw[i]
        name = bytes(raw[i + 1:i + 1 + ln]).decode("utf-8", "replace")
        i += 1 + ln
        if i >= n:
            raise EventStreamError("header without a value type")
        kind = raw[i]
        i += 1
        if kind in (0, 1):  # bool true / false
            out[name] = kind == 0
        elif kind == 2:
            out[name], i = raw[i], i + 1
        elif kind == 3:
            out[name], i = struct.unpack_from(">h", raw, i)[0], i + 2
        elif kind == 4:
            out[name], i = struct.unpack_from(">i", raw, i)[0], i + 4
        elif kind in (5, 8):  # int64, timestamp
            out[name], i = struct.unpack_from(">q", raw, i)[0], i + 8
        elif kind in (6, 7):  # bytes, string
            vl = struct.unpack_from(">H", raw, i)[0]
            value = bytes(raw[i + 2:i + 2 + vl])
            out[name] = value.decode("utf-8", "replace") if kind == 7 else value
            i += 2 + vl
        elif kind == 9:  # uuid
            out[name], i = bytes(raw[i:i + 16]), i + 16
        else:
            raise EventStreamError(f"unknown header value type {kind}")
        if i > n:
            raise EventStreamError("header runs past the header section")
    return out


class Decoder:
    """Incremental: ``feed(data)`` returns the messages completed by it, as (headers, payload).

    Keeps at most one incomplete message (bounded by the limits above)."""

    __slots__ = ("buf", "messages")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.messages = 0

    def feed(self, data: bytes) -> list[tuple[dict[str, object], bytes]]:
        buf = self.buf
        buf += data
        out: list[tuple[dict[str, object], bytes]] = []
        start = 0
        n = len(buf)
        while n - start >= 12:
            total, hlen = PRELUDE.unpack_from(buf, start)
            if CRC.unpack_from(buf, start + 8)[0] != zlib.crc32(memoryview(buf)[start:start + 8]):
                raise EventStreamError("prelude CRC mismatch")
            if hlen > MAX_HEADERS_BYTES or total < _MIN_MESSAGE + hlen or total - _MIN_MESSAGE - hlen > MAX_PAYLOAD_BYTES:
                raise EventStreamError(f"message length {total} (headers {hlen}) out of bounds")
            if n - start < total:
                break
            view = memoryview(buf)
            end = start + total
            if CRC.unpack_from(buf, end - 4)[0] != zlib.crc32(view[start:end - 4]):
                raise EventStreamError("message CRC mismatch")
            headers = _decode_headers(view[start + 12:start + 12 + hlen])
            payload = bytes(view[start + 12 + hlen:end - 4])
            view.release()
            out.append((headers, payload))
            start = end
        if start:
            del buf[:start]
        self.messages += len(out)
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self.buf)
