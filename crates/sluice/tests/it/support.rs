//! Shared fixtures: start the real `sluice` binary on ephemeral ports with a temporary data
//! directory, talk to its API and gateway over loopback, wait for conditions without sleeps
//! of guessed length.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use sluice::client::ApiClient;
use tempfile::TempDir;
use tokio::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The Python with RunPod's SDK (PyPI `runpod`) that `scripts/python.sh` installs; the RunPod
/// tests need it and fail (never skip) without it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("SLUICE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python"));
    assert!(p.exists(), "{} is missing: run `bash scripts/python.sh` (scripts/test.sh does)", p.display());
    p
}

/// A script of `crates/sluice/tests/py`.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// The start command of a worker built on RunPod's SDK (`tests/py/worker.py`).
pub fn sdk_worker_cmd() -> String {
    format!("exec '{}' '{}'", python().display(), py_script("worker.py").display())
}

/// The image of a RunPod SDK worker (`tests/py/worker.py`) that `scripts/sdk-image.sh` builds.
pub fn sdk_image() -> String {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/sdk-image");
    let tag = std::fs::read_to_string(&f).unwrap_or_default().trim().to_owned();
    assert!(!tag.is_empty(), "{} is missing: run `bash scripts/sdk-image.sh` (scripts/test.sh does)", f.display());
    tag
}

/// The start command of a demo worker (optionally with a simulated model-loading delay).
pub fn demo_cmd() -> String {
    format!("exec '{BIN}' demo-worker")
}

pub struct Platform {
    child: Option<Child>,
    pub dir: TempDir,
    pub api: String,
    pub gateway: String,
    pub key: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Platform {
    pub async fn start() -> Platform {
        Platform::start_in(tempfile::tempdir().expect("tempdir"), &["--no-demo"]).await
    }

    /// Starts `sluice up` on `dir` (which may hold a previous run's state).
    pub async fn start_in(dir: TempDir, extra: &[&str]) -> Platform {
        let data = dir.path().join("data");
        let _ = std::fs::remove_file(data.join("addresses.json"));
        let log = |name: &str| {
            std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join(name)).expect("log file")
        };
        let child = Command::new(BIN)
            .args(["up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(extra)
            .env("RUST_LOG", "info,sluice_gateway=debug")
            .stdin(Stdio::null())
            .stdout(log("platform.out"))
            .stderr(log("platform.err"))
            .spawn()
            .expect("spawn sluice up");
        let mut p =
            Platform { child: Some(child), dir, api: String::new(), gateway: String::new(), key: String::new() };
        let addrs: Value = eventually("addresses.json", Duration::from_secs(30), async || {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("sluice up exited with {status}:\n{}", p.stderr());
            }
            serde_json::from_slice(&std::fs::read(data.join("addresses.json")).ok()?).ok()
        })
        .await;
        p.api = addrs["api"].as_str().unwrap().to_owned();
        p.gateway = addrs["gateway"].as_str().unwrap().to_owned();
        p.key = std::fs::read_to_string(data.join("admin.key")).unwrap().trim().to_owned();
        p
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("platform.out")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("platform.err")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.api, Some(self.key.clone()))
    }

    pub fn gateway_port(&self) -> u16 {
        self.gateway.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Raw call to the control API with the admin key.
    pub async fn api_call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.api_as(&self.key, method, path, body).await
    }

    /// Raw call to the control API with `key` (another account's).
    pub async fn api_as(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut h = vec![("authorization".to_owned(), format!("Bearer {key}"))];
        let body = body.map(|b| {
            h.push(("content-type".into(), "application/json".into()));
            Bytes::from(b.to_string())
        });
        send(method, &format!("{}{path}", self.api), &h, body.unwrap_or_default()).await
    }

    /// Creates an endpoint through the API; panics on an error answer.
    /// Creates an endpoint as the admin. Tests reach endpoints through the gateway without a
    /// key, so `public` defaults to true here; the accounts tests set it to false.
    pub async fn create(&self, mut body: Value) -> Value {
        if body.get("public").is_none() {
            body["public"] = Value::Bool(true);
        }
        let r = self.api_call(Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// A demo-worker endpoint with `extra` fields merged in.
    pub async fn create_demo(&self, name: &str, extra: Value) -> String {
        let mut body = json!({ "name": name, "start_command": demo_cmd(), "startup_timeout_secs": 30 });
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        self.create(body).await["id"].as_str().unwrap().to_owned()
    }

    pub async fn workers(&self, id: &str) -> Vec<Value> {
        let r = self.api_call(Method::GET, &format!("/v1/endpoints/{id}/workers"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["workers"].as_array().unwrap().clone()
    }

    pub async fn workers_in(&self, id: &str, state: &str) -> Vec<Value> {
        self.workers(id).await.into_iter().filter(|w| w["state"] == state).collect()
    }

    /// Waits until the endpoint has exactly `n` ready workers and returns them.
    pub async fn wait_ready(&self, id: &str, n: usize) -> Vec<Value> {
        eventually(&format!("{n} ready workers of {id}"), Duration::from_secs(30), || async {
            let ready = self.workers_in(id, "ready").await;
            (ready.len() == n).then_some(ready)
        })
        .await
    }

    /// GET through the gateway in path form.
    pub async fn get(&self, id: &str, path: &str) -> Resp {
        send(Method::GET, &format!("{}/e/{id}{path}", self.gateway), &[], Bytes::new()).await
    }

    /// Stops the platform with SIGINT, waits for it, and checks it logged no ERROR line.
    pub fn stop(mut self) -> TempDir {
        let status = self.interrupt();
        assert!(status.is_some_and(|s| s.success()), "sluice up did not exit cleanly: {status:?}\n{}", self.stderr());
        let err = self.stderr();
        let bad: Vec<&str> = err.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(bad.is_empty(), "unexpected ERROR lines:\n{}", bad.join("\n"));
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// The platform's exit status, once it exits within `within`.
    pub fn exit_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut()?.try_wait().ok()? {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILLs the platform (its workers keep running) and returns its directory.
    pub fn kill9(mut self) -> TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok();
        None
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// Sends one HTTP/1.1 request and reads the whole answer.
pub async fn send(method: Method, url: &str, headers: &[(String, String)], body: Bytes) -> Resp {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = client.request(req.body(Full::new(body)).unwrap()).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp { status, headers, body }
}

pub async fn get_with_host(url: &str, host: &str) -> Resp {
    send(Method::GET, url, &[(header::HOST.to_string(), host.to_owned())], Bytes::new()).await
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process is alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().and_then(|r| r.trim_start().chars().next()).is_some_and(|st| st != 'Z'),
        Err(_) => false,
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs the CLI against a platform; returns (success, stdout, stderr).
pub fn cli(p: &Platform, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        // Progress is for terminals; the tests read it from a pipe.
        .env("SLUICE_PROGRESS", "always")
        .env("SLUICE_API", &p.api)
        .env("SLUICE_API_KEY", &p.key)
        .env_remove("SLUICE_DATA_DIR")
        .output()
        .expect("run sluice cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A webhook receiver on loopback: the bodies of the POSTs it got.
pub async fn webhook_sink() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            // Read until the JSON body's closing brace arrived.
            while let Ok(k) = s.read(&mut buf[n..]).await {
                n += k;
                if k == 0 || String::from_utf8_lossy(&buf[..n]).trim_end().ends_with('}') {
                    break;
                }
            }
            g.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        }
    });
    (url, got)
}

/// A `/v2` call through the gateway with the admin key.
pub async fn v2_call(p: &Platform, method: Method, path: &str, body: Option<Value>) -> Resp {
    let h = vec![("authorization".to_owned(), format!("Bearer {}", p.key))];
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(method, &format!("{}/v2{path}", p.gateway), &h, bytes).await
}

/// How many times each job was started, from the `job ID started` lines its workers printed
/// (the demo worker with `DEMO_LOG_REQUESTS=1`, `tests/py/worker.py` always).
pub fn job_starts(data_dir: &Path, endpoint: &str) -> std::collections::HashMap<String, usize> {
    let mut n = std::collections::HashMap::new();
    for f in std::fs::read_dir(data_dir.join("logs").join(endpoint)).into_iter().flatten().flatten() {
        for line in read(&f.path()).lines() {
            if let Some(id) = line.split("job ").nth(1).and_then(|r| r.strip_suffix(" started")) {
                *n.entry(id.trim().to_owned()).or_insert(0) += 1;
            }
        }
    }
    n
}

/// The crash test of queue endpoints (both deliveries): `n` jobs of `input` go to the queue
/// endpoint (whose two workers each run several at a time), the platform is killed -9 while jobs
/// run (after `done_first` completed), stays down `down` (the workers finish what they hold and
/// cannot deliver it), and comes back on the same data directory and gateway address with
/// `args`. Every job must end COMPLETED within `bound` of the restart and none may stay
/// IN_PROGRESS.
pub struct Crash<'a> {
    pub n: usize,
    pub input: Value,
    pub done_first: u64,
    pub down: Duration,
    pub args: &'a [&'a str],
    pub bound: Duration,
}

/// Runs a [`Crash`] on endpoint `ep`; returns the platform, the job ids, and how long after the
/// restart the last job completed.
pub async fn crash_with_jobs_in_flight(p: Platform, ep: &str, c: Crash<'_>) -> (Platform, Vec<String>, Duration) {
    let Crash { n, input, done_first, down, args, bound } = c;
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let mut inp = input.clone();
        inp["i"] = json!(i);
        let r = v2_call(&p, Method::POST, &format!("/{ep}/run"), Some(json!({ "input": inp }))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        jobs.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let health = async |p: &Platform| v2_call(p, Method::GET, &format!("/{ep}/health"), None).await.json();
    let before = eventually("jobs running and some done", Duration::from_secs(60), async || {
        let h = health(&p).await;
        let (done, running) = (h["jobs"]["completed"].as_u64()?, h["jobs"]["inProgress"].as_u64()?);
        (done >= done_first && running > 0).then_some(h)
    })
    .await;
    let gateway_addr = p.gateway.trim_start_matches("http://").to_owned();
    let dir = p.kill9();
    eprintln!("killed -9 with {before}");
    tokio::time::sleep(down).await;
    let mut restart_args = args.to_vec();
    restart_args.extend(["--gateway-addr", &gateway_addr]);
    let restarted = Instant::now();
    let p = Platform::start_in(dir, &restart_args).await;
    let settled = eventually("every job COMPLETED after the restart", bound, async || {
        let h = health(&p).await;
        let j = &h["jobs"];
        (j["completed"].as_u64()? == n as u64 && j["inProgress"] == 0 && j["inQueue"] == 0).then(|| restarted.elapsed())
    })
    .await;
    for job in &jobs {
        let s = v2_call(&p, Method::GET, &format!("/{ep}/status/{job}"), None).await.json();
        assert_eq!(s["status"], "COMPLETED", "{s}");
    }
    (p, jobs, settled)
}

/// `n` concurrent `GET /sleep?ms=MS` through the gateway's path form; each yields its status.
pub fn sleep_reqs(p: &Platform, id: &str, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<StatusCode>> {
    (0..n)
        .map(|_| {
            let url = format!("{}/e/{id}/sleep?ms={ms}", p.gateway);
            tokio::spawn(async move { send(Method::GET, &url, &[], Bytes::new()).await.status })
        })
        .collect()
}

/// Processes whose stdout is a file under `dir` (a platform's workers log into its data directory).
pub fn processes_writing_into(dir: &std::path::Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|l| l.starts_with(dir)))
        .collect()
}
