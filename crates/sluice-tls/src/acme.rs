//! ACME (RFC 8555) at the edge: an account on any CA's directory (its credentials kept by the
//! caller, in the store), and the issuance of one certificate with the challenge the caller
//! chose: HTTP-01, TLS-ALPN-01 (RFC 8737) or DNS-01. Answering a challenge is the caller's
//! [`Responder`]: Sluice's gateways serve HTTP-01 and TLS-ALPN-01, an operator's hook sets
//! DNS-01 records. Every HTTP call goes through [`crate::client`]'s roots, so a private CA
//! (Pebble, step-ca) works with `tls_extra_ca`.
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, ExternalAccountKey, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::Pem;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Why a certificate was not issued; the text is what the operator sees as `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AcmeError(pub String);

impl AcmeError {
    fn new(context: &str, e: impl std::fmt::Display) -> AcmeError {
        AcmeError(format!("{context}: {e}"))
    }
}

/// The challenge a certificate is validated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `http://HOST/.well-known/acme-challenge/TOKEN`, on port 80 of every gateway.
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 of every gateway.
    TlsAlpn01,
    /// A TXT record `_acme-challenge.HOST` (the only way to a wildcard).
    Dns01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Dns01 => "dns-01",
        }
    }
    pub fn parse(s: &str) -> Option<Challenge> {
        [Challenge::Http01, Challenge::TlsAlpn01, Challenge::Dns01].into_iter().find(|c| c.as_str() == s)
    }
    fn acme_type(self) -> ChallengeType {
        match self {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Dns01 => ChallengeType::Dns01,
        }
    }
}

/// What must be answered for one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// Serve `key_authorization` at `/.well-known/acme-challenge/{token}`.
    Http01 { token: String, key_authorization: String },
    /// Present `cert` to a handshake for `host` that asks for ALPN `acme-tls/1`.
    TlsAlpn01 { host: String, cert: Pem },
    /// Set a TXT record `fqdn` (with its trailing dot) to `value`.
    Dns01 { fqdn: String, value: String },
}

/// Puts challenge answers in place and takes them away.
pub trait Responder: Send + Sync {
    /// Returns once `p` is answered everywhere a validation may arrive.
    fn present(&self, p: &Presented) -> impl Future<Output = Result<(), String>> + Send;
    /// Takes `p` away (whatever the outcome).
    fn cleanup(&self, p: &Presented) -> impl Future<Output = ()> + Send;
}

/// How an ACME account is reached.
#[derive(Clone)]
pub struct AcmeSettings {
    pub directory: String,
    /// `mailto:` contact (optional at most CAs).
    pub email: Option<String>,
    /// External account binding: key id and the HMAC key (base64url, as CAs hand it out).
    pub eab: Option<(String, String)>,
    /// What the HTTP client trusts (the system's roots plus `tls_extra_ca`).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for AcmeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeSettings")
            .field("directory", &self.directory)
            .field("email", &self.email)
            .field("eab", &self.eab.as_ref().map(|(kid, _)| kid))
            .finish_non_exhaustive()
    }
}

/// instant-acme's HTTP client on our connector (our roots, no platform verifier).
struct Http(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.0.request(req);
        Box::pin(async move {
            let resp = tokio::time::timeout(Duration::from_secs(30), fut)
                .await
                .map_err(|_| instant_acme::Error::Str("the ACME server did not answer within 30 s"))?
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?.to_bytes();
            Ok(BytesResponse { parts, body: Box::new(body) })
        })
    }
}

fn http(settings: &AcmeSettings) -> Box<dyn HttpClient> {
    let conn = crate::client::connector(settings.tls.clone(), Duration::from_secs(10));
    Box::new(Http(Client::builder(TokioExecutor::new()).build(conn)))
}

/// The account: restored from `stored` credentials (JSON, as this function returned them
/// before), or created on the directory. Returns the credentials to store when they are new.
/// The credentials hold the account's private key: the caller keeps them in the store only.
pub async fn account(settings: &AcmeSettings, stored: Option<&str>) -> Result<(Account, Option<String>), AcmeError> {
    if let Some(json) = stored {
        let creds =
            serde_json::from_str(json).map_err(|e| AcmeError::new("the stored ACME account is unreadable", e))?;
        let acct = Account::builder_with_http(http(settings))
            .from_credentials(creds)
            .await
            .map_err(|e| AcmeError::new(&format!("restoring the ACME account at {}", settings.directory), e))?;
        return Ok((acct, None));
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &settings.eab {
        Some((kid, key)) => {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .map_err(|_| AcmeError("acme_eab_hmac_key: not base64url".into()))?;
            Some(ExternalAccountKey::new(kid.clone(), &raw))
        }
        None => None,
    };
    let (acct, creds) = Account::builder_with_http(http(settings))
        .create(
            &NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false },
            settings.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| AcmeError::new(&format!("creating an ACME account at {}", settings.directory), e))?;
    let json = serde_json::to_string(&creds).map_err(|e| AcmeError::new("keeping the ACME account", e))?;
    Ok((acct, Some(json)))
}

/// The TLS-ALPN-01 certificate for `host` (RFC 8737: self-signed, the SHA-256 of the key
/// authorization in the critical acmeIdentifier extension).
pub fn alpn_certificate(host: &str, key_auth_digest: &[u8]) -> Result<Pem, AcmeError> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])
        .map_err(|e| AcmeError::new("the TLS-ALPN-01 certificate", e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_auth_digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::new("the TLS-ALPN-01 key", e))?;
    let cert = params.self_signed(&key).map_err(|e| AcmeError::new("the TLS-ALPN-01 certificate", e))?;
    Ok(Pem { cert_chain: cert.pem(), key: key.serialize_pem() })
}

/// Issues a certificate for `names` (the first is the subject; `*.x.y` needs DNS-01), answering
/// each authorization with `challenge` through `responder`. Returns the chain and its new key.
pub async fn issue<R: Responder>(
    account: &Account,
    names: &[String],
    challenge: Challenge,
    responder: &R,
) -> Result<Pem, AcmeError> {
    // A wildcard is ordered as `*.x.y`; its authorization is for `x.y`, marked wildcard.
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order =
        account.new_order(&NewOrder::new(&ids)).await.map_err(|e| AcmeError::new("the CA refused the order", e))?;
    let mut presented = Vec::new();
    let outcome = answer(&mut order, challenge, responder, &mut presented).await;
    for p in &presented {
        responder.cleanup(p).await;
    }
    outcome?;
    let key = order.finalize().await.map_err(|e| AcmeError::new("finalizing the order", e))?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
        .await
        .map_err(|e| AcmeError::new("fetching the certificate", e))?;
    Ok(Pem { cert_chain: chain, key })
}

/// Answers every pending authorization and waits until the order is ready.
async fn answer<R: Responder>(
    order: &mut instant_acme::Order,
    challenge: Challenge,
    responder: &R,
    presented: &mut Vec<Presented>,
) -> Result<(), AcmeError> {
    let mut authzs = order.authorizations();
    while let Some(a) = authzs.next().await {
        let mut a = a.map_err(|e| AcmeError::new("reading an authorization", e))?;
        if a.status != AuthorizationStatus::Pending {
            continue;
        }
        let id = a.identifier().to_string();
        let mut ch = a
            .challenge(challenge.acme_type())
            .ok_or_else(|| AcmeError(format!("the CA offers no {} challenge for {id}", challenge.as_str())))?;
        let ka = ch.key_authorization();
        let host = id.trim_start_matches("*.").to_owned();
        let p = match challenge {
            Challenge::Http01 => {
                Presented::Http01 { token: ch.token.clone(), key_authorization: ka.as_str().to_owned() }
            }
            Challenge::TlsAlpn01 => Presented::TlsAlpn01 { host, cert: alpn_certificate(&id, ka.digest().as_ref())? },
            Challenge::Dns01 => Presented::Dns01 { fqdn: format!("_acme-challenge.{host}."), value: ka.dns_value() },
        };
        presented.push(p.clone());
        responder
            .present(&p)
            .await
            .map_err(|e| AcmeError(format!("answering the {} challenge for {id}: {e}", challenge.as_str())))?;
        ch.set_ready()
            .await
            .map_err(|e| AcmeError::new(&format!("the {} challenge for {id}", challenge.as_str()), e))?;
    }
    let status = order
        .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90)))
        .await
        .map_err(|e| AcmeError::new(&format!("the {} challenge failed", challenge.as_str()), e))?;
    if status == OrderStatus::Ready {
        return Ok(());
    }
    // Invalid: say why, from the challenge that failed.
    let mut why = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if let Ok(state) = a.refresh().await {
            let id = state.identifier().to_string();
            for c in &state.challenges {
                if let Some(p) = &c.error {
                    why.push(format!("{id}: {}", p.detail.clone().unwrap_or_else(|| p.to_string())));
                }
            }
        }
    }
    Err(AcmeError(if why.is_empty() {
        "the CA found the order invalid".into()
    } else {
        format!("{} challenge failed: {}", challenge.as_str(), why.join("; "))
    }))
}
