// fnbench benchmark subject — Node.js AWS Lambda handlers.
// index.handler: Event {"workload": str, "params": object}; returns the CONTRACT.md
// envelope; bad params or an unknown workload throw BadRequest, which Lambda
// reports as a FunctionError (errorType "BadRequest").
// index.streamHandler: the same under awslambda.streamifyResponse (Lambda's response
// streaming, aws-lambda-ric): `stream` writes its chunks to the response stream as they
// come; every other workload writes its envelope as one piece.  A BadRequest, before or
// after the first chunk, ends the stream with the error (the runtime's error trailers).

import { performance } from 'node:perf_hooks';
import * as w from './workloads.mjs';

// Module evaluation is the last thing before the Lambda runtime polls for work.
const initMs = performance.now();

function checkEvent(event) {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new w.BadRequest('event must be a JSON object {"workload", "params"}');
  }
  if (typeof event.workload !== 'string') throw new w.BadRequest('event.workload must be a string');
}

export const handler = async (event) => {
  const t0 = performance.now();
  const cold = w.takeCold();
  checkEvent(event);
  const params = event.params ?? {};
  const result = await w.run(event.workload, params);
  return w.envelope(event.workload, cold, initMs, performance.now() - t0, result);
};

const write = (stream, chunk) => new Promise((resolve, reject) => {
  stream.write(chunk, (err) => (err ? reject(err) : resolve()));
});

async function streaming(event, responseStream) {
  const t0 = performance.now();
  const cold = w.takeCold();
  checkEvent(event);
  const params = event.params ?? {};
  if (event.workload === 'stream') {
    const sp = w.streamParams(params);
    const failAfter = w.streamFailAfter(params, sp);
    let sent = 0;
    for await (const chunk of w.streamChunks(sp)) {
      if (sent === failAfter) throw new w.BadRequest(`stream failed after ${sent} chunks (fail_after)`);
      await write(responseStream, chunk);
      sent += 1;
    }
  } else {
    const result = await w.run(event.workload, params);
    await write(responseStream, JSON.stringify(w.envelope(event.workload, cold, initMs, performance.now() - t0, result)));
  }
  responseStream.end();
}

// globalThis.awslambda is set by aws-lambda-ric before it loads this module.
export const streamHandler = globalThis.awslambda ? globalThis.awslambda.streamifyResponse(streaming) : undefined;
