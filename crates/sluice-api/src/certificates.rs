//! `/v1/certificates`: the certificates HTTPS is served with (issue 16): where each came from,
//! what it covers, until when, and, for those Sluice issues over ACME, how the last attempt
//! went. Never a key.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// The host it is kept under: an endpoint's host, the API host, or `*.{data_center}.{domain}`.
    pub host: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// `acme` (issued and renewed by Sluice) or `file` (`tls_cert` / `tls_key`).
    pub source: String,
    /// `pending` (not issued yet), `valid`, or `failed` (the last attempt failed; a certificate
    /// issued before keeps serving until it expires).
    pub state: String,
    /// `http-01`, `tls-alpn-01` or `dns-01` (ACME only).
    pub challenge: Option<String>,
    pub issuer: Option<String>,
    pub not_before: Option<String>,
    pub expires_at: Option<String>,
    /// When it is renewed (two thirds of its lifetime; ACME only).
    pub renew_at: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub last_attempt: Option<String>,
    /// When the next attempt is due (after a failure: the back-off).
    pub next_attempt: Option<String>,
}

/// `GET /v1/certificates`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    pub certificates: Vec<CertificateView>,
}

/// An endpoint's certificate, as its view shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointCertificate {
    /// The certificate's host (the endpoint's own, or its data center's wildcard).
    pub host: String,
    pub source: String,
    pub state: String,
    pub expires_at: Option<String>,
    pub last_error: Option<String>,
}
