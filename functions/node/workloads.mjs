// The seven workloads of functions/CONTRACT.md (Node.js built-ins only).
// Shared by server.mjs (HTTP) and index.mjs (AWS Lambda). Every workload
// returns the contract's `result` or throws BadRequest; never crashes.

import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleepAsync } from 'node:timers/promises';

export const RUNTIME = 'node';
export const MAX_BODY_BYTES = 8 * 1024 * 1024;
const MAX_SAFE_INT = 2 ** 53;

export class BadRequest extends Error {
  constructor(message) {
    super(message);
    this.name = 'BadRequest';
  }
}

// ---------------------------------------------------------------- process facts

export const INSTANCE = randomBytes(8).toString('hex');
let coldFlag = true;

/** True exactly once per process: on the first invocation. */
export function takeCold() {
  const c = coldFlag;
  coldFlag = false;
  return c;
}

export function envelope(workload, cold, initMs, handlerMs, result) {
  return {
    runtime: RUNTIME,
    workload,
    cold,
    instance: INSTANCE,
    init_ms: initMs,
    handler_ms: handlerMs,
    result,
  };
}

// ---------------------------------------------------------------- param helpers

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** CONTRACT "integer": a number with integral value and |v| <= 2^53. */
function asInt(v) {
  return typeof v === 'number' && Number.isInteger(v) && Math.abs(v) <= MAX_SAFE_INT ? v : null;
}

function asNum(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function get(p, key) {
  if (!Object.prototype.hasOwnProperty.call(p, key)) throw new BadRequest(`missing param "${key}"`);
  return p[key];
}

function intParam(p, key, lo, hi) {
  const i = asInt(get(p, key));
  if (i === null) throw new BadRequest(`param "${key}" must be an integer`);
  if (i < lo || i > hi) throw new BadRequest(`param "${key}" must be in [${lo}, ${hi}]`);
  return i;
}

function strParam(p, key) {
  const v = get(p, key);
  if (typeof v !== 'string') throw new BadRequest(`param "${key}" must be a string`);
  return v;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest();

// ---------------------------------------------------------------- workloads

function echo(p) {
  return get(p, 'payload');
}

function transform(p) {
  const records = get(p, 'records');
  if (!Array.isArray(records)) throw new BadRequest('param "records" must be an array');
  const minTotal = asNum(get(p, 'min_total'));
  if (minTotal === null) throw new BadRequest('param "min_total" must be a number');
  const out = [];
  records.forEach((r, idx) => {
    if (!isObject(r)) throw new BadRequest(`records[${idx}] must be an object`);
    const id = asInt(r.id);
    if (id === null) throw new BadRequest(`records[${idx}].id must be an integer`);
    if (typeof r.name !== 'string') throw new BadRequest(`records[${idx}].name must be a string`);
    const price = asNum(r.price);
    if (price === null || price < 0) throw new BadRequest(`records[${idx}].price must be a number >= 0`);
    const qty = asInt(r.qty);
    if (qty === null || qty < 0) throw new BadRequest(`records[${idx}].qty must be an integer >= 0`);
    if (!Array.isArray(r.tags) || !r.tags.every((t) => typeof t === 'string')) {
      throw new BadRequest(`records[${idx}].tags must be an array of strings`);
    }
    const total = price * qty;
    if (!Number.isFinite(total)) throw new BadRequest(`records[${idx}].price*qty is not finite`);
    if (total >= minTotal) {
      const nameUpper = r.name.replace(/[a-z]+/g, (s) => s.toUpperCase()); // ASCII only
      out.push({ id, name_upper: nameUpper, total });
    }
  });
  // total desc, then id asc; Array.prototype.sort is stable (ties keep input order)
  out.sort((a, b) => (a.total > b.total ? -1 : a.total < b.total ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { count: out.length, records: out };
}

function hash(p) {
  const data = strParam(p, 'data');
  const rounds = intParam(p, 'rounds', 1, 1_000_000);
  let h = sha256(Buffer.from(data, 'utf8'));
  for (let i = 1; i < rounds; i++) h = sha256(h);
  return h.toString('hex');
}

function matmul(p) {
  const n = intParam(p, 'n', 1, 512);
  const a = new Float64Array(n * n);
  const b = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      a[i * n + j] = ((i * n + j) % 13) / 13.0;
      b[i * n + j] = ((i + 2 * j) % 7) / 7.0;
    }
  }
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0.0;
      for (let k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
      c[i * n + j] = s;
    }
  }
  let trace = 0.0;
  for (let i = 0; i < n; i++) trace += c[i * n + i];
  let sum = 0.0;
  for (let i = 0; i < n * n; i++) sum += c[i];
  return { n, trace, sum };
}

function alloc(p) {
  const mb = intParam(p, 'mb', 1, 1024);
  const b = intParam(p, 'object_bytes', 1, 16 * 1024 * 1024);
  const count = Math.floor((mb * 1024 * 1024) / b);
  if (count > 16 * 1024 * 1024) {
    throw new BadRequest('too many objects (mb*2^20/object_bytes must be <= 2^24)');
  }
  let objs = new Array(count);
  for (let i = 0; i < count; i++) {
    const o = new Uint8Array(b);
    const mark = i % 251;
    for (let off = 0; off < b; off += 4096) o[off] = mark;
    objs[i] = o;
  }
  let checksum = 0;
  for (let i = 0; i < count; i++) checksum += objs[i][0];
  objs = null;
  return { objects: count, bytes: count * b, checksum };
}

async function sleep(p) {
  const ms = intParam(p, 'ms', 0, 60_000);
  await sleepAsync(ms);
  return { slept_ms: ms };
}

const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const HEX64_RE = /^[0-9a-fA-F]{64}$/;

function validate(p) {
  const dataB64 = strParam(p, 'data_b64');
  const maxBytes = intParam(p, 'max_bytes', 0, MAX_SAFE_INT);
  const want = strParam(p, 'sha256');
  if (!HEX64_RE.test(want)) throw new BadRequest('param "sha256" must be 64 hex digits');
  // Buffer.from(…, 'base64') is lenient; the alphabet check plus the
  // re-encode round trip enforce canonical RFC 4648 with padding.
  if (dataB64.length % 4 !== 0 || !B64_RE.test(dataB64)) {
    throw new BadRequest('param "data_b64" is not canonical base64');
  }
  const data = Buffer.from(dataB64, 'base64');
  if (data.toString('base64') !== dataB64) throw new BadRequest('param "data_b64" is not canonical base64');
  const size = data.length;
  if (size > maxBytes) return { valid: false, size, reason: 'too_large' };
  if (sha256(data).toString('hex') !== want.toLowerCase()) {
    return { valid: false, size, reason: 'checksum_mismatch' };
  }
  return { valid: true, size, reason: null };
}

// `stream` (CONTRACT.md §3): `chunks` chunks of `chunk_bytes` bytes, chunk i all the ASCII letter
// 'a' + i % 26, `delay_ms` between chunks.  streamChunks() yields them (index.streamHandler writes
// each to Lambda's response stream as it comes); the buffered answer (index.handler, server.mjs)
// waits the same delays and returns the stream's size and SHA-256.
export const MAX_STREAM_BYTES = 20 * 1024 * 1024;

export function streamParams(p) {
  if (!isObject(p)) throw new BadRequest('params must be a JSON object');
  const chunks = intParam(p, 'chunks', 1, 10_000);
  const chunkBytes = intParam(p, 'chunk_bytes', 1, 1024 * 1024);
  const delayMs = intParam(p, 'delay_ms', 0, 10_000);
  if (chunks * chunkBytes > MAX_STREAM_BYTES) throw new BadRequest(`chunks * chunk_bytes must be <= ${MAX_STREAM_BYTES}`);
  if ((chunks - 1) * delayMs > 60_000) throw new BadRequest('(chunks - 1) * delay_ms must be <= 60000');
  return { chunks, chunkBytes, delayMs };
}

/** The optional `fail_after`: after that many chunks the stream fails (BadRequest); -1: never. */
export function streamFailAfter(p, sp) {
  if (!Object.prototype.hasOwnProperty.call(p, 'fail_after')) return -1;
  const n = intParam(p, 'fail_after', 0, 10_000);
  return n < sp.chunks ? n : -1;
}

export async function* streamChunks({ chunks, chunkBytes, delayMs }) {
  for (let i = 0; i < chunks; i++) {
    if (i > 0 && delayMs > 0) await sleepAsync(delayMs);
    yield Buffer.alloc(chunkBytes, 97 + (i % 26));
  }
}

async function stream(p) {
  const sp = streamParams(p);
  const failAfter = streamFailAfter(p, sp);
  const h = createHash('sha256');
  let sent = 0;
  for await (const c of streamChunks(sp)) {
    if (sent === failAfter) throw new BadRequest(`stream failed after ${sent} chunks (fail_after)`);
    h.update(c);
    sent += 1;
  }
  return { chunks: sp.chunks, bytes: sp.chunks * sp.chunkBytes, sha256: h.digest('hex') };
}

const WORKLOADS = { echo, transform, hash, matmul, alloc, sleep, validate, stream };

/** Run one workload; returns its result (maybe a Promise) or throws BadRequest. */
export async function run(workload, params) {
  if (!Object.prototype.hasOwnProperty.call(WORKLOADS, workload)) {
    throw new BadRequest(`unknown workload: ${JSON.stringify(workload)}`);
  }
  if (!isObject(params)) throw new BadRequest('params must be a JSON object');
  return WORKLOADS[workload](params);
}
