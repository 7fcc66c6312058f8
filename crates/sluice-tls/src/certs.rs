//! Certificates and keys from PEM: parsed, checked, and described.
use std::{path::Path, sync::Arc};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sluice_core::Millis;

/// Why a certificate or key cannot be used. Messages name the problem, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { what: String },
    #[error("{what}: the certificate cannot be parsed: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("{what}: the private key cannot be used: {reason}")]
    BadKey { what: String, reason: String },
    #[error("{what}: the private key does not belong to the certificate")]
    Mismatch { what: String },
    #[error("{what}: the certificate expired at {at}")]
    Expired { what: String, at: String },
    #[error("{what}: the certificate is not valid before {at}")]
    NotYetValid { what: String, at: String },
}

/// What a certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (subject alternative names, else the common name).
    pub names: Vec<String>,
    pub not_before: Millis,
    pub not_after: Millis,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    /// The serial number, hex.
    pub serial: String,
}

/// A certificate chain and its private key, as PEM text. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert_chain: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert_chain", &format!("{} bytes", self.cert_chain.len()))
            .field("key", &"***")
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Unreadable { path: path.display().to_string(), reason: e.to_string() })
}

/// Reads a certificate chain and key from files (`what` names them in errors).
pub fn load_files(cert: &Path, key: &Path) -> Result<Pem, CertError> {
    let as_text = |b: Vec<u8>, path: &Path| {
        String::from_utf8(b)
            .map_err(|_| CertError::Unreadable { path: path.display().to_string(), reason: "not PEM text".into() })
    };
    Ok(Pem { cert_chain: as_text(read(cert)?, cert)?, key: as_text(read(key)?, key)? })
}

/// Parses PEM into a serving key, checking that the key matches the certificate and that the
/// certificate is valid at `now`. Returns it with what the certificate says of itself.
pub fn certified(pem: &Pem, what: &str, now: Millis) -> Result<(Arc<CertifiedKey>, CertInfo), CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert_chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate { what: what.into(), reason: e.to_string() })?;
    let Some(leaf) = chain.first() else { return Err(CertError::NoCertificate { what: what.into() }) };
    let info = describe(leaf, what)?;
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CertError::NoKey { what: what.into() },
        other => CertError::BadKey { what: what.into(), reason: other.to_string() },
    })?;
    let ck = CertifiedKey::from_der(chain, key, &crate::provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::Mismatch { what: what.into() },
        other => CertError::BadKey { what: what.into(), reason: other.to_string() },
    })?;
    if now < info.not_before {
        return Err(CertError::NotYetValid { what: what.into(), at: sluice_core::rfc3339(info.not_before) });
    }
    if now >= info.not_after {
        return Err(CertError::Expired { what: what.into(), at: sluice_core::rfc3339(info.not_after) });
    }
    Ok((Arc::new(ck), info))
}

/// The serving key of an ACME TLS-ALPN-01 challenge certificate (RFC 8737). Its critical
/// `acmeIdentifier` extension is one a certificate verifier refuses, so it is taken as it is:
/// nothing but a validation connection (ALPN `acme-tls/1`) is ever given it.
pub fn challenge_key(pem: &Pem, what: &str) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert_chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate { what: what.into(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { what: what.into() });
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes())
        .map_err(|e| CertError::BadKey { what: what.into(), reason: e.to_string() })?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::BadKey { what: what.into(), reason: e.to_string() })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Names, validity and issuer of a DER certificate.
pub fn describe(der: &CertificateDer<'_>, what: &str) -> Result<CertInfo, CertError> {
    use x509_parser::prelude::*;
    let bad = |reason: String| CertError::BadCertificate { what: what.into(), reason };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    let ms = |t: ASN1Time| Millis((t.timestamp().max(0) as u64).saturating_mul(1000));
    Ok(CertInfo {
        names,
        not_before: ms(cert.validity().not_before),
        not_after: ms(cert.validity().not_after),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
    })
}

/// The first certificate of a PEM chain, described.
pub fn describe_pem(chain: &str, what: &str) -> Result<CertInfo, CertError> {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .ok_or_else(|| CertError::NoCertificate { what: what.into() })?
        .map_err(|e| CertError::BadCertificate { what: what.into(), reason: e.to_string() })?;
    describe(&leaf, what)
}

/// A self-signed certificate for `names` (the fallback a server presents to a name it has no
/// certificate for, and the tests' own certificates): ECDSA P-256.
pub fn self_signed(names: &[String]) -> Result<Pem, CertError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| CertError::BadCertificate { what: "a self-signed certificate".into(), reason: e.to_string() })?;
    Ok(Pem { cert_chain: ck.cert.pem(), key: ck.signing_key.serialize_pem() })
}
