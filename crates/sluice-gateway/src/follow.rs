//! A gateway in its own process, following a control plane (R8.3, `sluice gateway`): it
//! follows the routing table with a long-poll that carries the version it has (and gets the
//! changes since, or the whole table), reports its traffic every second (at once when a request
//! waits for a worker, so a cold start is not delayed), follows the TLS bundle (certificates
//! issued over ACME and pending challenges) the same way, forwards `/v2` (the queue API, and
//! the API's host) to the control plane, and keeps serving from its last table while the
//! control plane is away. The control URLs may be `https://` (verified against the system's
//! roots and `--ca-cert`; nothing falls back to plain HTTP).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sluice_api::internal::{RoutesUpdate, TlsBundle, TrafficReport};
use tokio::sync::Notify;

use crate::{
    DemandFn, Gateway, SideService,
    body::{BoxBody, BoxError},
};

/// Why a gateway cannot follow the control plane it was given.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("--control needs at least one URL")]
    NoControl,
    #[error("--control: {0:?} is not a URL like http://10.0.0.5:8081 or https://control.example.com:8081")]
    BadUrl(String),
    #[error(
        "--control: {0:?} is plain HTTP off loopback, and the internal protocol carries the admin key and certificate keys: \
         use https:// (the control plane with --api-tls), or --allow-plain-control on a network you trust"
    )]
    PlainControl(String),
}

/// The control processes a gateway may talk to, and which one it uses now.
struct Controls {
    urls: Vec<String>,
    current: AtomicUsize,
}

impl Controls {
    fn parse(list: &str, allow_plain: bool) -> Result<Controls, FollowError> {
        let urls: Vec<String> =
            list.split(',').map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err(FollowError::NoControl);
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.parse::<http::Uri>().is_err())
        {
            return Err(FollowError::BadUrl(bad.clone()));
        }
        if !allow_plain
            && let Some(plain) =
                urls.iter().find(|u| u.starts_with("http://") && !sluice_core::pull::is_loopback_url(u))
        {
            return Err(FollowError::PlainControl(plain.clone()));
        }
        Ok(Controls { urls, current: AtomicUsize::new(0) })
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

/// What a following gateway knows of its control plane.
pub struct Follower {
    controls: Controls,
    key: String,
    id: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    forward: Client<HttpsConnector<HttpConnector>, BoxBody>,
    report_now: Notify,
    connected: AtomicBool,
    /// Unix ms of the last answer from the control plane (0: never).
    heard: AtomicU64,
}

impl Follower {
    /// `control`: the control processes' API URLs, comma-separated (any of them answers; the
    /// gateway moves to the next when one is unreachable). `key`: the admin key. `id`: this
    /// gateway's name in its reports. `tls`: what an `https://` control URL is verified with.
    /// `allow_plain`: accept an `http://` control URL off loopback.
    pub fn new(
        control: &str,
        key: String,
        id: String,
        tls: Arc<rustls::ClientConfig>,
        allow_plain: bool,
    ) -> Result<Arc<Follower>, FollowError> {
        let conn = sluice_tls::client::connector(tls, Duration::from_secs(2));
        Ok(Arc::new(Follower {
            controls: Controls::parse(control, allow_plain)?,
            key,
            id,
            client: Client::builder(TokioExecutor::new()).build(conn.clone()),
            forward: Client::builder(TokioExecutor::new()).build(conn),
            report_now: Notify::new(),
            connected: AtomicBool::new(false),
            heard: AtomicU64::new(0),
        }))
    }

    /// The control URLs, as given.
    pub fn controls(&self) -> String {
        self.controls.urls.join(",")
    }

    /// The gateway's demand callback: a request waiting for a worker is reported at once.
    pub fn demand_fn(self: &Arc<Self>) -> DemandFn {
        let me = self.clone();
        Arc::new(move |_| me.report_now.notify_one())
    }

    /// Whether the control plane answered the last call.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Seconds since the control plane last answered (0 before it ever did).
    pub fn table_age_secs(&self) -> f64 {
        let last = self.heard.load(Ordering::Relaxed);
        if last == 0 { 0.0 } else { crate::now_ms().saturating_sub(last) as f64 / 1000.0 }
    }

    fn heard(&self) {
        self.heard.store(crate::now_ms(), Ordering::Relaxed);
    }

    /// `/v2` goes to the control plane as it came (the queue lives in the shared store). With no
    /// control process answering (a change of leader, a restart): 503 with `Retry-After`, which
    /// clients retry; the next call tries the next URL.
    pub fn side_service(self: &Arc<Self>) -> SideService {
        let me = self.clone();
        Arc::new(move |req| {
            let me = me.clone();
            Box::pin(async move {
                let (mut parts, body) = req.into_parts();
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let control = me.controls.url().to_owned();
                parts.uri = format!("{control}{pq}").parse().unwrap_or_default();
                parts.headers.remove(header::HOST);
                let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
                match me.forward.request(req).await {
                    Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed_unsync()),
                    Err(e) => {
                        me.controls.failed(&control);
                        let body = sluice_api::v2::V2Error { error: format!("the control plane is unreachable: {e}") };
                        http::Response::builder()
                            .status(http::StatusCode::SERVICE_UNAVAILABLE)
                            .header(header::RETRY_AFTER, "1")
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(crate::body::full(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())))
                            .unwrap_or_default()
                    }
                }
            })
        })
    }

    async fn call(&self, method: Method, url: String, body: Option<Vec<u8>>) -> Result<Bytes, String> {
        let mut req =
            Request::builder().method(method).uri(url).header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        Ok(bytes)
    }

    /// Follows the routing table into `gateway`, for ever: the changes since the version it has,
    /// or the whole table when the control plane no longer has them (or it is new).
    pub async fn follow(self: Arc<Self>, gateway: Gateway) {
        let mut version = 0u64;
        loop {
            let control = self.controls.url().to_owned();
            let url = format!("{control}/v1/internal/routes?after={version}");
            let got = tokio::time::timeout(Duration::from_secs(40), self.call(Method::GET, url, None)).await;
            let update = got
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .and_then(|b| serde_json::from_slice::<RoutesUpdate>(&b).map_err(|e| e.to_string()));
            match update {
                Ok(update) => {
                    self.heard();
                    if !self.connected.swap(true, Ordering::Relaxed) {
                        tracing::info!(control = %control, "following the control plane's routing table");
                    }
                    version = match update {
                        RoutesUpdate::Full(table) => {
                            let v = table.version;
                            gateway.publish(table);
                            v
                        }
                        // A delta that does not fit the table held asks for the whole table next.
                        RoutesUpdate::Deltas(deltas) => {
                            match deltas.into_iter().try_for_each(|d| if gateway.apply(d) { Ok(()) } else { Err(()) }) {
                                Ok(()) => gateway.version(),
                                Err(()) => 0,
                            }
                        }
                    };
                }
                Err(e) => {
                    if self.connected.swap(false, Ordering::Relaxed) || version == 0 {
                        tracing::warn!(error = %e, "control plane unreachable; serving from the last routing table");
                    }
                    self.controls.failed(&control);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Follows the TLS bundle into `gateway`'s HTTPS settings, for ever: the control plane holds
    /// the call until the bundle changes (a certificate issued, a challenge to answer), then the
    /// gateway applies it and reports its version with its next traffic report (at once).
    pub async fn follow_tls(self: Arc<Self>, gateway: Gateway) {
        let Some(tls) = gateway.tls().cloned() else { return };
        loop {
            let control = self.controls.url().to_owned();
            let url = format!("{control}/v1/internal/tls?after={}", tls.version());
            let got = tokio::time::timeout(Duration::from_secs(40), self.call(Method::GET, url, None)).await;
            match got.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(b) if b.is_empty() => {}
                Ok(b) => match serde_json::from_slice::<TlsBundle>(&b) {
                    Ok(bundle) => {
                        tls.apply(&bundle, sluice_core::Millis(crate::now_ms()));
                        self.report_now.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable TLS bundle from the control plane");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "TLS bundle poll failed");
                    self.controls.failed(&control);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Reports `gateway`'s traffic and figures every second, and at once when a request waits
    /// for a worker, for ever.
    pub async fn report(self: Arc<Self>, gateway: Gateway) {
        // Records not yet taken by a control plane are sent again with the next report.
        let mut unsent: Vec<sluice_api::internal::EndpointRecords> = Vec::new();
        loop {
            unsent.extend(gateway.take_records());
            let (records, rest) = split_records(std::mem::take(&mut unsent), RECORDS_PER_REPORT);
            unsent = rest;
            let report = TrafficReport {
                gateway: self.id.clone(),
                traffic: gateway.traffic(),
                figures: gateway.figures(),
                tls_version: gateway.tls().map_or(0, |t| t.version()),
                records,
            };
            let control = self.controls.url().to_owned();
            let body = serde_json::to_vec(&report).unwrap_or_default();
            match self.call(Method::POST, format!("{control}/v1/internal/traffic"), Some(body)).await {
                Ok(_) => {
                    self.heard();
                    self.connected.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.connected.store(false, Ordering::Relaxed);
                    self.controls.failed(&control);
                    tracing::debug!(error = %e, "traffic report failed");
                    // Kept for the next report, within the gateway's bound (beyond it, the
                    // oldest are dropped and counted).
                    let mut kept = report.records;
                    kept.append(&mut unsent);
                    unsent = kept;
                    let mut n: usize = unsent.iter().map(|r| r.requests.len()).sum();
                    for r in &mut unsent {
                        if n <= crate::metrics::MAX_PENDING_RECORDS {
                            break;
                        }
                        let cut = r.requests.len().min(n - crate::metrics::MAX_PENDING_RECORDS);
                        r.requests.drain(..cut);
                        r.dropped += cut as u64;
                        n -= cut;
                    }
                }
            }
            tokio::select! {
                () = self.report_now.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Recorded requests sent in one report at most (about 40 bytes each): a backlog after an
/// outage goes over several reports instead of one body too large to be taken.
pub const RECORDS_PER_REPORT: usize = 20_000;

/// The first `max` requests of `all` (whole endpoints first, the last one cut), and the rest.
fn split_records(
    all: Vec<sluice_api::internal::EndpointRecords>,
    max: usize,
) -> (Vec<sluice_api::internal::EndpointRecords>, Vec<sluice_api::internal::EndpointRecords>) {
    let (mut now, mut later) = (Vec::new(), Vec::new());
    let mut room = max;
    for mut r in all {
        if room == 0 {
            later.push(r);
        } else if r.requests.len() <= room {
            room -= r.requests.len();
            now.push(r);
        } else {
            let tail = r.requests.split_off(room);
            later.push(sluice_api::internal::EndpointRecords {
                endpoint: r.endpoint.clone(),
                requests: tail,
                dropped: 0,
            });
            room = 0;
            now.push(r);
        }
    }
    (now, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_of_records_goes_over_several_reports() {
        use sluice_api::internal::EndpointRecords;
        use sluice_core::recording::{Outcome, RequestRecord};
        let rec = RequestRecord {
            at: 1,
            queue_ms: 0,
            start_ms: 0,
            woke: false,
            service_ms: 1,
            status: 200,
            outcome: Outcome::Served,
            bytes_in: 0,
            bytes_out: 0,
        };
        let ep = |id: &str, n: usize, dropped: u64| EndpointRecords {
            endpoint: sluice_core::EndpointId::parse(id).unwrap(),
            requests: vec![rec; n],
            dropped,
        };
        // (sizes in, max) → (sizes now, sizes later)
        for (sizes, max, now, later) in [
            (vec![3, 4], 10, vec![3, 4], vec![]),
            (vec![3, 4], 5, vec![3, 2], vec![2]),
            (vec![3, 4, 2], 3, vec![3], vec![4, 2]),
            (vec![], 3, vec![], vec![]),
        ] {
            let all: Vec<EndpointRecords> =
                sizes.iter().enumerate().map(|(i, n)| ep(&format!("e{i}"), *n, 1)).collect();
            let (a, b) = split_records(all, max);
            assert_eq!(a.iter().map(|r| r.requests.len()).collect::<Vec<_>>(), now);
            assert_eq!(b.iter().map(|r| r.requests.len()).collect::<Vec<_>>(), later);
            // Counted once: a cut endpoint's dropped figure stays with its first part.
            assert_eq!(a.iter().chain(&b).map(|r| r.dropped).sum::<u64>(), sizes.len() as u64);
        }
    }

    #[test]
    fn control_urls() {
        let c = Controls::parse("http://a:1, http://b:2/", true).unwrap();
        assert_eq!(c.url(), "http://a:1");
        c.failed("http://a:1");
        assert_eq!(c.url(), "http://b:2");
        c.failed("http://a:1");
        assert_eq!(c.url(), "http://b:2", "a stale failure moves nothing");
        assert!(matches!(Controls::parse(" , ", false), Err(FollowError::NoControl)));
        assert!(matches!(Controls::parse("ftp://x", false), Err(FollowError::BadUrl(_))));
        assert_eq!(
            Controls::parse("https://control.example.com:8081", false).unwrap().url(),
            "https://control.example.com:8081"
        );
        assert!(Controls::parse("http://127.0.0.1:8081,http://[::1]:8081", false).is_ok(), "loopback may be plain");
        assert!(matches!(Controls::parse("http://10.0.0.5:8081", false), Err(FollowError::PlainControl(_))));
        assert!(Controls::parse("http://10.0.0.5:8081", true).is_ok());
    }
}
