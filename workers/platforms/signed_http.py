"""The registered ``http`` platform's factory, and an ``http`` target signed with AWS SigV4 (``sigv4: {service: lambda, region: us-east-1}``): a Lambda
Function URL whose AuthType is AWS_IAM, or any endpoint behind IAM auth, measured on the same fast
HTTP engine as every HTTP(S) endpoint.

The request the target describes (method, URL, headers, body: workers.platforms.http.encode_request)
is signed as botocore's SigV4Auth signs it — every header but the ones botocore leaves unsigned, the
body's SHA-256 — with ``x-amz-date`` (and ``x-amz-security-token`` for temporary credentials) added,
by the signer the aws-lambda invoker uses (workers.platforms.aws_lambda.sigv4) and rebuilt once per
second with credentials from the standard chain (workers.platforms.aws_lambda.signing).  Trace
context (traceparent) goes after the request line unsigned, as botocore never signs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any
from urllib.parse import parse_qsl

from workers.contract import Target
from workers.platforms import Done, http
from workers.platforms.aws_lambda.signing import SignsEachSecond
from workers.platforms.aws_lambda.sigv4 import Credentials, Signer, canonical_query
from workers.platforms.http import HttpInvoker, _Connection, _HeadConnection


class _SignedConnection(_Connection):
    """Sends the invoker's request as signed this second."""

    __slots__ = ()

    def send(self, due: float, done: Done, payload: bytes, user: Any) -> None:
        super().send(due, done, user.signed(), user)


class _SignedHeadConnection(_HeadConnection):
    __slots__ = ()

    def send(self, due: float, done: Done, payload: bytes, user: Any) -> None:
        super().send(due, done, user.signed(), user)


class SignedHttpInvoker(SignsEachSecond, HttpInvoker):
    def __init__(self, target: Target) -> None:
        super().__init__(target)
        sigv4 = dict(target.address.get("sigv4") or {})
        self.signer = Signer(str(sigv4.get("region") or "us-east-1"), str(sigv4.get("service") or "lambda"))
        head, _, body = self.payload.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.method, target_path, _ = lines[0].split(" ", 2)
        self.request_target = target_path
        path, _, query = target_path.partition("?")
        self.path = path
        self.query = canonical_query(parse_qsl(query, keep_blank_values=True))
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            self.headers.append((name, value))
        self.body = body
        self.payload_hash = hashlib.sha256(body).hexdigest()
        self.conn_class = _SignedHeadConnection if self.conn_class is _HeadConnection else _SignedConnection
        self.init_signing()

    @property
    def key(self) -> tuple[Any, ...]:
        return ("sigv4", self.signer.region, self.signer.service, *super().key)

    async def start(self) -> None:
        await self.start_signing()
        await super().start()

    def request_bytes(self, amz_date: str, creds: Credentials) -> bytes:
        headers: dict[str, str] = dict(self.headers)
        headers["x-amz-date"] = amz_date
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        headers["authorization"] = self.signer.authorization(self.method, self.path, self.query, headers,
                                                             self.payload_hash, amz_date, creds)
        head = f"{self.method} {self.request_target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode("latin-1") + b"\r\n" + self.body


def make_invoker(target: Target, phase: str, max_in_flight: int) -> HttpInvoker:
    """The ``http`` platform's factory: signed when the target has ``sigv4``."""
    return SignedHttpInvoker(target) if target.address.get("sigv4") else HttpInvoker(target)


# The registered ``http`` platform (workers.platforms.BUILTIN): workers.platforms.http's declaration
# with this factory, so that http.py never imports the AWS signing it does not otherwise need.
PLATFORM = dataclasses.replace(http.PLATFORM, make_invoker=make_invoker)
