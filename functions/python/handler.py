"""fnbench benchmark subject — Python AWS Lambda handler (standard library only).

Handler: `handler.handler`. Event: {"workload": str, "params": object}.
Returns the CONTRACT.md envelope; bad params or an unknown workload raise
BadRequest, which Lambda reports as a FunctionError (errorType "BadRequest").
"""

import time

_T0 = time.perf_counter()  # earliest in-process point (see CONTRACT.md, init_ms)

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w  # noqa: E402
from workloads import BadRequest  # noqa: E402,F401  (re-exported for callers)

# Module import is the last thing before the Lambda runtime starts polling.
INIT_MS = w.init_ms_since(_T0)


def handler(event, context=None):  # noqa: ARG001 - Lambda signature
    t0 = time.perf_counter()
    cold = w.take_cold()
    if not isinstance(event, dict):
        raise w.BadRequest('event must be a JSON object {"workload", "params"}')
    workload = event.get("workload")
    if not isinstance(workload, str):
        raise w.BadRequest("event.workload must be a string")
    params = event.get("params")
    if params is None:
        params = {}
    result = w.run_sync(workload, params)
    handler_ms = (time.perf_counter() - t0) * 1000.0
    return w.envelope(workload, cold, INIT_MS, handler_ms, result)
