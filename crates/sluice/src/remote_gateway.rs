//! `sluice gateway`: a data-plane-only process in front of a `sluice control` (R8.3). It follows
//! the routing table with a long-poll that carries the version it has, reports its traffic every
//! second (at once when a request waits for a worker, so a cold start is not delayed), forwards
//! `/v2` (the queue API) to the control plane, and keeps serving from its last table while the
//! control plane is away.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sluice_core::routing::RouteTable;
use sluice_gateway::{Gateway, GatewayConfig, body::BoxBody};
use tokio::sync::Notify;

pub struct RemoteGatewayConfig {
    /// The control processes' API URLs, comma-separated: any of them answers (standbys forward to
    /// the leader); the gateway moves to the next when one is unreachable.
    pub control: String,
    pub key: String,
    pub listen: SocketAddr,
    pub domain: String,
    pub id: String,
    /// Where to serve this gateway's own `/metrics` (none: not served).
    pub metrics: Option<SocketAddr>,
}

/// The control processes a gateway may talk to, and which one it uses now.
struct Controls {
    urls: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
}

impl Controls {
    fn parse(list: &str) -> anyhow::Result<Controls> {
        let urls: Vec<String> =
            list.split(',').map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty()).collect();
        anyhow::ensure!(!urls.is_empty(), "--control needs at least one URL");
        for u in &urls {
            anyhow::ensure!(
                u.starts_with("http://") && u.parse::<http::Uri>().is_ok(),
                "--control: {u:?} is not a URL like http://10.0.0.5:8081"
            );
        }
        Ok(Controls { urls, current: Default::default() })
    }

    fn url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    /// `url` did not answer: use the next one (unless another task already moved on).
    fn failed(&self, url: &str) {
        let i = self.current.load(Ordering::Relaxed);
        if self.urls[i % self.urls.len()] == url {
            let _ = self.current.compare_exchange(i, i + 1, Ordering::Relaxed, Ordering::Relaxed);
            if self.urls.len() > 1 {
                tracing::warn!(from = url, to = self.url(), "control process unreachable; switching");
            }
        }
    }
}

pub async fn run(cfg: RemoteGatewayConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let controls = Arc::new(Controls::parse(&cfg.control)?);
    let control = controls.urls.join(",");
    let report_now = Arc::new(Notify::new());
    let gateway = Gateway::new(
        GatewayConfig { domain: cfg.domain.clone(), ..GatewayConfig::default() },
        Arc::new({
            let r = report_now.clone();
            move |_: &sluice_core::EndpointId| r.notify_one()
        }),
    );
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(conn.clone());
    let connected = Arc::new(AtomicBool::new(false));
    // Unix ms of the last answer from the control plane.
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));

    // /v2 goes to the control plane as it came (the queue lives in the shared store).
    let forward: Client<HttpConnector, BoxBody> = Client::builder(TokioExecutor::new()).build(conn);
    gateway.set_side_service(Arc::new({
        let controls = controls.clone();
        move |req| {
            let (forward, controls) = (forward.clone(), controls.clone());
            Box::pin(async move {
                let (mut parts, body) = req.into_parts();
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let control = controls.url().to_owned();
                parts.uri = format!("{control}{pq}").parse().unwrap_or_default();
                parts.headers.remove(header::HOST);
                let req = Request::from_parts(parts, body.map_err(sluice_gateway::body::BoxError::from).boxed_unsync());
                match forward.request(req).await {
                    Ok(resp) => resp.map(|b| b.map_err(sluice_gateway::body::BoxError::from).boxed_unsync()),
                    // No control process answered (a change of leader, a restart): 503 with
                    // Retry-After, which clients retry; the next call tries the next URL.
                    Err(e) => {
                        controls.failed(&control);
                        http::Response::builder()
                            .status(http::StatusCode::SERVICE_UNAVAILABLE)
                            .header(header::RETRY_AFTER, "1")
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(
                                Full::new(Bytes::from(
                                    serde_json::json!({"error": format!("the control plane is unreachable: {e}")})
                                        .to_string(),
                                ))
                                .map_err(|never| match never {})
                                .boxed_unsync(),
                            )
                            .unwrap_or_default()
                    }
                }
            })
        }
    }));

    let call = {
        let (client, key) = (client.clone(), cfg.key.clone());
        move |method: Method, url: String, body: Option<Vec<u8>>| {
            let (client, key) = (client.clone(), key.clone());
            async move {
                let mut req =
                    Request::builder().method(method).uri(url).header(header::AUTHORIZATION, format!("Bearer {key}"));
                if body.is_some() {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                }
                let resp = client.request(req.body(Full::new(Bytes::from(body.unwrap_or_default())))?).await?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await?.to_bytes();
                anyhow::ensure!(status.is_success(), "HTTP {status}: {}", String::from_utf8_lossy(&bytes));
                Ok::<_, anyhow::Error>(bytes)
            }
        }
    };

    // Follow the routing table.
    let follow = tokio::spawn({
        let (gateway, controls, connected, call, heard) =
            (gateway.clone(), controls.clone(), connected.clone(), call.clone(), heard.clone());
        async move {
            let mut version = 0u64;
            loop {
                let control = controls.url().to_owned();
                let url = format!("{control}/v1/internal/routes?after={version}");
                let got = tokio::time::timeout(Duration::from_secs(40), call(Method::GET, url, None)).await;
                match got
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
                    .and_then(|b| Ok(serde_json::from_slice::<RouteTable>(&b)?))
                {
                    Ok(table) => {
                        heard.store(unix_ms(), Ordering::Relaxed);
                        if !connected.swap(true, Ordering::Relaxed) {
                            tracing::info!(control = %control, "following the control plane's routing table");
                        }
                        if table.version != version {
                            version = table.version;
                            gateway.publish(table);
                        }
                    }
                    Err(e) => {
                        if connected.swap(false, Ordering::Relaxed) || version == 0 {
                            tracing::warn!(error = %e, "control plane unreachable; serving from the last routing table");
                        }
                        controls.failed(&control);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    });
    // Report traffic every second, and at once when a request waits for a worker.
    let report = tokio::spawn({
        let (gateway, controls, id, report_now, heard, connected) =
            (gateway.clone(), controls.clone(), cfg.id.clone(), report_now.clone(), heard.clone(), connected.clone());
        async move {
            loop {
                let body =
                    serde_json::json!({ "gateway": id, "traffic": gateway.traffic(), "figures": gateway.figures() })
                        .to_string()
                        .into_bytes();
                let control = controls.url().to_owned();
                match call(Method::POST, format!("{control}/v1/internal/traffic"), Some(body)).await {
                    Ok(_) => {
                        heard.store(unix_ms(), Ordering::Relaxed);
                        connected.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        connected.store(false, Ordering::Relaxed);
                        controls.failed(&control);
                        tracing::debug!(error = %e, "traffic report failed");
                    }
                }
                tokio::select! {
                    () = report_now.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    });

    // This gateway's own /metrics: its figures, and whether it reaches the control plane.
    if let Some(addr) = cfg.metrics {
        let (gateway, connected, heard) = (gateway.clone(), connected.clone(), heard.clone());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (gateway, connected, heard) = (gateway.clone(), connected.clone(), heard.clone());
                async move {
                    let last = heard.load(Ordering::Relaxed);
                    let age = if last == 0 { 0.0 } else { unix_ms().saturating_sub(last) as f64 / 1000.0 };
                    let body = sluice_control::metrics::encode_gateway(
                        &gateway.figures(),
                        connected.load(Ordering::Relaxed),
                        age,
                    );
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                }
            }),
        );
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the gateway's metrics listener to {addr}"))?;
        tokio::spawn(async move { axum::serve(l, app).await });
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the gateway to {} (port 0 picks a free one)", cfg.listen))?;
    println!("Sluice gateway {} on http://{}, following {control}", cfg.id, listener.local_addr()?);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    gateway.serve(listener, shutdown).await;
    follow.abort();
    report.abort();
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
