// fnbench benchmark subject — Node.js AWS Lambda handler (index.handler).
// Event: {"workload": str, "params": object}. Returns the CONTRACT.md
// envelope; bad params or an unknown workload throw BadRequest, which Lambda
// reports as a FunctionError (errorType "BadRequest").

import { performance } from 'node:perf_hooks';
import * as w from './workloads.mjs';

// Module evaluation is the last thing before the Lambda runtime polls for work.
const initMs = performance.now();

export const handler = async (event) => {
  const t0 = performance.now();
  const cold = w.takeCold();
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new w.BadRequest('event must be a JSON object {"workload", "params"}');
  }
  if (typeof event.workload !== 'string') throw new w.BadRequest('event.workload must be a string');
  const params = event.params ?? {};
  const result = await w.run(event.workload, params);
  return w.envelope(event.workload, cold, initMs, performance.now() - t0, result);
};
