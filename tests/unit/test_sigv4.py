"""SigV4: fnbench's signer against botocore's SigV4Auth, byte for byte, for the same request and time."""

import datetime
import hashlib

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials

from workers.contract import Target
from workers.platforms.aws_lambda import LambdaInvoker
from workers.platforms.aws_lambda.sigv4 import Credentials, Signer, derive_key

WHEN = datetime.datetime(2026, 3, 14, 15, 9, 26, tzinfo=datetime.UTC)
AMZ_DATE = "20260314T150926Z"


def botocore_auth(monkeypatch, creds, region, url, headers, body, params=None):
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=body, params=params or {})
    SigV4Auth(BotoCredentials(*creds), "lambda", region).add_auth(request)
    return request.headers


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEJr//////////wEaDLsession+token/=="])
@pytest.mark.parametrize("function,qualifier", [("rust", ""), ("arn:aws:lambda:eu-west-1:123456789012:function:go", "live"),
                                                ("fn_with-odd.chars", "$LATEST")])
def test_invoker_request_matches_botocore_sigv4auth(monkeypatch, token, function, qualifier):
    target = Target(name="t", runtime="rust", platform="aws-lambda", body='{"workload":"echo","params":{"payload":"é"}}',
                    address={"function": function, "qualifier": qualifier, "region": "eu-west-1",
                             "endpoint_url": "http://127.0.0.1:9001"})
    inv = LambdaInvoker(target)
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = inv.request_headers(AMZ_DATE, creds)
    url = "http://127.0.0.1:9001" + inv.path
    unsigned = {k: v for k, v in ours.items() if k not in ("authorization", "x-amz-date", "x-amz-security-token")}
    theirs = botocore_auth(monkeypatch, creds, "eu-west-1", url, unsigned, inv.body,
                           {"Qualifier": qualifier} if qualifier else None)
    assert theirs["X-Amz-Date"] == ours["x-amz-date"]
    assert theirs.get("X-Amz-Security-Token") == ours.get("x-amz-security-token")
    assert theirs["Authorization"] == ours["authorization"]
    raw = inv.request_bytes(AMZ_DATE, creds)
    assert raw.endswith(b"\r\n\r\n" + inv.body)
    assert f"authorization: {ours['authorization']}\r\n".encode() in raw


def test_signature_of_what_boto3_itself_sends(monkeypatch):
    """boto3's own Invoke request (captured before it is sent): the same signature from our
    signer over the headers it signed."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    client = boto3.client("lambda", endpoint_url="http://127.0.0.1:9", region_name="us-west-2",
                          aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret/with+chars",
                          aws_session_token="tok", config=Config(retries={"total_max_attempts": 1}))
    seen = []

    def capture(request, **_):
        seen.append(request)
        return AWSResponse(request.url, 200, {}, None)

    client.meta.events.register("before-send.lambda.Invoke", capture)
    client.invoke(FunctionName="arn:aws:lambda:us-west-2:123456789012:function:f", Qualifier="v1", LogType="Tail",
                  Payload=b'{"a": 1}')
    (req,) = seen
    auth = req.headers["Authorization"].decode() if isinstance(req.headers["Authorization"], bytes) else req.headers["Authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {}
    for name in signed:
        value = req.headers.get(name)
        if value is None and name == "host":
            value = "127.0.0.1:9"
        headers[name] = value.decode() if isinstance(value, bytes) else value
    path, _, query = req.url.split("127.0.0.1:9", 1)[1].partition("?")
    ours = Signer("us-west-2").authorization("POST", path, query, headers, hashlib.sha256(req.body).hexdigest(),
                                             AMZ_DATE, Credentials("AKIDEXAMPLE", "secret/with+chars", "tok"))
    assert ours == auth


def test_signing_key_is_derived_once_per_date():
    signer = Signer("us-east-1")
    k1 = signer.key("s", "20260314")
    assert signer.key("s", "20260314") is k1
    assert k1 == derive_key("s", "20260314", "us-east-1", "lambda")
    assert signer.key("s", "20260315") != k1


def test_aws_documented_signing_key():
    # AWS's published example (IAM docs, "Examples of how to derive a signing key for Signature Version 4").
    key = derive_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_expiring_credentials_are_refreshed_off_the_loop():
    import asyncio
    import threading

    from botocore.credentials import RefreshableCredentials

    threads = []

    def fetch():  # what an STS/IMDS provider returns; records the thread it ran on
        threads.append(threading.current_thread())
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return {"access_key": f"AKID{len(threads)}", "secret_key": "s", "token": "t", "expiry_time": later.isoformat()}

    creds = RefreshableCredentials.create_from_metadata(fetch(), fetch, "test")
    target = Target(name="t", runtime="rust", platform="aws-lambda", body="{}",
                    address={"function": "f", "endpoint_url": "http://127.0.0.1:9"})

    async def main():
        inv = LambdaInvoker(target)
        inv.credentials = creds
        await inv.start()
        first = inv.signed()
        # Now they near expiry (botocore's advisory window): the next signing asks for a refresh.
        creds._expiry_time = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        inv._next_sign = 0.0
        during = inv.signed()  # still the old ones: signing never waits for the refresh
        for _ in range(200):  # bounded: the refresh runs on the executor
            if inv._latest.access_key == "AKID2":
                break
            await asyncio.sleep(0.01)
        after = inv.signed()
        await inv.close()
        return first, during, after, threading.current_thread()

    first, during, after, loop_thread = asyncio.run(main())
    assert b"Credential=AKID1/" in first and b"Credential=AKID1/" in during
    assert b"Credential=AKID2/" in after
    assert len(threads) == 2 and threads[1] is not loop_thread
