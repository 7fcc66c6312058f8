//! The data plane: a hyper proxy that routes each request to a ready worker of its endpoint.
//!
//! **The gateway never touches the store or a runtime.** It routes from an in-memory table
//! that the control plane publishes ([`Gateway::publish`]) and reports what it sees
//! ([`Gateway::traffic`]). Accepts HTTP/1.1 and h2c on one port, or HTTPS (TLS 1.2 and 1.3,
//! ALPN h2 and http/1.1, a certificate per SNI name: [`tls`]) with a plain listener beside it
//! that answers ACME HTTP-01 challenges and redirects the rest; streams bodies both ways,
//! passes WebSocket upgrades through, and enforces the execution timeout.
#![forbid(unsafe_code)]

mod affinity;
pub mod body;
pub mod error;
pub mod follow;
mod host;
pub mod metrics;
pub mod openai;
mod proxy;
pub mod table;
pub mod tls;
mod tokens;

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

pub use error::Error;
use hyper::service::service_fn;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use sluice_api::internal::{RouteTable, RoutesDelta};
use sluice_core::{EndpointId, routing::EndpointTraffic};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
};

use crate::{body::BoxBody, table::Routes, tls::GatewayTls};

/// The wall clock in Unix ms (what counters and reports carry).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Called when a request finds no ready worker, so the control plane can start one at once.
pub type DemandFn = Arc<dyn Fn(&EndpointId) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Domain of host-form URLs: `{endpoint_id}.{data_center}.{domain}`.
    pub domain: String,
    /// How long open connections may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Idle pooled connections to workers are closed after this (below common worker
    /// keep-alive timeouts, so the gateway never reuses a connection the worker is closing).
    pub pool_idle_timeout: Duration,
    /// Event-loop threads (0: one per core). Each runs its own single-threaded runtime, accepts
    /// from the shared listener and keeps its own pool of worker connections, so a request is
    /// handled on one thread from accept to answer, with no cross-thread wake-ups.
    pub threads: usize,
    /// HTTPS: the main listener speaks TLS, and the plain one (if any) redirects to it.
    pub tls: Option<Arc<GatewayTls>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            domain: "localhost".into(),
            shutdown_grace: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(4),
            threads: 0,
            tls: None,
        }
    }
}

/// Serves what the proxy does not: the `/v2/…` queue API (R6), handed over by whoever wires the
/// platform, so that the gateway itself stays free of the store.
pub type SideService = Arc<
    dyn Fn(hyper::Request<hyper::body::Incoming>) -> futures_util::future::BoxFuture<'static, hyper::Response<BoxBody>>
        + Send
        + Sync,
>;

pub struct Inner {
    /// Requests under `/v2/` go here when set.
    side: arc_swap::ArcSwapOption<SideService>,
    /// Requests for the API's host go here when set: (host, service).
    api: arc_swap::ArcSwapOption<(String, SideService)>,
    tls: Option<Arc<GatewayTls>>,
    routes: Routes,
    changed: watch::Sender<u64>,
    domain: String,
    on_demand: DemandFn,
    pool_idle_timeout: Duration,
    open_connections: std::sync::atomic::AtomicU64,
    connections_total: std::sync::atomic::AtomicU64,
}

pub type UpstreamClient = Client<HttpConnector, BoxBody>;

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    grace: Duration,
    threads: usize,
}

impl Gateway {
    /// Installs the service for `/v2/…` paths (the queue API).
    pub fn set_side_service(&self, svc: SideService) {
        self.inner.side.store(Some(Arc::new(svc)));
    }

    /// Serves requests whose `Host` is `host` (the API's, e.g. `api.example.com`) with `svc`:
    /// the control API on the gateway's port, under its own certificate.
    pub fn set_api_service(&self, host: String, svc: SideService) {
        self.inner.api.store(Some(Arc::new((host.to_ascii_lowercase(), svc))));
    }

    /// HTTPS settings, when the gateway serves TLS.
    pub fn tls(&self) -> Option<&Arc<GatewayTls>> {
        self.inner.tls.as_ref()
    }

    pub fn new(cfg: GatewayConfig, on_demand: DemandFn) -> Self {
        let threads = match cfg.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Gateway {
            inner: Arc::new(Inner {
                side: arc_swap::ArcSwapOption::empty(),
                api: arc_swap::ArcSwapOption::empty(),
                tls: cfg.tls,
                routes: Routes::default(),
                changed: watch::channel(0).0,
                domain: cfg.domain,
                on_demand,
                pool_idle_timeout: cfg.pool_idle_timeout,
                open_connections: Default::default(),
                connections_total: Default::default(),
            }),
            grace: cfg.shutdown_grace,
            threads,
        }
    }

    /// A pool of connections to workers; one per event-loop thread.
    fn upstream_client(&self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.inner.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector)
    }

    /// Installs a new routing table and wakes requests waiting for a worker.
    pub fn publish(&self, table: RouteTable) {
        let v = table.version;
        self.inner.routes.publish(table);
        self.inner.changed.send_replace(v);
    }

    /// Applies the changes since the installed table (false: it is another version, and the
    /// whole table is needed) and wakes requests waiting for a worker.
    pub fn apply(&self, delta: RoutesDelta) -> bool {
        let v = delta.version;
        let applied = self.inner.routes.apply(delta);
        if applied {
            self.inner.changed.send_replace(v);
        }
        applied
    }

    /// The version of the installed table.
    pub fn version(&self) -> u64 {
        self.inner.routes.load().version
    }

    /// Per-endpoint traffic as this gateway sees it now.
    pub fn traffic(&self) -> Vec<EndpointTraffic> {
        self.inner.routes.traffic()
    }

    /// The requests recorded since the last call (issue 20).
    pub fn take_records(&self) -> Vec<sluice_api::internal::EndpointRecords> {
        self.inner.routes.take_records()
    }

    /// This gateway's figures for `/metrics`.
    pub fn figures(&self) -> sluice_core::metrics::GatewayFigures {
        use std::sync::atomic::Ordering::Relaxed;
        let (table_version, endpoints) = self.inner.routes.figures();
        sluice_core::metrics::GatewayFigures {
            endpoints,
            open_connections: self.inner.open_connections.load(Relaxed),
            connections_total: self.inner.connections_total.load(Relaxed),
            table_version,
        }
    }

    /// Serves until `shutdown` resolves, then lets open connections finish (up to the grace).
    /// Runs `threads` event loops on their own OS threads (see [`GatewayConfig::threads`]).
    pub async fn serve(self, listeners: impl Into<Listeners>, shutdown: impl Future<Output = ()>) {
        let Listeners { main, plain } = listeners.into();
        let std_listener = |l: TcpListener| match l.into_std() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "gateway listener unusable");
                None
            }
        };
        let Some(main) = std_listener(main) else { return };
        let plain = plain.and_then(std_listener);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut done = Vec::new();
        for i in 0..self.threads {
            let cloned =
                main.try_clone().and_then(|m| plain.as_ref().map(|p| p.try_clone()).transpose().map(|p| (m, p)));
            let (m, p) = match cloned {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "could not share the gateway listener");
                    break;
                }
            };
            let gw = self.clone();
            let stop = stop_rx.clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new().name(format!("sluice-gw-{i}")).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "could not start a gateway event loop");
                        return;
                    }
                };
                rt.block_on(gw.event_loop(m, p, stop));
                drop(tx);
            });
            match spawned {
                Ok(_) => done.push(rx),
                Err(e) => tracing::error!(error = %e, "could not start a gateway thread"),
            }
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for rx in done {
            let _ = rx.await;
        }
    }

    /// One event loop: accept, serve each connection on this thread, drain at shutdown. With
    /// TLS, each handshake runs in its own task (bounded in time) and the finished connection
    /// comes back here to be served: a client that never finishes its handshake holds neither
    /// the accept loop nor a worker slot.
    async fn event_loop(
        self,
        listener: std::net::TcpListener,
        plain: Option<std::net::TcpListener>,
        mut stop: watch::Receiver<bool>,
    ) {
        let tokio_listener =
            |l: std::net::TcpListener| match l.set_nonblocking(true).and_then(|()| TcpListener::from_std(l)) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(error = %e, "gateway listener unusable");
                    None
                }
            };
        let Some(listener) = tokio_listener(listener) else { return };
        let plain = plain.and_then(tokio_listener);
        let client = self.upstream_client();
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        let (handshaken_tx, mut handshaken) = tokio::sync::mpsc::channel(256);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Some((stream, remote)) = accepted_or_pause(accepted).await else { continue };
                    let _ = stream.set_nodelay(true);
                    match &self.inner.tls {
                        None => self.serve_connection(&builder, &graceful, &client, stream, remote, false),
                        Some(tls) => {
                            let (acceptor, tx) = (tls.acceptor.clone(), handshaken_tx.clone());
                            tokio::spawn(async move {
                                match sluice_tls::server::handshake(&acceptor, stream).await {
                                    Ok(s) if sluice_tls::server::is_acme_challenge(&s) => {
                                        // A TLS-ALPN-01 validation: the handshake was the answer.
                                        let mut s = s;
                                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
                                    }
                                    Ok(s) => {
                                        let _ = tx.send((s, remote)).await;
                                    }
                                    Err(e) => tracing::debug!(error = %e, %remote, "TLS handshake failed"),
                                }
                            });
                        }
                    }
                }
                Some((stream, remote)) = handshaken.recv() => {
                    self.serve_connection(&builder, &graceful, &client, stream, remote, true);
                }
                accepted = async { match &plain { Some(p) => p.accept().await, None => std::future::pending().await } } => {
                    let Some((stream, _)) = accepted_or_pause(accepted).await else { continue };
                    let Some(tls) = self.inner.tls.clone() else { continue };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                        let resp = tls.answer_plain(host.as_deref(), &pq);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(self.grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("gateway connections still open after the shutdown grace period");
        }
    }

    /// Serves one client connection (plain TCP or TLS) on this event loop.
    fn serve_connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        builder: &auto::Builder<TokioExecutor>,
        graceful: &GracefulShutdown,
        client: &UpstreamClient,
        stream: I,
        remote: std::net::SocketAddr,
        https: bool,
    ) {
        let inner = self.inner.clone();
        let client = client.clone();
        let svc = service_fn(move |req| {
            let inner = inner.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(proxy::handle(inner, client, req, proxy::Conn { remote, https }).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        let inner = self.inner.clone();
        inner.open_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner.connections_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "client connection ended with an error");
            }
            inner.open_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

/// An accepted connection, or `None` after a failed accept (paused briefly when it was not a
/// spurious wake-up, so a full file table does not spin the loop).
async fn accepted_or_pause(
    accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match accepted {
        Ok(x) => Some(x),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// What a gateway listens on: its main listener (TLS when the gateway has [`GatewayTls`]) and,
/// with TLS, a plain one for ACME HTTP-01 challenges and redirects to `https://`.
pub struct Listeners {
    pub main: TcpListener,
    pub plain: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Self {
        Listeners { main, plain: None }
    }
}
