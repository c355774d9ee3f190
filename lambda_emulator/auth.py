"""Who may call the local Lambda: SigV4 as AWS checks it, and nothing a browser can send.

``fnbench lambda serve`` runs uploaded code, so its API is not open to whoever can reach
loopback.  Every request to the Invoke API (Invoke and the control plane alike) must be
signed with SigV4 (service ``lambda``, the server's region) by the one access key the server
was started with: ``FNBENCH_LAMBDA_ACCESS_KEY_ID`` / ``FNBENCH_LAMBDA_SECRET_ACCESS_KEY``, else
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` of its environment (:func:`server_credentials`).
The server recomputes the canonical request from what it received (``workers.platforms.aws_lambda.sigv4``, the same
code the invoker signs with), the payload's SHA-256 included, and compares signatures in
constant time; X-Amz-Date must be within 15 minutes of the server's clock, as on AWS.
Failures answer as AWS does: 403 with ``x-amzn-ErrorType`` MissingAuthenticationTokenException,
IncompleteSignatureException, UnrecognizedClientException or InvalidSignatureException.

Before any of that, what only a browser (or a DNS-rebound name) would send is refused: an
``Origin`` header, a Host that is not this server's own address (127.0.0.1, localhost or [::1]
with its port), and a body whose Content-Type is not JSON (boto3's Invoke sends none; everything
else it sends is ``application/json``; text/plain and the form types, which a page may send
without a CORS preflight, are 415 UnsupportedMediaTypeException).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from workers.platforms.aws_lambda.sigv4 import ALGORITHM, Credentials, Signer, canonical_query

ACCESS_KEY_ENV = "FNBENCH_LAMBDA_ACCESS_KEY_ID"
SECRET_ENV = "FNBENCH_LAMBDA_SECRET_ACCESS_KEY"
MAX_SKEW_S = 15 * 60  # AWS: a signature is valid 15 minutes either side of the server's clock
# What fnbench's invoker and boto3 send: application/json (boto3: no Content-Type on Invoke).
JSON_TYPES = frozenset({b"application/json", b"application/x-amz-json-1.0", b"application/x-amz-json-1.1"})

Reply = tuple[int, bytes, list[tuple[str, str]]]


class CredentialsMissing(ValueError):
    pass


def server_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """The access key the server accepts: FNBENCH_LAMBDA_ACCESS_KEY_ID/FNBENCH_LAMBDA_SECRET_ACCESS_KEY,
    else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; CredentialsMissing (with what to set) when neither pair is."""
    env = os.environ if environ is None else environ
    for key_name, secret_name in ((ACCESS_KEY_ENV, SECRET_ENV), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")):
        key, secret = env.get(key_name, ""), env.get(secret_name, "")
        if key and secret:
            return Credentials(key, secret)
        if key or secret:
            missing = secret_name if key else key_name
            raise CredentialsMissing(f"{missing} is not set ({key_name if key else secret_name} is): the local Lambda "
                                     "needs both the access key id and the secret its clients sign with")
    raise CredentialsMissing(
        f"the local Lambda runs uploaded code, so every request must be SigV4-signed: set {ACCESS_KEY_ENV} and "
        f"{SECRET_ENV} (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in its environment to the credentials its "
        "clients sign with")


def error(status: int, kind: str, message: str) -> Reply:
    doc: dict[str, Any] = {"Type": "User", "message": message}
    return status, orjson.dumps(doc), [("x-amzn-ErrorType", kind), ("x-amzn-RequestId", str(uuid.uuid4()))]


def own_hosts(port: int) -> frozenset[bytes]:
    return frozenset(f"{h}:{port}".encode() for h in ("127.0.0.1", "localhost", "[::1]"))


def browser_check(headers: Mapping[bytes, bytes], hosts: frozenset[bytes]) -> Reply | None:
    """Origin, Host: what a page in a browser (or a DNS-rebound name) sends; None when neither."""
    if b"origin" in headers:
        return error(403, "AccessDeniedException", "requests from a browser page (with an Origin header) are refused")
    host = headers.get(b"host", b"").lower()
    if host not in hosts:
        return error(403, "AccessDeniedException",
                     f"Host {host.decode('latin-1')!r} is not this server's address "
                     f"({', '.join(sorted(h.decode() for h in hosts))})")
    return None


def content_type_check(headers: Mapping[bytes, bytes]) -> Reply | None:
    ctype = headers.get(b"content-type")
    if ctype is None:
        return None
    if ctype.split(b";", 1)[0].strip().lower() not in JSON_TYPES:
        return error(415, "UnsupportedMediaTypeException",
                     f"Content-Type {ctype.decode('latin-1')!r} is not JSON (application/json)")
    return None


def _parse_authorization(value: str) -> dict[str, str] | None:
    """{Credential, SignedHeaders, Signature} of an ``AWS4-HMAC-SHA256 …`` header; None if malformed."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, v = part.strip().partition("=")
        if not eq or name in fields:
            return None
        fields[name] = v
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        return None
    return fields


class Verifier:
    """Checks SigV4 on requests to one server: one access key, one region, service lambda."""

    def __init__(self, credentials: Credentials, region: str, service: str = "lambda") -> None:
        if not credentials.access_key or not credentials.secret_key:
            raise CredentialsMissing("the local Lambda needs an access key id and a secret")
        self.credentials = credentials
        self.region = region
        self.service = service
        self.signer = Signer(region, service)

    def precheck(self, headers: Mapping[bytes, bytes], now: float | None = None) -> Reply | None:
        """What can be checked before the body: the Authorization header's form, key, scope and date."""
        value = headers.get(b"authorization")
        if value is None:
            return error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        auth = _parse_authorization(value.decode("latin-1"))
        if auth is None:
            return error(403, "IncompleteSignatureException",
                         f"Authorization header requires {ALGORITHM} with Credential, SignedHeaders and Signature")
        key, _, scope = auth["Credential"].partition("/")
        if not hmac.compare_digest(key.encode(), self.credentials.access_key.encode()):
            return error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        amz_date = headers.get(b"x-amz-date", b"").decode("latin-1")
        signed = auth["SignedHeaders"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return error(403, "IncompleteSignatureException", "SignedHeaders must include host and x-amz-date")
        try:
            when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return error(403, "IncompleteSignatureException", f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
        if scope != f"{amz_date[:8]}/{self.region}/{self.service}/aws4_request":
            return error(403, "InvalidSignatureException",
                         f"Credential should be scoped to {amz_date[:8]}/{self.region}/{self.service}/aws4_request")
        now = time.time() if now is None else now
        if abs(now - when) > MAX_SKEW_S:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
            return error(403, "InvalidSignatureException",
                         f"Signature expired: {amz_date} is not within 15 minutes of {stamp}")
        return None

    def verify(self, method: bytes, url: bytes, headers: Mapping[bytes, bytes], body: bytes,
               now: float | None = None) -> Reply | None:
        """None when the request is signed by the server's key; else AWS's 403."""
        problem = self.precheck(headers, now)
        if problem is not None:
            return problem
        auth = _parse_authorization(headers[b"authorization"].decode("latin-1"))
        assert auth is not None
        signed = auth["SignedHeaders"].split(";")
        values: dict[str, str] = {}
        for name in signed:
            raw = headers.get(name.encode("latin-1"))
            if raw is None:
                return error(403, "InvalidSignatureException", f"signed header {name!r} is missing")
            values[name] = raw.decode("utf-8", "replace")
        parts = urlsplit(url.decode("latin-1"))
        query = canonical_query(parse_qsl(parts.query, keep_blank_values=True))
        payload_hash = hashlib.sha256(body).hexdigest()
        # The signer drops headers botocore never signs: a list naming one of them does not match.
        expected = self.signer.authorization(method.decode("latin-1"), parts.path or "/", query, values, payload_hash,
                                             values["x-amz-date"], self.credentials)
        want = f"SignedHeaders={auth['SignedHeaders']}, Signature={auth['Signature']}"
        if not hmac.compare_digest(expected.partition(", ")[2].encode(), want.encode()):
            return error(403, "InvalidSignatureException",
                         "The request signature we calculated does not match the signature you provided. "
                         "Check your AWS Secret Access Key and signing method. Consult the service documentation "
                         "for details.")
        return None


def sign(method: str, url: str, body: bytes, credentials: Credentials, region: str = "us-east-1",
         headers: Mapping[str, str] | None = None, amz_date: str | None = None) -> dict[str, str]:
    """Headers (host, x-amz-date, authorization and ``headers``) of a signed request to ``url``:
    for clients that are not boto3 (tests, probes)."""
    parts = urlsplit(url)
    out = {"host": parts.netloc, **(headers or {})}
    out["x-amz-date"] = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if credentials.token:
        out["x-amz-security-token"] = credentials.token
    query = canonical_query(parse_qsl(parts.query, keep_blank_values=True))
    out["authorization"] = Signer(region, "lambda").authorization(
        method, parts.path or "/", query, out, hashlib.sha256(body).hexdigest(), out["x-amz-date"], credentials)
    return out
