//! TLS for Sluice (R1.9, issue 16), on rustls with the `ring` provider:
//!
//! - [`certs`]: certificates and keys from PEM, checked (readable, key matches, valid now) with
//!   their names and validity read from the certificate;
//! - [`store::CertStore`]: the certificates a server holds, chosen per SNI name (exact names
//!   first, then RFC 6125 wildcards), swapped atomically when a file changes or a certificate is
//!   issued, and the TLS-ALPN-01 challenge certificates of ACME;
//! - [`server`]: the acceptor (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and `acme-tls/1`
//!   only for challenges) and a handshake bounded in time;
//! - [`files`]: certificates from `tls_cert` / `tls_key` files, checked at startup and read
//!   again when they change (or on SIGHUP);
//! - [`client`]: the roots every outbound connection trusts (the system's, plus `tls_extra_ca`)
//!   and an HTTP client for `http://` and `https://` URLs;
//! - [`acme`]: an ACME account and the issuance of one certificate (HTTP-01, TLS-ALPN-01,
//!   DNS-01), the challenges answered by the caller.
//!
//! **No private key leaves this crate's types in a form that prints**: `Debug` of a key shows
//! nothing of it.
#![forbid(unsafe_code)]

pub mod acme;
pub mod certs;
pub mod client;
pub mod files;
pub mod server;
pub mod store;

use std::sync::Arc;

pub use certs::{CertError, CertInfo, Pem};
pub use store::{CertStore, Served, Source};

/// The crypto provider of every TLS config here (ring: already in the tree through kube, and
/// no C toolchain beyond it).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
