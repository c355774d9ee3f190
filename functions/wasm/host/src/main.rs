//! fnbench's WebAssembly host — an edge-style server for functions/wasm/guest (Rust compiled to
//! wasm32-wasi) on the wasmtime crate, the runtime Spin and Fastly Compute are built on.
//! Implements the HTTP side of functions/CONTRACT.md for runtimes `rust-wasm` and `rust-wasm-reuse`.
//!
//!   fnbench-wasm-host [--mode per-request|reuse] [--max-memory-mb N] [--timeout-ms N] MODULE
//!   fnbench-wasm-host --compile MODULE.wasm OUT.cwasm     (precompile once, as an edge platform
//!                                                         does at deploy time)
//!
//! MODULE is a .wasm or .wat module, or a .cwasm precompiled by this very binary. The module is
//! compiled (or mapped) once at start and linked once (an `InstancePre`). Then:
//!
//! - `per-request` (runtime `rust-wasm`, like Spin and Fastly Compute): every request gets a fresh
//!   Store and instance, dropped after the response. Every response is `cold: true` and its
//!   `init_ms` is that instance's instantiation time (Store + instantiate).
//! - `reuse` (runtime `rust-wasm-reuse`): an instance serves request after request. Concurrent
//!   requests take another idle instance (a new one when none is idle), so one serial client sees
//!   one warm instance. `cold: true` and `init_ms` (its instantiation) on an instance's first
//!   request; `init_ms` stays in its later responses. An instance that trapped is dropped.
//!
//! Every request is bounded: a memory limit (StoreLimits; growing past it traps) and a deadline
//! (epoch interruption, ticked every 10 ms: no per-instruction cost, unlike fuel). A trap, an
//! interrupted module or an out-of-memory module is a `500` (fnbench's `function_error`); the
//! host serves on. Guest code runs on tokio's blocking threads, so a sleeping or spinning request
//! never stalls the others. `host_init_ms` in each envelope: process start -> listening.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use wasmtime::{
    Caller, Config, Engine, Instance, InstancePre, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap,
    TypedFunc,
};

const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const EPOCH_TICK: Duration = Duration::from_millis(10);

static START: OnceLock<Instant> = OnceLock::new();
static HOST_INIT_MS: OnceLock<f64> = OnceLock::new();
static INSTANCE: OnceLock<String> = OnceLock::new();

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    PerRequest,
    Reuse,
}

struct Options {
    mode: Mode,
    max_memory_bytes: usize,
    timeout: Duration,
    module: String,
}

/// What a Store holds: the limits of its one instance.
struct State {
    limits: StoreLimits,
}

/// One live instance and the exports the host calls.
struct Live {
    store: Store<State>,
    alloc: TypedFunc<u32, u32>,
    handle: TypedFunc<(u32, u32, u32), u32>,
    response_ptr: TypedFunc<(), u32>,
    response_len: TypedFunc<(), u32>,
    memory: wasmtime::Memory,
    init_ms: f64,
}

struct Host {
    runtime: &'static str,
    opts: Options,
    engine: Engine,
    pre: InstancePre<State>,
    idle: Mutex<Vec<Live>>, // reuse mode: instances waiting for a request
}

/// What one request came to: 200 with the result's JSON text, 400 with a message (bad request),
/// or 500 with a message (the module trapped, ran out of time or memory, or broke the ABI).
enum Outcome {
    Ok { result: Vec<u8>, cold: bool, init_ms: f64, handler_ms: f64 },
    BadRequest(String),
    Failed(String),
}

fn instance_id() -> &'static str {
    INSTANCE.get_or_init(|| {
        use std::io::Read;
        let mut buf = [0u8; 8];
        if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            buf = (nanos ^ ((std::process::id() as u64) << 32)).to_le_bytes();
        }
        buf.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------------ the module and its imports

fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&config)
}

fn load_module(engine: &Engine, path: &str) -> wasmtime::Result<Module> {
    let bytes = std::fs::read(path).map_err(|e| wasmtime::format_err!("cannot read {path}: {e}"))?;
    if path.ends_with(".cwasm") {
        // SAFETY: a .cwasm is only ever written by `--compile` of this binary (same wasmtime, same
        // Config); wasmtime checks both and refuses a mismatch.
        unsafe { Module::deserialize(engine, &bytes) }
    } else {
        Module::new(engine, &bytes) // binary .wasm, or .wat text
    }
}

fn guest_memory(caller: &mut Caller<'_, State>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))
}

/// The guest's imports: `fnbench.sleep_ms`, and the four WASI preview-1 calls Rust's std links
/// into it (stderr for a panic message, an empty environment, exit). Any other import traps when
/// called (a module that needs more is not a fnbench subject).
fn linker(engine: &Engine, module: &Module) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap("fnbench", "sleep_ms", |ms: u32| std::thread::sleep(Duration::from_millis(u64::from(ms))))?;
    let wasi = "wasi_snapshot_preview1";
    linker.func_wrap(
        wasi,
        "fd_write",
        |mut caller: Caller<'_, State>, fd: i32, iovs: u32, iovs_len: u32, nwritten: u32| -> wasmtime::Result<i32> {
            let memory = guest_memory(&mut caller)?;
            let data = memory.data_mut(&mut caller);
            let read_u32 = |data: &[u8], at: u32| -> wasmtime::Result<u32> {
                let at = at as usize;
                data.get(at..at + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| wasmtime::format_err!("fd_write: pointer out of bounds"))
            };
            let mut total = 0u32;
            let mut text = Vec::new();
            for k in 0..iovs_len.min(1024) {
                let ptr = read_u32(data, iovs + 8 * k)? as usize;
                let len = read_u32(data, iovs + 8 * k + 4)? as usize;
                let bytes = data.get(ptr..ptr + len).ok_or_else(|| wasmtime::format_err!("fd_write: iovec out of bounds"))?;
                text.extend_from_slice(&bytes[..bytes.len().min(4096 - text.len().min(4096))]);
                total = total.wrapping_add(len as u32);
            }
            if fd == 1 || fd == 2 {
                eprint!("guest: {}", String::from_utf8_lossy(&text));
            } else {
                return Ok(8); // EBADF
            }
            let at = nwritten as usize;
            let slot = data.get_mut(at..at + 4).ok_or_else(|| wasmtime::format_err!("fd_write: pointer out of bounds"))?;
            slot.copy_from_slice(&total.to_le_bytes());
            Ok(0)
        },
    )?;
    linker.func_wrap(
        wasi,
        "environ_sizes_get",
        |mut caller: Caller<'_, State>, count: u32, size: u32| -> wasmtime::Result<i32> {
            let memory = guest_memory(&mut caller)?;
            for at in [count as usize, size as usize] {
                memory.write(&mut caller, at, &0u32.to_le_bytes())?;
            }
            Ok(0)
        },
    )?;
    linker.func_wrap(wasi, "environ_get", |_: u32, _: u32| -> i32 { 0 })?;
    linker.func_wrap(wasi, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::format_err!("the module called proc_exit({code})"))
    })?;
    linker.define_unknown_imports_as_traps(module)?;
    Ok(linker)
}

// ------------------------------------------------------------------ instances and requests

impl Host {
    fn instantiate(&self) -> wasmtime::Result<Live> {
        let t0 = Instant::now();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.opts.max_memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .table_elements(1 << 16)
            .trap_on_grow_failure(true) // out of memory is a trap that names the limit, not a null malloc
            .build();
        let mut store = Store::new(&self.engine, State { limits });
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let instance: Instance = self.pre.instantiate(&mut store)?;
        let init_ms = ms(t0.elapsed());
        Ok(Live {
            alloc: instance.get_typed_func(&mut store, "fnbench_alloc")?,
            handle: instance.get_typed_func(&mut store, "fnbench_handle")?,
            response_ptr: instance.get_typed_func(&mut store, "fnbench_response_ptr")?,
            response_len: instance.get_typed_func(&mut store, "fnbench_response_len")?,
            memory: instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))?,
            store,
            init_ms,
        })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.opts.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }

    /// Run one request in `live` (blocking): copy the workload name and body in, call the handler,
    /// copy the response out. Err: the module trapped or broke the ABI.
    fn call(&self, live: &mut Live, workload: &str, body: &[u8]) -> wasmtime::Result<(u32, Vec<u8>)> {
        let deadline = self.deadline_ticks();
        live.store.set_epoch_deadline(deadline); // each request gets the whole budget
        let len = u32::try_from(workload.len() + body.len())?;
        let ptr = live.alloc.call(&mut live.store, len)?;
        live.memory.write(&mut live.store, ptr as usize, workload.as_bytes())?;
        live.memory.write(&mut live.store, ptr as usize + workload.len(), body)?;
        let status = live.handle.call(&mut live.store, (ptr, len, workload.len() as u32))?;
        let rptr = live.response_ptr.call(&mut live.store, ())? as usize;
        let rlen = live.response_len.call(&mut live.store, ())? as usize;
        let data = live.memory.data(&live.store);
        let out = data
            .get(rptr..rptr + rlen)
            .ok_or_else(|| wasmtime::format_err!("the module's response is out of bounds"))?
            .to_vec();
        Ok((status, out))
    }

    fn serve(&self, workload: &str, body: &[u8]) -> Outcome {
        let pooled = if self.opts.mode == Mode::Reuse { self.idle.lock().expect("pool").pop() } else { None };
        let (mut live, cold) = match pooled {
            Some(live) => (live, false),
            None => match self.instantiate() {
                Ok(live) => (live, true),
                Err(e) => return Outcome::Failed(describe("instantiation failed", &e)),
            },
        };
        let t0 = Instant::now();
        let called = self.call(&mut live, workload, body);
        let handler_ms = ms(t0.elapsed());
        match called {
            Ok((status, out)) => {
                let init_ms = live.init_ms;
                if self.opts.mode == Mode::Reuse {
                    self.idle.lock().expect("pool").push(live);
                }
                match status {
                    200 => Outcome::Ok { result: out, cold, init_ms, handler_ms },
                    400 => Outcome::BadRequest(String::from_utf8_lossy(&out).into_owned()),
                    other => Outcome::Failed(format!("the module answered status {other}")),
                }
            }
            Err(e) => Outcome::Failed(describe("the module failed", &e)), // the instance is dropped
        }
    }
}

fn describe(what: &str, e: &wasmtime::Error) -> String {
    let kind = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "deadline exceeded (epoch interruption)".to_string(),
        Some(t) => format!("trap: {t}"),
        None => "error".to_string(),
    };
    format!("{what}: {kind}: {e:#}")
}

// ------------------------------------------------------------------ HTTP

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn error_response(runtime: &str, status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut s = String::from("{\"error\":");
    json_str(&mut s, msg);
    let _ = write!(s, ",\"runtime\":\"{runtime}\",\"instance\":\"{}\"}}", instance_id());
    respond(status, s.into_bytes())
}

fn envelope(host: &Host, workload: &str, result: &[u8], cold: bool, init_ms: f64, handler_ms: f64) -> Vec<u8> {
    let mut s = format!("{{\"runtime\":\"{}\",\"workload\":", host.runtime);
    json_str(&mut s, workload);
    let _ = write!(
        s,
        ",\"cold\":{cold},\"instance\":\"{}\",\"init_ms\":{init_ms:?},\"handler_ms\":{handler_ms:?},\"host_init_ms\":{:?},\"result\":",
        instance_id(),
        HOST_INIT_MS.get().copied().unwrap_or(0.0),
    );
    let mut out = s.into_bytes();
    out.extend_from_slice(result);
    out.push(b'}');
    out
}

async fn handle(host: Arc<Host>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let runtime = host.runtime;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/health" {
        return Ok(if method == Method::GET || method == Method::HEAD {
            let body = format!("{{\"status\":\"ok\",\"runtime\":\"{runtime}\",\"instance\":\"{}\"}}", instance_id());
            respond(StatusCode::OK, body.into_bytes())
        } else {
            error_response(runtime, StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        });
    }
    if method != Method::POST {
        let status = if method == Method::GET { StatusCode::NOT_FOUND } else { StatusCode::METHOD_NOT_ALLOWED };
        return Ok(error_response(runtime, status, if method == Method::GET { "not found" } else { "method not allowed" }));
    }
    let workload = path.trim_start_matches('/').to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                error_response(runtime, StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                error_response(runtime, StatusCode::BAD_REQUEST, "could not read request body")
            })
        }
    };
    let worker = Arc::clone(&host);
    let wl = workload.clone();
    let outcome = tokio::task::spawn_blocking(move || worker.serve(&wl, &body))
        .await
        .unwrap_or_else(|e| Outcome::Failed(format!("the host's worker thread failed: {e}")));
    Ok(match outcome {
        Outcome::Ok { result, cold, init_ms, handler_ms } => {
            respond(StatusCode::OK, envelope(&host, &workload, &result, cold, init_ms, handler_ms))
        }
        Outcome::BadRequest(msg) => error_response(runtime, StatusCode::BAD_REQUEST, &msg),
        Outcome::Failed(msg) => {
            eprintln!("{workload}: {msg}");
            error_response(runtime, StatusCode::INTERNAL_SERVER_ERROR, &msg)
        }
    })
}

/// CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a newline to it.
fn report_port(port: u16) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    if let Some(fd) = std::env::var("FNBENCH_READY_FD").ok().and_then(|v| v.parse::<i32>().ok()) {
        if fd > 2 {
            // SAFETY: the descriptor was passed to this process for this one write; nothing else owns it.
            let mut ready = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = writeln!(ready, "{port}");
        }
    }
}

async fn serve_http(host: Arc<Host>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind((addr.as_str(), port)).await?;
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        std::process::exit(0);
    });
    instance_id();
    let start = START.get().copied().unwrap_or_else(Instant::now);
    let _ = HOST_INIT_MS.set(ms(start.elapsed()));
    report_port(listener.local_addr()?.port());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let host = Arc::clone(&host);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&host), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// ------------------------------------------------------------------ command line

const USAGE: &str = "usage: fnbench-wasm-host [--mode per-request|reuse] [--max-memory-mb N] [--timeout-ms N] MODULE\n\
                     \x20      fnbench-wasm-host --compile MODULE.wasm OUT.cwasm";

fn usage(msg: &str) -> ! {
    eprintln!("fnbench-wasm-host: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn number(flag: &str, value: Option<String>) -> u64 {
    match value.as_deref().map(str::parse::<u64>) {
        Some(Ok(n)) if n > 0 => n,
        _ => usage(&format!("{flag} needs a whole number > 0")),
    }
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let mut opts = Options {
        mode: Mode::PerRequest,
        max_memory_bytes: 2048 << 20,
        timeout: Duration::from_secs(70), // longer than the longest `sleep` (60 s)
        module: String::new(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => {
                opts.mode = match args.next().as_deref() {
                    Some("per-request") => Mode::PerRequest,
                    Some("reuse") => Mode::Reuse,
                    _ => usage("--mode is per-request or reuse"),
                }
            }
            "--max-memory-mb" => opts.max_memory_bytes = (number(&arg, args.next()).min(4096) as usize) << 20,
            "--timeout-ms" => opts.timeout = Duration::from_millis(number(&arg, args.next())),
            "--compile" => {
                let (src, out) = match (args.next(), args.next()) {
                    (Some(s), Some(o)) => (s, o),
                    _ => usage("--compile needs MODULE.wasm and OUT.cwasm"),
                };
                std::process::exit(match compile(&src, &out) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("fnbench-wasm-host: {e:#}");
                        1
                    }
                });
            }
            other if other.starts_with('-') => usage(&format!("unknown option {other}")),
            other => opts.module = other.to_string(),
        }
    }
    if opts.module.is_empty() {
        usage("no module given");
    }
    opts
}

fn compile(src: &str, out: &str) -> wasmtime::Result<()> {
    let engine = engine()?;
    let bytes = std::fs::read(src).map_err(|e| wasmtime::format_err!("cannot read {src}: {e}"))?;
    let compiled = engine.precompile_module(&bytes)?;
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, compiled).and_then(|()| std::fs::rename(&tmp, out))?;
    Ok(())
}

fn main() {
    START.get_or_init(Instant::now);
    let opts = parse_args();
    let runtime = if opts.mode == Mode::Reuse { "rust-wasm-reuse" } else { "rust-wasm" };
    let ready = (|| -> wasmtime::Result<Host> {
        let engine = engine()?;
        let module = load_module(&engine, &opts.module)?;
        let pre = linker(&engine, &module)?.instantiate_pre(&module)?;
        Ok(Host { runtime, opts, engine, pre, idle: Mutex::new(Vec::new()) })
    })();
    let host = match ready {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("fnbench-wasm-host: {e:#}");
            std::process::exit(1);
        }
    };
    // The epoch clock that bounds every request (a tick every 10 ms).
    let ticker = host.engine.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        ticker.increment_epoch();
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(serve_http(host)) {
        eprintln!("fatal: {e}");
        std::process::exit(1);
    }
}
