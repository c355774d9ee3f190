"""Response streaming, Rust beside Node, in one `fnbench run` on the local Lambda (issue 22 part 3).

Both functions stream the same `stream` workload (functions/CONTRACT.md §3) through
InvokeWithResponseStream (`invoke_mode: stream`): Node under aws-lambda-ric's streamifyResponse
(index.streamHandler), Rust with its bootstrap's own Runtime API streaming client (_HANDLER=stream).
Prints each one's time to first byte and to last byte (p50/p99, from the due time) and Rust's ratio
to Node.  Everything runs on loopback.

    .venv/bin/python bench/lambda_stream.py [--rps 10] [--seconds 10] [--chunks 5] [--chunk-bytes 4096] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambda_emulator import server as lambda_local  # noqa: E402
from workers.platforms.aws_lambda.sigv4 import Credentials  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rps", type=float, default=10.0)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--chunk-bytes", type=int, default=4096)
    ap.add_argument("--delay-ms", type=int, default=50)
    a = ap.parse_args()
    node, rust = lambda_local.make_functions(["node", "rust"], reserved=16)
    fns = [lambda_local.Function(name="node-stream", runtime="node", command=[*node.command[:-1], "index.streamHandler"],
                                 cwd=node.cwd, env=node.env, handler="index.streamHandler", reserved=16),
           lambda_local.Function(name="rust-stream", runtime="rust", command=rust.command, cwd=rust.cwd, env=rust.env,
                                 handler="stream", reserved=16)]
    body = f"{{workload: stream, params: {{chunks: {a.chunks}, chunk_bytes: {a.chunk_bytes}, delay_ms: {a.delay_ms}}}}}"
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench")) as lam, \
            tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "stream.yaml"
        spec.write_text("name: lambda-stream-bench\ntargets:\n" + "".join(
            f"  - {{name: {f.name}, runtime: {f.runtime}, platform: aws-lambda, function: {f.name}, "
            f"endpoint_url: '{lam.endpoint}', invoke_mode: stream, workload: stream, body: {body}}}\n" for f in fns)
            + f"load: {{executor: constant, rps: {a.rps}, max_in_flight: 16}}\nduration: {a.seconds}s\nwarmup: 2s\n"
            "flush_interval: 1s\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID="fnbench", AWS_SECRET_ACCESS_KEY="fnbench")
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--results", tmp,
                            "--metrics-port", "0", "--run-id", "stream", "--no-html"],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        if r.returncode not in (0, 1):
            print(r.stdout, r.stderr[-3000:])
            return r.returncode
        result = orjson.loads((Path(tmp) / "stream" / "result.json").read_bytes())
    rows = {g["target"]: g for g in result["groups"] if g["phase"] == "warm"}
    print(f"{a.chunks} chunks of {a.chunk_bytes} B, {a.delay_ms} ms apart, {a.rps:g} req/s for {a.seconds} s each")
    print(f"{'':12} {'ok':>5} {'TTFB p50':>9} {'TTFB p99':>9} {'TTLB p50':>9} {'TTLB p99':>9}  (ms, from the due time)")
    for name in ("node-stream", "rust-stream"):
        g = rows[name]
        print(f"{name:12} {g['outcomes'].get('ok', 0):>5} {g['ttfb_ms']['p50']:>9.2f} {g['ttfb_ms']['p99']:>9.2f} "
              f"{g['ttlb_ms']['p50']:>9.2f} {g['ttlb_ms']['p99']:>9.2f}")
    n, rs = rows["node-stream"], rows["rust-stream"]
    print("rust / node: " + ", ".join(f"{h} {s} ×{rs[h][s] / n[h][s]:.2f}" for h in ("ttfb_ms", "ttlb_ms")
                                      for s in ("p50", "p99") if n[h][s]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
