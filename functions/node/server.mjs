// fnbench benchmark subject — Node.js HTTP server (node:http, no npm deps).
// Implements functions/CONTRACT.md on $HOST:$PORT (default 127.0.0.1:8080;
// PORT=0: any free port, reported on $FNBENCH_READY_FD).
// init_ms = performance.now() when listening: Node's timeOrigin is the start
// of the process, so V8/Node bootstrap and module loading are included.

import fs from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import * as w from './workloads.mjs';

let initMs = 0;

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

const error = (res, status, msg) =>
  send(res, status, { error: msg, runtime: w.RUNTIME, instance: w.INSTANCE });

async function invoke(res, workload, body) {
  const t0 = performance.now();
  const cold = w.takeCold();
  try {
    let params = {};
    if (body.trim() !== '') {
      try {
        params = JSON.parse(body);
      } catch (e) {
        throw new w.BadRequest(`body is not valid JSON: ${e.message}`);
      }
    }
    const result = await w.run(workload, params);
    const handlerMs = performance.now() - t0;
    send(res, 200, w.envelope(workload, cold, initMs, handlerMs, result));
  } catch (e) {
    if (e instanceof w.BadRequest) error(res, 400, e.message);
    else if (e instanceof RangeError) error(res, 500, `resource limit: ${e.message}`);
    else error(res, 500, String(e && e.message ? e.message : e));
  }
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?', 1)[0];
  if (path === '/health') {
    if (req.method === 'GET' || req.method === 'HEAD') {
      return send(res, 200, { status: 'ok', runtime: w.RUNTIME, instance: w.INSTANCE });
    }
    return error(res, 405, 'method not allowed');
  }
  if (req.method !== 'POST') {
    req.resume();
    return req.method === 'GET' ? error(res, 404, 'not found') : error(res, 405, 'method not allowed');
  }
  const chunks = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (chunk) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > w.MAX_BODY_BYTES) {
      tooLarge = true;
      res.setHeader('connection', 'close');
      error(res, 413, 'request body too large');
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (!tooLarge) invoke(res, path.slice(1), Buffer.concat(chunks).toString('utf8'));
  });
  req.on('error', () => res.destroy());
});

server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

// SIGTERM/SIGINT: exit promptly (in-flight requests are dropped).
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));

const host = process.env.HOST || '127.0.0.1';
const port = Number.parseInt(process.env.PORT || '8080', 10);
server.listen({ host, port, backlog: 1024 }, () => {
  initMs = performance.now();
  // CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a newline to
  // that descriptor and close it (the parent learns the port of PORT=0 and that we listen).
  const fd = Number.parseInt(process.env.FNBENCH_READY_FD || '', 10);
  if (fd > 2) {
    try {
      fs.writeSync(fd, `${server.address().port}\n`);
      fs.closeSync(fd);
    } catch {
      // the parent stopped waiting: nothing to tell
    }
  }
});
