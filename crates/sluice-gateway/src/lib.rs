//! The data plane: a hyper proxy that routes each request to a ready worker of its endpoint.
//!
//! **The gateway never touches the store or a runtime.** It routes from an in-memory table
//! that the control plane publishes ([`Gateway::publish`]) and reports what it sees
//! ([`Gateway::traffic`]). Accepts HTTP/1.1 and h2c on one port, streams bodies both ways,
//! passes WebSocket upgrades through, and enforces the execution timeout.
#![forbid(unsafe_code)]

pub mod body;
pub mod error;
mod proxy;
pub mod table;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

pub use error::Error;
use hyper::service::service_fn;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use sluice_core::{
    EndpointId,
    routing::{EndpointTraffic, RouteTable},
};
use tokio::{net::TcpListener, sync::watch};

use crate::{body::BoxBody, table::Routes};

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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            domain: "localhost".into(),
            shutdown_grace: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(4),
        }
    }
}

pub struct Inner {
    routes: Routes,
    changed: watch::Sender<u64>,
    client: Client<HttpConnector, BoxBody>,
    domain: String,
    on_demand: DemandFn,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    grace: Duration,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig, on_demand: DemandFn) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Gateway {
            inner: Arc::new(Inner {
                routes: Routes::default(),
                changed: watch::channel(0).0,
                client,
                domain: cfg.domain,
                on_demand,
            }),
            grace: cfg.shutdown_grace,
        }
    }

    /// Installs a new routing table and wakes requests waiting for a worker.
    pub fn publish(&self, table: RouteTable) {
        let v = table.version;
        self.inner.routes.publish(table);
        self.inner.changed.send_replace(v);
    }

    /// Per-endpoint traffic as this gateway sees it now.
    pub fn traffic(&self) -> Vec<EndpointTraffic> {
        self.inner.routes.traffic()
    }

    /// Serves until `shutdown` resolves, then lets open connections finish (up to the grace).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let inner = self.inner.clone();
                    let svc = service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(proxy::handle(inner, req, remote).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::trace!(error = %e, "client connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(self.grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("gateway connections still open after the shutdown grace period");
        }
    }
}

/// Binds a listener (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
