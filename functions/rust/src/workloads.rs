//! The seven workloads of functions/CONTRACT.md. Every function returns the
//! workload `result` or a bad-request message (never panics on user input).

use std::hint::black_box;

use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

type Params = Map<String, Value>;
type Res = Result<Value, String>;

const MAX_SAFE_INT: f64 = 9_007_199_254_740_992.0; // 2^53

pub async fn run(workload: &str, p: &Params) -> Res {
    match workload {
        "echo" => echo(p),
        "transform" => transform(p),
        "hash" => hash(p),
        "matmul" => matmul(p),
        "alloc" => alloc(p),
        "sleep" => sleep(p).await,
        "validate" => validate(p),
        "stream" => stream(p).await,
        other => Err(format!("unknown workload: {other:?}")),
    }
}

// ---------------------------------------------------------------- helpers

/// CONTRACT "integer": a JSON number (not a boolean) with an integral value
/// and |v| <= 2^53 (so 3.0 is accepted as 3).
fn as_int(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() as f64 <= MAX_SAFE_INT).then_some(i);
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INT).then_some(f as i64)
}

fn int_param(p: &Params, key: &str, min: i64, max: i64) -> Result<i64, String> {
    let v = p.get(key).ok_or_else(|| format!("missing param {key:?}"))?;
    let i = as_int(v).ok_or_else(|| format!("param {key:?} must be an integer"))?;
    if i < min || i > max {
        return Err(format!("param {key:?} must be in [{min}, {max}]"));
    }
    Ok(i)
}

fn str_param<'a>(p: &'a Params, key: &str) -> Result<&'a str, String> {
    p.get(key)
        .ok_or_else(|| format!("missing param {key:?}"))?
        .as_str()
        .ok_or_else(|| format!("param {key:?} must be a string"))
}

fn num_param(p: &Params, key: &str) -> Result<f64, String> {
    p.get(key)
        .ok_or_else(|| format!("missing param {key:?}"))?
        .as_f64()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("param {key:?} must be a number"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

// ---------------------------------------------------------------- workloads

fn echo(p: &Params) -> Res {
    p.get("payload")
        .cloned()
        .ok_or_else(|| "missing param \"payload\"".to_string())
}

fn transform(p: &Params) -> Res {
    let records = p
        .get("records")
        .ok_or("missing param \"records\"")?
        .as_array()
        .ok_or("param \"records\" must be an array")?;
    let min_total = num_param(p, "min_total")?;
    let mut out: Vec<(i64, String, f64)> = Vec::with_capacity(records.len());
    for (idx, r) in records.iter().enumerate() {
        let r = r
            .as_object()
            .ok_or_else(|| format!("records[{idx}] must be an object"))?;
        let bad = |field: &str, what: &str| format!("records[{idx}].{field} must be {what}");
        let id = r
            .get("id")
            .and_then(as_int)
            .ok_or_else(|| bad("id", "an integer"))?;
        let name = r
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("name", "a string"))?;
        let price = r
            .get("price")
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| bad("price", "a number >= 0"))?;
        let qty = r
            .get("qty")
            .and_then(as_int)
            .filter(|q| *q >= 0)
            .ok_or_else(|| bad("qty", "an integer >= 0"))?;
        let tags_ok = r
            .get("tags")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().all(Value::is_string));
        if !tags_ok {
            return Err(bad("tags", "an array of strings"));
        }
        let total = price * (qty as f64);
        if !total.is_finite() {
            return Err(bad("price", "such that price*qty is finite"));
        }
        if total >= min_total {
            out.push((id, name.to_ascii_uppercase(), total));
        }
    }
    // total descending, then id ascending; stable (ties keep input order).
    out.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    let recs: Vec<Value> = out
        .into_iter()
        .map(|(id, name_upper, total)| json!({"id": id, "name_upper": name_upper, "total": total}))
        .collect();
    Ok(json!({"count": recs.len(), "records": recs}))
}

fn hash(p: &Params) -> Res {
    let data = str_param(p, "data")?;
    let rounds = int_param(p, "rounds", 1, 1_000_000)?;
    let mut h: [u8; 32] = Sha256::digest(data.as_bytes()).into();
    for _ in 1..rounds {
        h = Sha256::digest(h).into();
    }
    Ok(Value::String(hex(&h)))
}

fn matmul(p: &Params) -> Res {
    let n = int_param(p, "n", 1, 512)? as usize;
    let mut a = vec![0.0f64; n * n];
    let mut b = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = ((i * n + j) % 13) as f64 / 13.0;
            b[i * n + j] = ((i + 2 * j) % 7) as f64 / 7.0;
        }
    }
    let mut c = vec![0.0f64; n * n];
    for i in 0..n {
        let a_row = &a[i * n..(i + 1) * n];
        for j in 0..n {
            // s += A[i][k] * B[k][j] for k = 0..n-1, in that order (iterators only
            // drop the bounds checks). Rust never contracts a*b+c into an FMA
            // without an explicit mul_add.
            let mut s = 0.0f64;
            for (x, y) in a_row.iter().zip(b[j..].iter().step_by(n)) {
                s += x * y;
            }
            c[i * n + j] = s;
        }
    }
    let c = black_box(c);
    let mut trace = 0.0f64;
    for i in 0..n {
        trace += c[i * n + i];
    }
    let mut sum = 0.0f64;
    for v in &c {
        sum += *v;
    }
    Ok(json!({"n": n, "trace": trace, "sum": sum}))
}

fn alloc(p: &Params) -> Res {
    let mb = int_param(p, "mb", 1, 1024)? as usize;
    let b = int_param(p, "object_bytes", 1, 16 * 1024 * 1024)? as usize;
    let count = mb * 1024 * 1024 / b;
    if count > 16 * 1024 * 1024 {
        return Err("too many objects (mb*2^20/object_bytes must be <= 2^24)".to_string());
    }
    let mut objs: Vec<Vec<u8>> = Vec::with_capacity(count);
    for i in 0..count {
        let mut v = vec![0u8; b];
        let mark = (i % 251) as u8;
        let mut off = 0;
        while off < b {
            v[off] = mark;
            off += 4096;
        }
        objs.push(black_box(v));
    }
    let mut checksum: u64 = 0;
    for o in black_box(&objs) {
        checksum += u64::from(o[0]);
    }
    drop(objs);
    Ok(json!({"objects": count, "bytes": count * b, "checksum": checksum}))
}

async fn sleep(p: &Params) -> Res {
    let ms = int_param(p, "ms", 0, 60_000)?;
    tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
    Ok(json!({"slept_ms": ms}))
}

fn validate(p: &Params) -> Res {
    let data_b64 = str_param(p, "data_b64")?;
    let max_bytes = int_param(p, "max_bytes", 0, MAX_SAFE_INT as i64)?;
    let want = str_param(p, "sha256")?;
    if want.len() != 64 || !want.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("param \"sha256\" must be 64 hex digits".to_string());
    }
    // STANDARD: RFC 4648 alphabet, padding required, non-zero trailing bits
    // rejected; the re-encode check makes "canonical only" explicit.
    let engine = &base64::engine::general_purpose::STANDARD;
    let data = engine
        .decode(data_b64)
        .map_err(|e| format!("param \"data_b64\" is not canonical base64: {e}"))?;
    if engine.encode(&data) != data_b64 {
        return Err("param \"data_b64\" is not canonical base64".to_string());
    }
    let size = data.len();
    let (valid, reason) = if size as i64 > max_bytes {
        (false, Value::from("too_large"))
    } else if hex(&Sha256::digest(&data)) != want.to_ascii_lowercase() {
        (false, Value::from("checksum_mismatch"))
    } else {
        (true, Value::Null)
    };
    Ok(json!({"valid": valid, "size": size, "reason": reason}))
}

// ---------------------------------------------------------------- stream

/// CONTRACT.md §3 `stream`: `chunks` chunks of `chunk_bytes` bytes, chunk i all the ASCII letter
/// 'a' + i mod 26, `delay_ms` between chunks; with `fail_after` < chunks, a BadRequest after that
/// many chunks.  `stream_spec` checks the params; the buffered answer (HTTP, lambda_runtime's
/// handler) waits the same delays and returns the size and SHA-256; main.rs's `stream` handler
/// (`_HANDLER=stream`) sends the chunks in the Runtime API's streaming response mode.
pub const MAX_STREAM_BYTES: i64 = 20 * 1024 * 1024;

pub struct StreamSpec {
    pub chunks: usize,
    pub chunk_bytes: usize,
    pub delay_ms: u64,
    pub fail_after: Option<usize>,
}

pub fn stream_spec(p: &Params) -> Result<StreamSpec, String> {
    let chunks = int_param(p, "chunks", 1, 10_000)?;
    let chunk_bytes = int_param(p, "chunk_bytes", 1, 1024 * 1024)?;
    let delay_ms = int_param(p, "delay_ms", 0, 10_000)?;
    if chunks * chunk_bytes > MAX_STREAM_BYTES {
        return Err(format!("chunks * chunk_bytes must be <= {MAX_STREAM_BYTES}"));
    }
    if (chunks - 1) * delay_ms > 60_000 {
        return Err("(chunks - 1) * delay_ms must be <= 60000".to_string());
    }
    let fail_after = if p.contains_key("fail_after") {
        let n = int_param(p, "fail_after", 0, 10_000)?;
        (n < chunks).then_some(n as usize)
    } else {
        None
    };
    Ok(StreamSpec {
        chunks: chunks as usize,
        chunk_bytes: chunk_bytes as usize,
        delay_ms: delay_ms as u64,
        fail_after,
    })
}

pub fn stream_chunk(i: usize, bytes: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; bytes]
}

pub fn stream_failed(i: usize) -> String {
    format!("stream failed after {i} chunks (fail_after)")
}

async fn stream(p: &Params) -> Res {
    let s = stream_spec(p)?;
    let mut h = Sha256::new();
    for i in 0..s.chunks {
        if i > 0 && s.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(s.delay_ms)).await;
        }
        if s.fail_after == Some(i) {
            return Err(stream_failed(i));
        }
        h.update(stream_chunk(i, s.chunk_bytes));
    }
    Ok(json!({"chunks": s.chunks, "bytes": s.chunks * s.chunk_bytes, "sha256": hex(&h.finalize())}))
}
