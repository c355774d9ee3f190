"""AWS Signature Version 4 for one request, with hmac and hashlib directly (no botocore on the hot path).

The canonical request follows botocore's ``SigV4Auth`` (botocore/auth.py) exactly: method,
path normalised and percent-encoded (``quote(path, safe='/~')`` over the already-encoded URL
path, as botocore does for every service but S3), the query string sorted by encoded key,
every header except those botocore leaves unsigned, lower-cased, sorted, values trimmed and
inner runs of spaces collapsed, the signed-header list, and the body's SHA-256 (always signed).

The signing key (``AWS4`` + secret → date → region → service → ``aws4_request``) is derived
once per (secret, date, region, service) and kept; signing a request is then one SHA-256 of the
canonical request and one HMAC.  Credentials come from the caller (the standard botocore
chain, see ``workers.platforms.aws_lambda``) and are never stored beyond the key cache.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
# botocore/auth.py SIGNED_HEADERS_BLACKLIST: headers a proxy may change, never signed.
UNSIGNED_HEADERS = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def derive_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key for ``date`` (YYYYMMDD)."""
    k = _hmac(f"AWS4{secret_key}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def normalize_path(path: str) -> str:
    """botocore.utils.normalize_url_path: remove dot segments, keep a trailing slash."""
    if not path:
        return "/"
    normalized = posixpath.normpath(path)
    if path.endswith("/") and not normalized.endswith("/"):
        normalized += "/"
    if normalized.startswith("//"):
        normalized = normalized[1:]
    return normalized


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(str(v), safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


class Signer:
    """SigV4 for one (region, service); keeps the derived key per (secret, date)."""

    __slots__ = ("region", "service", "_keys")

    def __init__(self, region: str, service: str = "lambda") -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}

    def key(self, secret_key: str, date: str) -> bytes:
        k = self._keys.get((secret_key, date))
        if k is None:
            if len(self._keys) > 4:  # yesterday's keys (and a rotated secret's) go
                self._keys.clear()
            k = self._keys[(secret_key, date)] = derive_key(secret_key, date, self.region, self.service)
        return k

    def canonical_request(self, method: str, path: str, query: str, headers: Mapping[str, str],
                          payload_hash: str) -> tuple[str, str]:
        """(canonical request, signed header list); ``headers`` must include host."""
        signed: dict[str, list[str]] = {}
        for name, value in headers.items():
            lname = name.lower()
            if lname not in UNSIGNED_HEADERS:
                signed.setdefault(lname, []).append(" ".join(value.split()))
        names = sorted(signed)
        canonical_headers = "".join(f"{n}:{','.join(signed[n])}\n" for n in names)
        signed_headers = ";".join(names)
        cpath = quote(normalize_path(path), safe="/~")
        return "\n".join((method.upper(), cpath, query, canonical_headers, signed_headers, payload_hash)), signed_headers

    def authorization(self, method: str, path: str, query: str, headers: Mapping[str, str], payload_hash: str,
                      amz_date: str, credentials: Credentials) -> str:
        """The Authorization header value; ``headers`` already hold x-amz-date (= ``amz_date``,
        YYYYMMDDTHHMMSSZ) and, with a session token, x-amz-security-token."""
        creq, signed_headers = self.canonical_request(method, path, query, headers, payload_hash)
        date = amz_date[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        string_to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode('utf-8')).hexdigest()}"
        signature = hmac.new(self.key(credentials.secret_key, date), string_to_sign.encode("utf-8"),
                             hashlib.sha256).hexdigest()
        return f"{ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
