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

const NOT_AN_OBJECT: &str = "event must be a JSON object {\"workload\", \"params\"}";

/// A Lambda event's workload name and params (absent or null params: {}).
fn event_parts(payload: &Value) -> (String, Value) {
    let workload = payload
        .get("workload")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let params = match payload.get("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p) => p.clone(),
    };
    (workload, params)
}

async fn serve_lambda() -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
    instance_id();
    mark_ready();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let t0 = Instant::now();
        let payload = event.payload;
        let (workload, params) = event_parts(&payload);
        let params = if payload.is_object() {
            Ok(params)
        } else {
            Err(NOT_AN_OBJECT.to_string())
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

// ---------------------------------------------------------------- Lambda response streaming
//
// `_HANDLER=stream`: a small Runtime API client of its own instead of lambda_runtime's, whose
// streaming mode always sends the Function-URL metadata prelude before the body (AWS passes it on
// to InvokeWithResponseStream callers as payload) and writes a mid-stream error as data.  Here,
// as aws-lambda-ric does it: POST .../response with `Lambda-Runtime-Function-Response-Mode:
// streaming` and a chunked body, one HTTP chunk per `stream` chunk as it is produced; a failure
// after the first byte ends the body with the `Lambda-Runtime-Function-Error-Type` and
// `-Body` (base64 of the error document) trailers; a failure before it is POST .../error.
// Every other workload's envelope is streamed as one piece.

struct RuntimeApi {
    addr: String,
}

struct Head {
    status: u16,
    request_id: String,
    body: Vec<u8>,
}

impl RuntimeApi {
    async fn send(&self, head: &str, body: &[u8]) -> std::io::Result<tokio::net::TcpStream> {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(&self.addr).await?;
        conn.set_nodelay(true)?;
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        Ok(conn)
    }

    /// Reads one response (Content-Length framed, as the Runtime API sends them).
    async fn read(conn: &mut tokio::net::TcpStream) -> std::io::Result<Head> {
        use tokio::io::AsyncReadExt;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut buf = Vec::with_capacity(4096);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 64 * 1024 {
                return Err(bad("Runtime API response head over 64 KiB"));
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("Runtime API closed the connection"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut request_id) = (0usize, String::new());
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    length = v.trim().parse().map_err(|_| bad("bad Content-Length"))?;
                } else if k == "lambda-runtime-aws-request-id" {
                    request_id = v.trim().to_string();
                }
            }
        }
        if length > MAX_BODY_BYTES {
            return Err(bad("event over the body limit"));
        }
        let mut body = buf[end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = vec![0u8; (length - body.len()).min(65536)];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(bad("Runtime API closed the connection mid-body"));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Ok(Head { status, request_id, body })
    }

    async fn next(&self) -> std::io::Result<Head> {
        let head = format!(
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        );
        let mut conn = self.send(&head, b"").await?;
        Self::read(&mut conn).await
    }

    async fn error(&self, id: &str, msg: &str) -> std::io::Result<()> {
        let doc = serde_json::to_vec(&json!({"errorType": "BadRequest", "errorMessage": msg}))
            .unwrap_or_default();
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/error HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: BadRequest\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            doc.len()
        );
        let mut conn = self.send(&head, &doc).await?;
        Self::read(&mut conn).await.map(|_| ())
    }

    /// Opens the streamed response; the caller writes chunks, then `end`.
    async fn stream(&self, id: &str) -> std::io::Result<tokio::net::TcpStream> {
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n\
             Transfer-Encoding: chunked\r\n\
             Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n",
            self.addr
        );
        self.send(&head, b"").await
    }

    async fn chunk(conn: &mut tokio::net::TcpStream, data: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut piece = format!("{:x}\r\n", data.len()).into_bytes();
        piece.extend_from_slice(data);
        piece.extend_from_slice(b"\r\n");
        conn.write_all(&piece).await
    }

    async fn end(mut conn: tokio::net::TcpStream, failure: Option<&str>) -> std::io::Result<()> {
        use base64::Engine;
        use tokio::io::AsyncWriteExt;
        let mut tail = b"0\r\n".to_vec();
        if let Some(msg) = failure {
            let doc = serde_json::to_vec(&json!({"errorType": "BadRequest", "errorMessage": msg}))
                .unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD.encode(doc);
            tail.extend_from_slice(
                format!(
                    "Lambda-Runtime-Function-Error-Type: BadRequest\r\n\
                     Lambda-Runtime-Function-Error-Body: {b64}\r\n"
                )
                .as_bytes(),
            );
        }
        tail.extend_from_slice(b"\r\n");
        conn.write_all(&tail).await?;
        Self::read(&mut conn).await.map(|_| ())
    }
}

async fn serve_lambda_stream(addr: String) -> std::io::Result<()> {
    let api = RuntimeApi { addr };
    instance_id();
    mark_ready();
    loop {
        let event = api.next().await?;
        if event.status != 200 || event.request_id.is_empty() {
            return Err(std::io::Error::other(format!(
                "/invocation/next answered {}",
                event.status
            )));
        }
        let id = event.request_id;
        let t0 = Instant::now();
        let payload: Value = serde_json::from_slice(&event.body).unwrap_or(Value::Null);
        let (workload, params) = event_parts(&payload);
        if !payload.is_object() {
            api.error(&id, NOT_AN_OBJECT).await?;
            continue;
        }
        if workload == "stream" {
            COLD.store(false, Ordering::SeqCst);
            let spec = match params.as_object() {
                Some(p) => workloads::stream_spec(p),
                None => Err("params must be a JSON object".to_string()),
            };
            let spec = match spec {
                Ok(s) => s,
                Err(msg) => {
                    api.error(&id, &msg).await?;
                    continue;
                }
            };
            if spec.fail_after == Some(0) {
                api.error(&id, &workloads::stream_failed(0)).await?;
                continue;
            }
            let mut conn = api.stream(&id).await?;
            let mut failure = None;
            for i in 0..spec.chunks {
                if i > 0 && spec.delay_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(spec.delay_ms)).await;
                }
                if spec.fail_after == Some(i) {
                    failure = Some(workloads::stream_failed(i));
                    break;
                }
                RuntimeApi::chunk(&mut conn, &workloads::stream_chunk(i, spec.chunk_bytes)).await?;
            }
            RuntimeApi::end(conn, failure.as_deref()).await?;
            continue;
        }
        match invoke(&workload, Ok(params), t0).await {
            Ok(envelope) => {
                let bytes = serde_json::to_vec(&envelope).unwrap_or_default();
                let mut conn = api.stream(&id).await?;
                RuntimeApi::chunk(&mut conn, &bytes).await?;
                RuntimeApi::end(conn, None).await?;
            }
            Err(msg) => api.error(&id, &msg).await?,
        }
    }
}

fn main() {
    START.get_or_init(Instant::now);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = if let (Some(api), Ok("stream")) = (
        std::env::var_os("AWS_LAMBDA_RUNTIME_API"),
        std::env::var("_HANDLER").as_deref(),
    ) {
        rt.block_on(serve_lambda_stream(api.to_string_lossy().into_owned()))
            .map_err(|e| e.into())
    } else if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        rt.block_on(serve_lambda())
    } else {
        rt.block_on(serve_http())
    };
    if let Err(e) = res {
        eprintln!("fatal: {e}");
        std::process::exit(1);
    }
}
