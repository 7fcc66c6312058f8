//! An open-loop load generator for `bench/tls.sh` (issue 16): requests are sent on a fixed
//! schedule (`--rate` per second, spread over `--conns` keep-alive connections), whatever the
//! answers do, and each latency is measured from the request's *scheduled* time, so a server
//! that falls behind shows its queueing (no coordinated omission, unlike a closed loop with
//! think time). `--new-conn` instead measures new connections per second: `--conns` clients
//! each open a connection (a full TLS handshake: no session resumption), send one request and
//! close it, for `--secs`. Prints one JSON line.
//!
//! `cargo bench --bench openloop -- URL [--rate N] [--secs N] [--conns N] [--ca FILE]
//!   [--header 'K: V'] [--new-conn]`
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

struct Args {
    url: http::Uri,
    rate: f64,
    secs: f64,
    conns: usize,
    ca: Option<std::path::PathBuf>,
    headers: Vec<(String, String)>,
    new_conn: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut a = Args {
        url: http::Uri::default(),
        rate: 1000.0,
        secs: 10.0,
        conns: 64,
        ca: None,
        headers: vec![],
        new_conn: false,
    };
    let mut url = None;
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--rate" => a.rate = val().parse().expect("--rate"),
            "--secs" => a.secs = val().parse().expect("--secs"),
            "--conns" => a.conns = val().parse().expect("--conns"),
            "--ca" => a.ca = Some(val().into()),
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').expect("--header 'K: V'");
                a.headers.push((k.trim().into(), v.trim().into()));
            }
            "--new-conn" => a.new_conn = true,
            u if !u.starts_with("--") => url = Some(u.parse().expect("a URL")),
            other => panic!("unknown option {other}"),
        }
    }
    a.url = url.expect("a URL");
    a
}

/// A connection's I/O, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

struct Target {
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    path: String,
    headers: Vec<(String, String)>,
}

impl Target {
    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(Box::new(c.connect(name, tcp).await?))
            }
        }
    }

    async fn sender(&self) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
        let io = self.connect().await.map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn request(&self, close: bool) -> http::Request<Empty<Bytes>> {
        let mut r = http::Request::get(self.path.as_str()).header("host", format!("{}:{}", self.host, self.port));
        for (k, v) in &self.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        if close {
            r = r.header("connection", "close");
        }
        r.body(Empty::new()).expect("a request")
    }
}

async fn send(s: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, req: http::Request<Empty<Bytes>>) -> bool {
    if s.ready().await.is_err() {
        return false;
    }
    match s.send_request(req).await {
        Ok(r) => {
            let ok = r.status().is_success();
            r.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a = args();
    let https = a.url.scheme_str() == Some("https");
    let tls = https.then(|| {
        let roots = sluice_tls::client::roots(a.ca.as_deref()).expect("--ca");
        let mut cfg = (*sluice_tls::client::config(roots)).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every new connection is a full handshake.
        cfg.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    });
    let target = Arc::new(Target {
        host: a.url.host().expect("a host").to_owned(),
        port: a.url.port_u16().unwrap_or(if https { 443 } else { 80 }),
        tls,
        path: a.url.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        headers: a.headers.clone(),
    });
    // One thread: the generator takes one core, as wrk -t1 would, leaving the rest to the server.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let line =
        rt.block_on(
            async move { if a.new_conn { new_connections(target, &a).await } else { open_loop(target, &a).await } },
        );
    println!("{line}");
}

/// `--new-conn`: connections per second, each one request.
async fn new_connections(target: Arc<Target>, a: &Args) -> String {
    let end = Instant::now() + Duration::from_secs_f64(a.secs);
    let mut tasks = Vec::new();
    for _ in 0..a.conns {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < end {
                let done = match t.sender().await {
                    Ok(mut s) => send(&mut s, t.request(true)).await,
                    Err(_) => false,
                };
                if done { ok += 1 } else { err += 1 }
            }
            (ok, err)
        }));
    }
    let start = Instant::now();
    let (mut ok, mut err) = (0, 0);
    for t in tasks {
        let (o, e) = t.await.expect("a client");
        ok += o;
        err += e;
    }
    let secs = start.elapsed().as_secs_f64().max(a.secs);
    format!(r#"{{"mode":"new-conn","ok":{ok},"errors":{err},"conns_per_sec":{:.1}}}"#, ok as f64 / secs)
}

/// The open loop: request k is due at start + k / rate, on connection k % conns.
async fn open_loop(target: Arc<Target>, a: &Args) -> String {
    let total = (a.rate * a.secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    // Connections first, so the schedule does not include connecting.
    let mut senders = Vec::new();
    for _ in 0..a.conns {
        senders.push(target.sender().await.expect("a connection"));
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        let (t, conns) = (target.clone(), a.conns);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / conns + 1);
            let mut errors = 0u64;
            let mut k = i;
            while k < total {
                let due = start + interval * k as u32;
                tokio::time::sleep_until(due).await;
                let ok = send(&mut s, t.request(false)).await;
                if ok {
                    lat.push(due.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                    if let Ok(n) = t.sender().await {
                        s = n;
                    }
                }
                k += conns;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("a connection task");
        all.extend(l);
        errors += e;
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_unstable();
    format!(
        r#"{{"mode":"open-loop","rate":{},"sent":{total},"ok":{},"errors":{errors},"achieved_rps":{:.1},"p50_ms":{:.3},"p90_ms":{:.3},"p99_ms":{:.3},"p999_ms":{:.3}}}"#,
        a.rate,
        all.len(),
        all.len() as f64 / took,
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99),
        percentile(&all, 0.999)
    )
}
