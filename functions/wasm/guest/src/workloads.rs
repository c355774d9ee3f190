//! The workloads of functions/CONTRACT.md §3, as functions/rust/src/workloads.rs has them, on the
//! guest's own JSON and SHA-256. Each returns the `result` as JSON text, or a bad-request message.

use super::json::{self, Num, Value};
use super::sha256;

type Res = Result<String, String>;

const MAX_SAFE_INT: f64 = 9_007_199_254_740_992.0; // 2^53

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "fnbench")]
extern "C" {
    /// The host sleeps this request's thread (an edge host's timer: other requests run meanwhile).
    fn sleep_ms(ms: u32);
}

/// Natively (the guest's logic run as a plain program, for tests): the thread sleeps.
#[cfg(not(target_arch = "wasm32"))]
unsafe fn sleep_ms(ms: u32) {
    std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
}

pub fn run(workload: &str, p: &Value) -> Res {
    match workload {
        "echo" => echo(p),
        "transform" => transform(p),
        "hash" => hash(p),
        "matmul" => matmul(p),
        "alloc" => alloc(p),
        "sleep" => sleep(p),
        "validate" => validate(p),
        other => {
            let mut quoted = String::new();
            json::write_str(&mut quoted, other);
            Err(format!("unknown workload: {}", quoted))
        }
    }
}

// ---------------------------------------------------------------- helpers

/// CONTRACT "integer": a JSON number whose value is integral and |v| <= 2^53 (3.0 is 3).
fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Num(Num::I(i)) => {
            if (i.unsigned_abs() as f64) <= MAX_SAFE_INT {
                Some(*i)
            } else {
                None
            }
        }
        Value::Num(Num::U(_)) => None,
        Value::Num(Num::F(f)) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INT {
                Some(*f as i64)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn missing(key: &str) -> String {
    format!("missing param \"{}\"", key)
}

fn int_param(p: &Value, key: &str, min: i64, max: i64) -> Result<i64, String> {
    let v = p.get(key).ok_or_else(|| missing(key))?;
    let i = as_int(v).ok_or_else(|| format!("param \"{}\" must be an integer", key))?;
    if i < min || i > max {
        return Err(format!("param \"{}\" must be in [{}, {}]", key, min, max));
    }
    Ok(i)
}

fn str_param<'a>(p: &'a Value, key: &str) -> Result<&'a str, String> {
    p.get(key)
        .ok_or_else(|| missing(key))?
        .as_str()
        .ok_or_else(|| format!("param \"{}\" must be a string", key))
}

fn num_param(p: &Value, key: &str) -> Result<f64, String> {
    p.get(key)
        .ok_or_else(|| missing(key))?
        .as_f64()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("param \"{}\" must be a number", key))
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

fn echo(p: &Value) -> Res {
    let payload = p.get("payload").ok_or_else(|| missing("payload"))?;
    let mut out = String::new();
    json::write(&mut out, payload);
    Ok(out)
}

fn transform(p: &Value) -> Res {
    let records = p
        .get("records")
        .ok_or_else(|| missing("records"))?
        .as_array()
        .ok_or("param \"records\" must be an array")?;
    let min_total = num_param(p, "min_total")?;
    let mut out: Vec<(i64, String, f64)> = Vec::with_capacity(records.len());
    for (idx, r) in records.iter().enumerate() {
        if !matches!(r, Value::Obj(_)) {
            return Err(format!("records[{}] must be an object", idx));
        }
        let bad = |field: &str, what: &str| format!("records[{}].{} must be {}", idx, field, what);
        let id = r.get("id").and_then(as_int).ok_or_else(|| bad("id", "an integer"))?;
        let name = r.get("name").and_then(Value::as_str).ok_or_else(|| bad("name", "a string"))?;
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
        let tags_ok = match r.get("tags").and_then(Value::as_array) {
            Some(t) => t.iter().all(|x| matches!(x, Value::Str(_))),
            None => false,
        };
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
    let mut s = format!("{{\"count\":{},\"records\":[", out.len());
    for (k, (id, name_upper, total)) in out.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"id\":{},\"name_upper\":", id));
        json::write_str(&mut s, name_upper);
        s.push_str(",\"total\":");
        json::write_f64(&mut s, *total);
        s.push('}');
    }
    s.push_str("]}");
    Ok(s)
}

fn hash(p: &Value) -> Res {
    let data = str_param(p, "data")?;
    let rounds = int_param(p, "rounds", 1, 1_000_000)?;
    let mut h = sha256::digest(data.as_bytes());
    for _ in 1..rounds {
        h = sha256::digest(&h);
    }
    let mut s = String::new();
    json::write_str(&mut s, &hex(&h));
    Ok(s)
}

fn matmul(p: &Value) -> Res {
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
            // s += A[i][k] * B[k][j], k ascending; WebAssembly has no implicit FMA.
            let mut s = 0.0f64;
            for (x, y) in a_row.iter().zip(b[j..].iter().step_by(n)) {
                s += x * y;
            }
            c[i * n + j] = s;
        }
    }
    let mut trace = 0.0f64;
    for i in 0..n {
        trace += c[i * n + i];
    }
    let mut sum = 0.0f64;
    for v in &c {
        sum += *v;
    }
    let mut s = format!("{{\"n\":{},\"trace\":", n);
    json::write_f64(&mut s, trace);
    s.push_str(",\"sum\":");
    json::write_f64(&mut s, sum);
    s.push('}');
    Ok(s)
}

fn alloc(p: &Value) -> Res {
    let mb = int_param(p, "mb", 1, 1024)? as u64;
    let b = int_param(p, "object_bytes", 1, 16 * 1024 * 1024)? as u64;
    let count = mb * 1024 * 1024 / b;
    if count > 16 * 1024 * 1024 {
        return Err("too many objects (mb*2^20/object_bytes must be <= 2^24)".to_string());
    }
    let (count_u, b_u) = (count as usize, b as usize);
    let mut objs: Vec<Vec<u8>> = Vec::with_capacity(count_u);
    for i in 0..count_u {
        let mut v = vec![0u8; b_u];
        let mark = (i % 251) as u8;
        let mut off = 0;
        while off < b_u {
            // Volatile: the pages are really touched (std::hint::black_box is newer than rustc 1.63).
            unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(off), mark) };
            off += 4096;
        }
        objs.push(v);
    }
    let mut checksum: u64 = 0;
    for o in &objs {
        checksum += u64::from(unsafe { std::ptr::read_volatile(o.as_ptr()) });
    }
    drop(objs);
    Ok(format!("{{\"objects\":{},\"bytes\":{},\"checksum\":{}}}", count, count * b, checksum))
}

fn sleep(p: &Value) -> Res {
    let ms = int_param(p, "ms", 0, 60_000)?;
    unsafe { sleep_ms(ms as u32) };
    Ok(format!("{{\"slept_ms\":{}}}", ms))
}

/// RFC 4648 §4 alphabet, `=` padding required; None for anything else.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let groups = bytes.len() / 4;
    for (g, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return None;
        }
        let mut n = 0u32;
        for c in &quad[..4 - pad] {
            n = (n << 6) | val(*c)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

fn b64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity((data.len() + 2) / 3 * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn validate(p: &Value) -> Res {
    let data_b64 = str_param(p, "data_b64")?;
    let max_bytes = int_param(p, "max_bytes", 0, MAX_SAFE_INT as i64)?;
    let want = str_param(p, "sha256")?;
    if want.len() != 64 || !want.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("param \"sha256\" must be 64 hex digits".to_string());
    }
    // Canonical only: decoding then re-encoding gives the same string (zero trailing bits).
    let data = match b64_decode(data_b64) {
        Some(d) if b64_encode(&d) == data_b64 => d,
        _ => return Err("param \"data_b64\" is not canonical base64".to_string()),
    };
    let size = data.len();
    let reason = if size as i64 > max_bytes {
        "\"too_large\""
    } else if hex(&sha256::digest(&data)) != want.to_ascii_lowercase() {
        "\"checksum_mismatch\""
    } else {
        "null"
    };
    Ok(format!("{{\"valid\":{},\"size\":{},\"reason\":{}}}", reason == "null", size, reason))
}
