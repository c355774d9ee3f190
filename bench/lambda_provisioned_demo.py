#!/usr/bin/env python3
"""Java's answer to cold starts, measured: Rust on demand, Java on demand and Java with provisioned
concurrency on the local Lambda (issue 22 part 2's demo row).

Starts the local Lambda with this machine's Rust and Java builds (``rust`` at 128 MB, ``java`` at
512 MB), publishes Java's $LATEST as version 1 with alias ``live``, and runs one ``fnbench run``:

* ``rust``      on demand ($LATEST), forced cold starts by UpdateFunctionConfiguration;
* ``java``      on demand ($LATEST), the same;
* ``java-pc``   alias ``live`` with ``provisioned_concurrency: 2`` (put, waited READY, restored after);
  its forced cold starts publish a new version, move the alias and wait for READY again, so its cold
  sample is the first invocation on a freshly provisioned instance — no Init.

Prints warm p99, cold p50 (client response time), $ per million invocations (compute + requests, from
the REPORT lines; Duration of invocations served by provisioned instances at the provisioned price)
and, for the provisioned row, what keeping the 2 instances configured costs per hour.

    .venv/bin/python bench/lambda_provisioned_demo.py [--seconds 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lambda_emulator import server as lambda_local  # noqa: E402
from workers.platforms.aws_lambda.sigv4 import Credentials  # noqa: E402

BODY = "{workload: hash, params: {data: fnbench, rounds: 1000}}"
SPEC = """name: lambda-provisioned
targets:
  - {{name: rust,    runtime: rust, platform: aws-lambda, function: rust, endpoint_url: "{endpoint}", workload: hash, body: {body}}}
  - {{name: java,    runtime: java, platform: aws-lambda, function: java, endpoint_url: "{endpoint}", workload: hash, body: {body}}}
  - {{name: java-pc, runtime: java, platform: aws-lambda, function: java, qualifier: live, provisioned_concurrency: 2,
     endpoint_url: "{endpoint}", workload: hash, body: {body}}}
load: {{executor: constant, rps: {rps}, max_in_flight: 2}}
duration: {seconds}s
warmup: 10s
flush_interval: 2s
cold_start: {{enabled: true, invocations: {cold}, rps: 0.25}}  # a provisioned forcing waits for READY: room for it
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--rps", type=float, default=10.0)
    ap.add_argument("--cold", type=int, default=4, help="forced cold starts per target")
    ap.add_argument("--keep", type=Path, help="keep the run folder here")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fnbench-pc-demo-"))
    creds = Credentials("fnbench-demo", "fnbench-demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FNBENCH_LAMBDA_"))}
    env.update(AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)
    rust, java = lambda_local.make_functions(["rust", "java"], reserved=16)
    rust.memory_mb, java.memory_mb = 128, 512
    try:
        with lambda_local.Background([rust, java], credentials=creds) as lam:
            import boto3

            c = boto3.client("lambda", endpoint_url=lam.endpoint, region_name="us-east-1",
                             aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
            c.publish_version(FunctionName="java")
            c.create_alias(FunctionName="java", Name="live", FunctionVersion="1")
            spec = tmp / "spec.yaml"
            spec.write_text(SPEC.format(endpoint=lam.endpoint, body=BODY, rps=args.rps, seconds=args.seconds,
                                        cold=args.cold))
            cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--results", str(tmp / "results"),
                   "--metrics-port", "0", "--run-id", "pc-demo", "--no-html"]
            print(f"local Lambda {lam.endpoint}; instances: {lam.sandbox.describe()}", flush=True)
            r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.seconds + 600)
            print("\n".join(line for line in r.stderr.splitlines() if "provisioned" in line or "alias" in line))
            print(f"fnbench run: exit {r.returncode}")
            folder = tmp / "results" / "pc-demo"
            result = orjson.loads((folder / "result.json").read_bytes())
            pc = orjson.loads((folder / "provisioned.json").read_bytes())["configs"]
        groups = {(g["target"], g["phase"]): g for g in result["groups"]}
        print("\n| | memory | warm p99 ms | cold p50 ms | Init p50 ms | $ per 1M warm: compute / with requests |")
        print("|---|---|---|---|---|---|")
        for name, label, mb in (("rust", "Rust on demand", 128), ("java", "Java on demand", 512),
                                ("java-pc", "Java, provisioned concurrency 2", 512)):
            warm, cold = groups[(name, "warm")], groups.get((name, "cold"), {})
            init = (cold.get("init_duration_ms") or {}).get("p50")
            print(f"| {label} | {mb} MB | {warm['response_ms']['p99']:.3g} | "
                  f"{(cold.get('response_ms') or {}).get('p50', float('nan')):.3g} | "
                  f"{'—' if init is None else f'{init:.3g}'} | ${warm['cost']['per_million_usd']:.4f} / "
                  f"${warm['cost']['per_million_with_requests_usd']:.4f} |")
        for entry in pc:
            print(f"\nprovisioned concurrency {entry['function']}:{entry['qualifier']}: {entry['provisioned_concurrency']} x "
                  f"{entry['memory_mb']} MB: ${entry['provisioned_usd_per_hour']:.4f} per hour configured "
                  f"(this run: {entry['configured_s']:.0f} s, billed as {entry['billed_s']} s, "
                  f"${entry['provisioned_usd']:.5f})")
        if args.keep:
            shutil.copytree(folder, args.keep / folder.name, dirs_exist_ok=True)
        return r.returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
