//! `sluice gateway`: a data-plane-only process in front of a `sluice control` (R8.3): the
//! gateway, following the control plane (`sluice_gateway::follow`), and its own `/metrics`.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use http::header;
use sluice_gateway::{Gateway, GatewayConfig, follow::Follower};

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

pub async fn run(cfg: RemoteGatewayConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let follower = Follower::new(&cfg.control, cfg.key.clone(), cfg.id.clone())?;
    let gateway =
        Gateway::new(GatewayConfig { domain: cfg.domain.clone(), ..GatewayConfig::default() }, follower.demand_fn());
    gateway.set_side_service(follower.side_service());
    let follow = tokio::spawn(follower.clone().follow(gateway.clone()));
    let report = tokio::spawn(follower.clone().report(gateway.clone()));

    // This gateway's own /metrics: its figures, and whether it reaches the control plane.
    if let Some(addr) = cfg.metrics {
        let (gateway, follower) = (gateway.clone(), follower.clone());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (gateway, follower): (Gateway, Arc<Follower>) = (gateway.clone(), follower.clone());
                async move {
                    let body = sluice_control::metrics::encode_gateway(
                        &gateway.figures(),
                        follower.connected(),
                        follower.table_age_secs(),
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
    println!("Sluice gateway {} on http://{}, following {}", cfg.id, listener.local_addr()?, follower.controls());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    gateway.serve(listener, shutdown).await;
    follow.abort();
    report.abort();
    Ok(())
}
