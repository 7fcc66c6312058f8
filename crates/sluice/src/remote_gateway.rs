//! `sluice gateway`: a data-plane-only process in front of a `sluice control` (R8.3): the
//! gateway, following the control plane (`sluice_gateway::follow`), and its own `/metrics`.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use http::header;
use sluice_gateway::{Gateway, GatewayConfig, follow::Follower, tls::GatewayTls};
use sluice_tls::{CertStore, Source, files::CertFiles};

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
    /// HTTPS from files (the control plane adds the certificates it issues over ACME).
    pub tls_cert: Vec<std::path::PathBuf>,
    pub tls_key: Vec<std::path::PathBuf>,
    /// With HTTPS: the plain listener (ACME HTTP-01, redirects to https://).
    pub http_listen: Option<SocketAddr>,
    pub hsts_max_age_secs: Option<u64>,
    /// CAs (PEM) trusted beside the system's roots for an `https://` control URL.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Serve the API's host name by forwarding it to the control plane.
    pub api_host: Option<String>,
    /// Accept a plain `http://` control URL off loopback.
    pub allow_plain_control: bool,
    /// Serve HTTPS even without certificate files (every certificate comes from the control
    /// plane, issued over ACME).
    pub https: bool,
}

pub async fn run(cfg: RemoteGatewayConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let roots = sluice_tls::client::roots(cfg.ca_cert.as_deref()).context("--ca-cert")?;
    let follower = Follower::new(
        &cfg.control,
        cfg.key.clone(),
        cfg.id.clone(),
        sluice_tls::client::config(roots),
        cfg.allow_plain_control,
    )?;
    let https = !cfg.tls_cert.is_empty() || cfg.https;
    let tls = if https {
        let files = CertFiles::new(cfg.tls_cert.clone(), cfg.tls_key.clone())?;
        let certs = CertStore::new();
        certs.set(Source::Files, files.load(sluice_control::now()).context("--tls-cert / --tls-key")?);
        if !files.is_empty() {
            tokio::spawn(files.watch(certs.clone(), sluice_control::now));
        }
        Some(GatewayTls::new(certs, cfg.listen.port(), cfg.hsts_max_age_secs))
    } else {
        None
    };
    let gateway = Gateway::new(
        GatewayConfig { domain: cfg.domain.clone(), tls, ..GatewayConfig::default() },
        follower.demand_fn(),
    );
    gateway.set_side_service(follower.side_service());
    if let Some(host) = &cfg.api_host {
        gateway.set_api_service(host.clone(), follower.side_service());
    }
    let follow = tokio::spawn(follower.clone().follow(gateway.clone()));
    let follow_tls = tokio::spawn(follower.clone().follow_tls(gateway.clone()));
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
    let plain = match cfg.http_listen.filter(|_| https) {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the gateway's plain listener to {a} (--gateway-http-addr)"))?,
        ),
        None => None,
    };
    let scheme = if https { "https" } else { "http" };
    println!("Sluice gateway {} on {scheme}://{}, following {}", cfg.id, listener.local_addr()?, follower.controls());
    if let Some(p) = &plain {
        println!("  plain HTTP on http://{} (ACME HTTP-01; redirects to https)", p.local_addr()?);
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    gateway.serve(sluice_gateway::Listeners { main: listener, plain }, shutdown).await;
    follow.abort();
    follow_tls.abort();
    report.abort();
    Ok(())
}
