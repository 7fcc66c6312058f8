//! A small client for the control API, used by the CLI (and the tests): answers are read into
//! the API's own view types (`sluice_api`). `http://` and `https://` URLs; HTTPS is verified
//! against the system's roots and `--ca-cert` (a private CA), never skipped.
use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Serialize, de::DeserializeOwned};
use sluice_api::ErrorBody;

pub struct ApiClient {
    base: String,
    key: Option<String>,
    /// The HTTP client, or why there is none (an unusable `--ca-cert`).
    http: Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, String>,
}

/// An error answer of the API, with its parsed body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Option<ErrorBody>,
    pub raw: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Some(b) => {
                write!(f, "{} ({})", b.error.message, self.status)?;
                if let Some(field) = &b.error.field {
                    write!(f, " [field: {field}]")?;
                }
                Ok(())
            }
            None => write!(f, "HTTP {}: {}", self.status, self.raw.trim()),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiClient {
    pub fn new(base: &str, key: Option<String>) -> Self {
        ApiClient::with_ca(base, key, None)
    }

    /// A client that also trusts the CAs in `ca_cert` (PEM) for an `https://` API.
    pub fn with_ca(base: &str, key: Option<String>, ca_cert: Option<&std::path::Path>) -> Self {
        let http = sluice_tls::client::roots(ca_cert)
            .map(|roots| {
                let conn = sluice_tls::client::connector(
                    sluice_tls::client::config(roots),
                    std::time::Duration::from_secs(10),
                );
                Client::builder(TokioExecutor::new()).build(conn)
            })
            .map_err(|e| format!("--ca-cert: {e}"));
        ApiClient { base: base.trim_end_matches('/').to_owned(), key, http }
    }

    fn http(&self) -> anyhow::Result<&Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
        self.http.as_ref().map_err(|e| anyhow!("{e}"))
    }

    /// Sends a request with an optional JSON body; a 2xx answer's JSON is read as `T` (`()` for
    /// an empty body), anything else becomes an [`ApiError`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<T> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&uri);
        if let Some(k) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let resp =
            self.http()?.request(req.body(Full::new(bytes)).context("building request")?).await.map_err(|e| {
                anyhow!("could not reach the Sluice API at {} (is `sluice up` running?): {}", self.base, reason(&e))
            })?;
        let status = resp.status();
        let raw = resp.into_body().collect().await.context("reading API response")?.to_bytes();
        if status.is_success() {
            let raw: &[u8] = if raw.is_empty() { b"null" } else { &raw };
            return serde_json::from_slice(raw).map_err(|e| anyhow!("the API answered with unexpected JSON: {e}"));
        }
        Err(ApiError {
            status,
            body: serde_json::from_slice(&raw).ok(),
            raw: String::from_utf8_lossy(&raw).into_owned(),
        }
        .into())
    }

    /// A `GET` whose 2xx answer is text (a CSV), returned as is.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(Method::GET).uri(&uri);
        if let Some(k) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let resp = self.http()?.request(req.body(Full::new(Bytes::new())).context("building request")?).await.map_err(
            |e| anyhow!("could not reach the Sluice API at {} (is `sluice up` running?): {}", self.base, reason(&e)),
        )?;
        let status = resp.status();
        let raw = resp.into_body().collect().await.context("reading API response")?.to_bytes();
        if status.is_success() {
            return Ok(String::from_utf8_lossy(&raw).into_owned());
        }
        Err(ApiError {
            status,
            body: serde_json::from_slice(&raw).ok(),
            raw: String::from_utf8_lossy(&raw).into_owned(),
        }
        .into())
    }

    /// A `GET`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Follows a server-sent event stream: `on_event(id, data)` for each event, until the
    /// stream ends. `last_id` is sent as `Last-Event-ID` to resume after it. Returns the last id.
    pub async fn follow_events(
        &self,
        path: &str,
        last_id: Option<String>,
        mut on_event: impl FnMut(Option<&str>, &str),
    ) -> anyhow::Result<Option<String>> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(Method::GET).uri(&uri).header(header::ACCEPT, "text/event-stream");
        if let Some(k) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id);
        }
        let resp = self.http()?.request(req.body(Full::new(Bytes::new()))?).await.map_err(|e| {
            anyhow!("could not reach the Sluice API at {} (is `sluice up` running?): {}", self.base, reason(&e))
        })?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let raw = body.collect().await?.to_bytes();
            return Err(ApiError {
                status,
                body: serde_json::from_slice(&raw).ok(),
                raw: String::from_utf8_lossy(&raw).into_owned(),
            }
            .into());
        }
        let mut last = last_id;
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let (mut id, mut lines) = (None, Vec::new());
                for l in event.lines() {
                    if let Some(v) = l.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = l.strip_prefix("data:") {
                        lines.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !lines.is_empty() {
                    on_event(id.as_deref(), &lines.join("\n"));
                }
                if id.is_some() {
                    last = id;
                }
            }
        }
        Ok(last)
    }
}

/// An error with its sources (a certificate that does not verify is a few levels down).
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}
