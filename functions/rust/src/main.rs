//! fnbench benchmark subject — Rust runtime. Implements functions/CONTRACT.md.
//!
//! One binary (`bootstrap`): Lambda mode when AWS_LAMBDA_RUNTIME_API is set,
//! otherwise an HTTP/1.1 server on $HOST:$PORT (default 127.0.0.1:8080; PORT=0: any free
//! port, reported on $FNBENCH_READY_FD).

mod workloads;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

pub const RUNTIME: &str = "rust";
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

static START: OnceLock<Instant> = OnceLock::new();
static INIT_MS: OnceLock<f64> = OnceLock::new();
static INSTANCE: OnceLock<String> = OnceLock::new();
static COLD: AtomicBool = AtomicBool::new(true);

fn instance_id() -> &'static str {
    INSTANCE.get_or_init(|| {
        use std::io::Read;
        let mut buf = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .is_ok();
        if !ok {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            buf = (nanos ^ ((std::process::id() as u64) << 32)).to_le_bytes();
        }
        buf.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn mark_ready() {
    let start = START.get().copied().unwrap_or_else(Instant::now);
    let _ = INIT_MS.set(start.elapsed().as_secs_f64() * 1000.0);
}

fn init_ms() -> f64 {
    INIT_MS.get().copied().unwrap_or(0.0)
}

/// Outcome of one invocation: the envelope (Ok) or a bad-request message (Err).
async fn invoke(
    workload: &str,
    params: Result<Value, String>,
    t0: Instant,
) -> Result<Value, String> {
    let cold = COLD.swap(false, Ordering::SeqCst);
    let run = async {
        let params = params?;
        let obj = match params {
            Value::Object(m) => m,
            _ => return Err("params must be a JSON object".to_string()),
        };
        workloads::run(workload, &obj).await
    };
    match run.await {
        Ok(result) => {
            let handler_ms = t0.elapsed().as_secs_f64() * 1000.0;
            Ok(json!({
                "runtime": RUNTIME,
                "workload": workload,
                "cold": cold,
                "instance": instance_id(),
                "init_ms": init_ms(),
                "handler_ms": handler_ms,
                "result": result,
            }))
        }
        Err(e) => Err(e),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("valid response")
}

fn error_response(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": msg, "runtime": RUNTIME, "instance": instance_id()}),
    )
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/health" {
        return Ok(if method == Method::GET || method == Method::HEAD {
            json_response(
                StatusCode::OK,
                &json!({"status": "ok", "runtime": RUNTIME, "instance": instance_id()}),
            )
        } else {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        });
    }
    if method != Method::POST {
        return Ok(if method == Method::GET {
            error_response(StatusCode::NOT_FOUND, "not found")
        } else {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        });
    }
    let workload = path.trim_start_matches('/').to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                } else {
                    error_response(StatusCode::BAD_REQUEST, "could not read request body")
                },
            )
        }
    };
    let t0 = Instant::now();
    let params = if body.iter().all(|b| b.is_ascii_whitespace()) {
        Ok(Value::Object(Map::new()))
    } else {
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("body is not valid JSON: {e}"))
    };
    Ok(match invoke(&workload, params, t0).await {
        Ok(env) => json_response(StatusCode::OK, &env),
        Err(msg) => error_response(StatusCode::BAD_REQUEST, &msg),
    })
}

/// CONTRACT.md §1: with $FNBENCH_READY_FD set, once listening, write the port and a newline to
/// that descriptor and close it (the parent learns the port of `PORT=0` and that we listen).
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

async fn serve_http() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;

    // SIGTERM / SIGINT: exit promptly (contract: within 1 s).
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
    mark_ready();
    report_port(listener.local_addr()?.port());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}

async fn serve_lambda() -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
    instance_id();
    mark_ready();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let t0 = Instant::now();
        let payload = event.payload;
        let workload = payload
            .get("workload")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let params = match payload.get("params") {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(p) => Ok(p.clone()),
        };
        let params = if payload.is_object() {
            params
        } else {
            Err("event must be a JSON object {\"workload\", \"params\"}".to_string())
        };
        invoke(&workload, params, t0)
            .await
            .map_err(|msg| Diagnostic {
                error_type: "BadRequest".to_string(),
                error_message: msg,
            })
    }))
    .await
}

fn main() {
    START.get_or_init(Instant::now);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        rt.block_on(serve_lambda())
    } else {
        rt.block_on(serve_http())
    };
    if let Err(e) = res {
        eprintln!("fatal: {e}");
        std::process::exit(1);
    }
}
