//! The server side: an acceptor over a [`CertStore`], and a handshake bounded in time so a
//! client that never finishes it holds nothing but its own task.
use std::{sync::Arc, time::Duration};

use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::store::{ACME_TLS_ALPN, CertStore};

/// How long a client has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.2 and 1.3, the certificate chosen per SNI name by `store`, ALPN `h2` then `http/1.1`
/// (and `acme-tls/1`, which only a validation connection asks for).
pub fn acceptor(store: Arc<CertStore>) -> TlsAcceptor {
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // Resumption: tickets and a session cache, so a returning client skips the full handshake.
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    TlsAcceptor::from(Arc::new(cfg))
}

/// Why a TLS connection did not start.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client did not finish its TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

/// Runs the handshake on `stream`, bounded by [`HANDSHAKE_TIMEOUT`]. A connection that asked
/// for `acme-tls/1` has been answered by the handshake itself and is closed by the caller.
pub async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HandshakeError::TimedOut(HANDSHAKE_TIMEOUT)),
    }
}

/// Whether the connection negotiated ACME's challenge protocol (nothing to serve on it).
pub fn is_acme_challenge(s: &TlsStream<TcpStream>) -> bool {
    s.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN)
}
