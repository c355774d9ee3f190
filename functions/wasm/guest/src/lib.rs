//! fnbench benchmark subject — Rust compiled to WebAssembly (wasm32-wasi), run by
//! functions/wasm/host (runtime `rust-wasm`). Implements the workloads of functions/CONTRACT.md.
//!
//! The host calls exported functions (as Spin calls a component's exported handler), so one
//! instance can serve many requests (`rust-wasm-reuse`) as well as one (`rust-wasm`):
//!
//!   fnbench_alloc(len) -> ptr          a buffer of `len` bytes in this instance's memory
//!   fnbench_handle(ptr, len, wl_len) -> status
//!                                      the buffer holds the workload name (wl_len bytes), then
//!                                      the request body; the guest frees it. 200: the response
//!                                      is the `result` as JSON; 400: an error message (UTF-8)
//!   fnbench_response_ptr() / fnbench_response_len()   the response of the last call
//!
//! Imports: `fnbench.sleep_ms` (the `sleep` workload) and whatever WASI std links (stderr on a
//! panic). The host builds the envelope (runtime, cold, instance, init_ms, handler_ms).
//! Zero dependencies: it builds with Debian's rustc 1.63 and its wasm32 std.

mod json;
mod sha256;
mod workloads;

static mut RESPONSE: Vec<u8> = Vec::new();

#[no_mangle]
pub extern "C" fn fnbench_alloc(len: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

#[no_mangle]
pub unsafe extern "C" fn fnbench_handle(ptr: *mut u8, len: usize, wl_len: usize) -> u32 {
    // SAFETY: ptr came from fnbench_alloc(len.max(1)) and the host wrote `len` bytes into it.
    let input = Vec::from_raw_parts(ptr, len, len.max(1));
    let (status, body) = handle(&input[..wl_len.min(len)], &input[wl_len.min(len)..]);
    RESPONSE = body.into_bytes();
    status
}

#[no_mangle]
pub unsafe extern "C" fn fnbench_response_ptr() -> *const u8 {
    RESPONSE.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn fnbench_response_len() -> usize {
    RESPONSE.len()
}

fn handle(workload: &[u8], body: &[u8]) -> (u32, String) {
    let workload = match std::str::from_utf8(workload) {
        Ok(w) => w,
        Err(_) => return (400, "workload name is not UTF-8".to_string()),
    };
    let params = if body.iter().all(|b| b.is_ascii_whitespace()) {
        json::Value::Obj(Vec::new())
    } else {
        match json::parse(body) {
            Ok(v) => v,
            Err(e) => return (400, format!("body is not valid JSON: {}", e)),
        }
    };
    if !matches!(params, json::Value::Obj(_)) {
        return (400, "params must be a JSON object".to_string());
    }
    match workloads::run(workload, &params) {
        Ok(result) => (200, result),
        Err(msg) => (400, msg),
    }
}
