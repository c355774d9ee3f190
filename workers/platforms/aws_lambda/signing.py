"""Requests signed with SigV4 once per second on fnbench's async HTTP engine: the part that the
``aws-lambda`` invoker (Invoke) and an ``http`` target with ``sigv4`` (a Function URL behind AWS_IAM)
share.

The signature covers X-Amz-Date (one-second resolution), so the signed request is rebuilt once per
second (and when the credentials change): requests within a second carry the same, valid,
signature.  Credentials come from the standard botocore chain (env, shared files, SSO,
container/instance roles), looked up off the event loop; refreshable ones are refreshed on a thread
once they enter botocore's advisory window (requests are signed with the current ones meanwhile),
never written anywhere.  A class using it sets ``self.credentials = None`` (or botocore credentials)
and defines ``request_bytes(amz_date, creds)``; its ``start`` awaits ``start_signing``.
"""

from __future__ import annotations

import time
from typing import Any

from workers.errors import SetupError
from workers.platforms.aws_lambda.sigv4 import Credentials

_time = time.time


def chain_credentials() -> Any:
    import botocore.session  # the standard chain; imported here, off the workers' import path

    return botocore.session.get_session().get_credentials()


class SignsEachSecond:
    credentials: Any
    _frozen: Credentials | None
    _latest: Credentials | None
    _refreshing: bool
    _loop: Any
    credential_refresh_failures: int
    _signed: bytes
    _next_sign: float
    target: Any

    def init_signing(self) -> None:
        self.credentials = None  # botocore's (refreshable) credentials
        self._frozen = None
        self._latest = None  # the credentials requests are signed with
        self._refreshing = False
        self._loop = None
        self.credential_refresh_failures = 0
        self._signed = b""
        self._next_sign = 0.0  # epoch second at which the signed request is rebuilt

    def request_bytes(self, amz_date: str, creds: Credentials) -> bytes:
        raise NotImplementedError

    async def start_signing(self) -> None:
        import asyncio

        loop = self._loop = asyncio.get_running_loop()
        if self.credentials is None:  # the chain may ask a metadata endpoint: off the loop
            creds = await loop.run_in_executor(None, chain_credentials)
            if creds is None:
                raise SetupError(f"target {self.target.name!r}: no AWS credentials in the standard chain "
                                 "(environment, shared files, SSO, container or instance role)")
            self.credentials = creds
        self._latest = await loop.run_in_executor(None, self._freeze)
        self._resign(_time())

    def signed(self) -> bytes:
        now = _time()
        if now >= self._next_sign:
            self._resign(now)
        return self._signed

    def _freeze(self) -> Credentials:
        """On a thread: botocore refreshes expiring credentials here (STS, SSO, IMDS…)."""
        frozen = self.credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _refreshed(self, fut: Any) -> None:
        self._refreshing = False
        if fut.cancelled() or fut.exception() is not None:
            self.credential_refresh_failures += 1  # signed with the old ones until botocore succeeds
            return
        self._latest = fut.result()
        self._next_sign = 0.0  # sign with the new credentials from the next request on

    def _resign(self, now: float) -> None:
        # Refreshable credentials nearing expiry (botocore's advisory window) are refreshed on a
        # thread; requests keep being signed with the current ones meanwhile.
        needed = getattr(self.credentials, "refresh_needed", None)
        if needed is not None and not self._refreshing and self._loop is not None and needed():
            self._refreshing = True
            self._loop.run_in_executor(None, self._freeze).add_done_callback(self._refreshed)
        creds = self._latest
        assert creds is not None, "start() first"
        second = int(now)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        self._signed = self.request_bytes(amz_date, creds)
        self._frozen = creds
        self._next_sign = second + 1.0
