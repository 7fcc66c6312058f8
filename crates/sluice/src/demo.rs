//! `sluice demo-worker`: the small worker that ships with the platform. It serves the demo
//! endpoint of `sluice up` and the tests: health, echo, sleep, server-sent events, WebSocket
//! echo, a crash switch and a simulated model-loading delay. Started as a pull worker of a queue
//! endpoint (`RUNPOD_WEBHOOK_GET_JOB` set), it also takes jobs with RunPod's worker protocol and
//! answers each with `{"echo": input}` (after `input.sleep_ms`, if given; `DEMO_PULL_TASKS` polls
//! at a time, default 8), and pings every `RUNPOD_PING_INTERVAL` ms with the jobs it holds, as
//! RunPod's SDK does. `POST /_demo/job` takes a pushed job (`{"id", "input"}`) the same way.
//! `DEMO_LOG_REQUESTS=1` prints a line per request and per job started.
//!
//! Sleep mode, as vLLM's (issue 17): `POST /sleep?level=1` puts the "engine" to sleep (after
//! `DEMO_SLEEP_DELAY_MS`, default 100), `POST /wake_up` wakes it (after `DEMO_WAKE_DELAY_MS`,
//! default 300: the honest model of a wake, against the startup delay of a cold start). Asleep,
//! it answers its health check but refuses every request with 503. `DEMO_SLEEP_FAIL=1` and
//! `DEMO_WAKE_FAIL=1` make those calls fail (500), for the tests. (`/sleep?ms=N` stays the
//! request that takes N ms.)
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Query, State, WebSocketUpgrade, ws::Message},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde::Deserialize;

#[derive(Default)]
struct Demo {
    unhealthy: AtomicBool,
    /// Asleep (sleep mode): requests are refused until woken.
    asleep: AtomicBool,
    /// Unix ms when the worker process began and when it started listening: its own startup
    /// time, which the cold-start benchmark subtracts from what the platform adds.
    started_ms: u64,
    listening_ms: u64,
    /// The model files it read at startup (`SLUICE_MODEL_PATHS`): (files, bytes, sha256 of each).
    loaded: Loaded,
}

#[derive(Default, serde::Serialize)]
struct Loaded {
    files: u64,
    bytes: u64,
    /// Relative path (under its model's folder) → sha256, in hex.
    sha256: std::collections::BTreeMap<String, String>,
}

/// Reads every file of the models it was given (`SLUICE_MODEL_PATHS`: folders or files,
/// `:`-separated), hashing each as an engine's loader reads its weights.
fn load_models() -> anyhow::Result<Loaded> {
    use std::io::Read;
    let mut out = Loaded::default();
    let Ok(paths) = std::env::var("SLUICE_MODEL_PATHS") else { return Ok(out) };
    let mut todo: Vec<(std::path::PathBuf, String)> =
        paths.split(':').filter(|p| !p.is_empty()).map(|p| (p.into(), String::new())).collect();
    let mut buf = vec![0u8; 1 << 20];
    while let Some((p, rel)) = todo.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                todo.push((e.path(), if rel.is_empty() { name } else { format!("{rel}/{name}") }));
            }
            continue;
        }
        let mut f = std::fs::File::open(&p)?;
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.bytes += n as u64;
        }
        out.files += 1;
        let name = if rel.is_empty() {
            p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            rel
        };
        out.sha256.insert(name, h.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(out)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

type S = State<Arc<Demo>>;

pub async fn run(
    host: std::net::IpAddr,
    port: u16,
    startup_delay_ms: u64,
    engine: crate::demo_engine::EngineArgs,
) -> anyhow::Result<()> {
    let started_ms = unix_ms();
    if startup_delay_ms > 0 {
        eprintln!("demo-worker: loading model for {startup_delay_ms} ms");
        tokio::time::sleep(Duration::from_millis(startup_delay_ms)).await;
    }
    let loaded = tokio::task::spawn_blocking(load_models).await??;
    if loaded.files > 0 {
        eprintln!("demo-worker: loaded {} model files, {} bytes", loaded.files, loaded.bytes);
    }
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let state = Arc::new(Demo { started_ms, listening_ms: unix_ms(), loaded, ..Default::default() });
    let app = Router::new()
        .route("/health", get(health))
        .route("/sleep", any(sleep))
        .route("/wake_up", post(wake_up))
        .route("/stream", get(stream))
        .route("/ws", get(ws))
        .route("/_demo/unhealthy", post(set_unhealthy))
        .route("/_demo/crash", post(crash))
        .route("/_demo/boot", get(boot))
        .route("/_demo/models", get(models))
        .route("/_demo/job", post(pushed_job))
        .merge(
            // The OpenAI mode: an LLM engine's behaviour (see demo_engine).
            Router::new()
                .route("/v1/chat/completions", post(crate::demo_engine::chat))
                .route("/v1/completions", post(crate::demo_engine::completions))
                .route("/v1/models", get(crate::demo_engine::models))
                .route("/metrics", get(crate::demo_engine::metrics))
                .with_state(crate::demo_engine::Engine::new(engine)),
        )
        .fallback(echo)
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_while_asleep))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    eprintln!("demo-worker: listening on {host}:{port}");
    if let Ok(take) = std::env::var("RUNPOD_WEBHOOK_GET_JOB") {
        let tasks = std::env::var("DEMO_PULL_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(8usize);
        eprintln!("demo-worker: taking jobs with {tasks} polls");
        let held: Held = Arc::default();
        for _ in 0..tasks {
            tokio::spawn(pull_loop(take.clone(), held.clone()));
        }
        tokio::spawn(ping_loop(held));
    }
    // Small streamed chunks (tokens) go out at once, as uvicorn (vLLM's server) sends them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            term.recv().await;
            eprintln!("demo-worker: SIGTERM, finishing in-flight requests");
        })
        .await?;
    Ok(())
}

/// The jobs a pull worker holds, from its take until its report was answered (or dropped).
type Held = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// What a job's input asks of the demo worker: how long to work on it.
fn job_sleep(input: &serde_json::Value) -> Duration {
    Duration::from_millis(input.get("sleep_ms").and_then(serde_json::Value::as_u64).unwrap_or(0).min(3_600_000))
}

/// `POST /_demo/job`: a pushed job (for push endpoints whose `job_path` is `/_demo/job`).
async fn pushed_job(Json(job): Json<serde_json::Value>) -> Json<serde_json::Value> {
    if log_requests() {
        println!("job {} started", job["id"].as_str().unwrap_or("?"));
    }
    tokio::time::sleep(job_sleep(&job["input"])).await;
    Json(serde_json::json!({ "echo": job["input"], "worker": worker_id() }))
}

/// The heartbeat: every `RUNPOD_PING_INTERVAL` ms, the jobs held (the platform settles jobs a
/// worker no longer lists).
async fn ping_loop(held: Held) {
    use http_body_util::{BodyExt, Empty};
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let url = env("RUNPOD_WEBHOOK_PING").replace("$RUNPOD_POD_ID", &env("RUNPOD_POD_ID"));
    let every = env("RUNPOD_PING_INTERVAL").parse().unwrap_or(10_000u64);
    let token = env("RUNPOD_AI_API_KEY");
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    loop {
        let ids: Vec<String> = held.lock().unwrap().iter().cloned().collect();
        // Like RunPod's SDK: the protocol version, so the platform knows the list is complete.
        let uri = format!("{url}&job_id={}&runpod_version=sluice-demo", ids.join(","));
        if let Ok(req) = axum::http::Request::get(uri).header(header::AUTHORIZATION, &token).body(Empty::new())
            && let Ok(resp) = client.request(req).await
        {
            let _ = resp.into_body().collect().await;
        }
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

/// One poll at a time: take a job, answer `{"echo": input}`. Errors back off for a second; a
/// result that cannot be delivered is dropped, as RunPod's SDK does.
async fn pull_loop(take: String, held: Held) {
    use http_body_util::{BodyExt, Full};
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let me = env("RUNPOD_POD_ID");
    let token = env("RUNPOD_AI_API_KEY");
    let take = format!("{}&job_in_progress=0", take.replace("$ID", &me));
    let done = env("RUNPOD_WEBHOOK_POST_OUTPUT").replace("$RUNPOD_POD_ID", &me);
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let call = async |method: Method, url: String, body: Bytes| -> anyhow::Result<(StatusCode, Bytes)> {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, &token)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(body))?;
        let resp = client.request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    };
    loop {
        let job = match call(Method::GET, take.clone(), Bytes::new()).await {
            Ok((StatusCode::OK, b)) => serde_json::from_slice::<serde_json::Value>(&b).ok(),
            Ok((StatusCode::NO_CONTENT, _)) => None,
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        };
        let Some(job) = job else { continue };
        let Some(id) = job["id"].as_str() else { continue };
        held.lock().unwrap().insert(id.to_owned());
        if log_requests() {
            println!("job {id} started");
        }
        tokio::time::sleep(job_sleep(&job["input"])).await;
        let out = serde_json::json!({ "output": { "echo": job["input"] } }).to_string();
        let url = format!("{}&isStream=false", done.replace("$ID", id));
        let sent = call(Method::POST, url, Bytes::from(out)).await;
        held.lock().unwrap().remove(id);
        if sent.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn boot(State(d): S) -> Json<serde_json::Value> {
    Json(serde_json::json!({"started_ms": d.started_ms, "listening_ms": d.listening_ms, "now_ms": unix_ms()}))
}

async fn models(State(d): S) -> Json<serde_json::Value> {
    Json(serde_json::json!(d.loaded))
}

async fn health(State(d): S) -> impl IntoResponse {
    if d.unhealthy.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn set_unhealthy(State(d): S) -> &'static str {
    d.unhealthy.store(true, Ordering::Relaxed);
    "health check will now fail"
}

async fn crash() -> &'static str {
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        eprintln!("demo-worker: crashing on request");
        std::process::exit(17);
    });
    "crashing"
}

#[derive(Deserialize)]
struct SleepQ {
    ms: Option<u64>,
    level: Option<u32>,
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "true")
}

/// Asleep, everything but the health check and the sleep-mode calls is refused.
async fn refuse_while_asleep(State(d): S, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let p = req.uri().path();
    let control = p == "/health"
        || p == "/wake_up"
        || p.starts_with("/_demo/")
        || (p == "/sleep" && !req.uri().query().is_some_and(|q| q.contains("ms=")));
    if d.asleep.load(Ordering::Relaxed) && !control {
        return (StatusCode::SERVICE_UNAVAILABLE, "asleep: POST /wake_up first").into_response();
    }
    next.run(req).await
}

/// Sleep mode: the engine sleeps (its weights offloaded, in a real one).
async fn engine_sleep(d: &Demo, level: u32) -> Response {
    tokio::time::sleep(env_ms("DEMO_SLEEP_DELAY_MS", 100)).await;
    if env_flag("DEMO_SLEEP_FAIL") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "sleep failed (DEMO_SLEEP_FAIL)").into_response();
    }
    d.asleep.store(true, Ordering::Relaxed);
    eprintln!("demo-worker: asleep (level {level})");
    Json(serde_json::json!({"asleep": true, "level": level})).into_response()
}

async fn wake_up(State(d): S) -> Response {
    let took = env_ms("DEMO_WAKE_DELAY_MS", 300);
    tokio::time::sleep(took).await;
    if env_flag("DEMO_WAKE_FAIL") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "wake failed (DEMO_WAKE_FAIL)").into_response();
    }
    d.asleep.store(false, Ordering::Relaxed);
    eprintln!("demo-worker: awake");
    Json(serde_json::json!({"asleep": false, "took_ms": took.as_millis() as u64})).into_response()
}

async fn sleep(State(d): S, method: Method, Query(q): Query<SleepQ>) -> Response {
    // `POST /sleep` without `ms` is sleep mode; with `ms`, a request that takes that long.
    if method == Method::POST && q.ms.is_none() {
        return engine_sleep(&d, q.level.unwrap_or(1)).await;
    }
    delay(q).await.into_response()
}

async fn delay(q: SleepQ) -> Json<serde_json::Value> {
    let ms = q.ms.unwrap_or(100).min(3_600_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(serde_json::json!({ "slept_ms": ms, "worker": worker_id() }))
}

#[derive(Deserialize)]
struct StreamQ {
    n: Option<u32>,
    interval_ms: Option<u64>,
}

/// Server-sent events, one per interval, written as they happen.
async fn stream(Query(q): Query<StreamQ>) -> Response {
    let n = q.n.unwrap_or(5).min(100_000);
    let every = Duration::from_millis(q.interval_ms.unwrap_or(100).min(60_000));
    let s = futures_util::stream::unfold(0u32, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(format!("id: {i}\ndata: token {i}\n\n"))), i + 1))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(s))
        .expect("static response")
}

async fn ws(up: WebSocketUpgrade) -> Response {
    up.on_upgrade(|mut socket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

fn worker_id() -> String {
    std::env::var("SLUICE_WORKER_ID").unwrap_or_default()
}

/// Echoes the request: method, path, query, headers, body, and what the worker was given.
/// `DEMO_LOG_REQUESTS=1`: print a line per request (output for the log pipeline to carry).
fn log_requests() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEMO_LOG_REQUESTS").is_ok_and(|v| v == "1"))
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<serde_json::Value> {
    if log_requests() {
        println!("{method} {} {} bytes", uri.path(), body.len());
    }
    let headers: BTreeMap<String, String> =
        headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_bytes": body.len(),
        "cuda_visible_devices": std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        "worker": worker_id(),
        "pid": std::process::id(),
        "volume_dir": std::env::var("SLUICE_VOLUME_DIR").ok(),
        // What the start command or the endpoint passed on for tests and demos.
        "demo_env": std::env::vars().filter(|(k, _)| k.starts_with("DEMO_")).collect::<BTreeMap<_, _>>(),
    }))
}
