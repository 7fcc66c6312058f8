//! The control API's listener: plain TCP, or TLS with each handshake in its own task (bounded
//! in time), so a client that never finishes its handshake holds neither the accept loop nor
//! anything else. Either way it is an `axum::serve::Listener`.
use std::{net::SocketAddr, sync::Arc};

use sluice_tls::CertStore;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::server::TlsStream;

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, certs: Arc<CertStore>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = sluice_tls::server::acceptor(certs);
        let (tx, ready) = mpsc::channel(128);
        let accept = tokio::spawn(async move {
            loop {
                let (stream, remote) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match sluice_tls::server::handshake(&acceptor, stream).await {
                        Ok(s) if sluice_tls::server::is_acme_challenge(&s) => {}
                        Ok(s) => {
                            let _ = tx.send((s, remote)).await;
                        }
                        Err(e) => tracing::debug!(error = %e, %remote, "API TLS handshake failed"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, accept })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task is gone (never, but for a panic): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The API's listener, plain or TLS.
pub enum ApiListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl ApiListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            ApiListener::Plain(l) => l.local_addr(),
            ApiListener::Tls(l) => Ok(l.local),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self {
            ApiListener::Plain(_) => "http",
            ApiListener::Tls(_) => "https",
        }
    }

    /// Serves `router` until `shutdown` resolves.
    pub fn serve(
        self,
        router: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<std::io::Result<()>> {
        match self {
            ApiListener::Plain(l) => {
                tokio::spawn(async move { axum::serve(l, router).with_graceful_shutdown(shutdown).await })
            }
            ApiListener::Tls(l) => {
                tokio::spawn(async move { axum::serve(l, router).with_graceful_shutdown(shutdown).await })
            }
        }
    }
}
