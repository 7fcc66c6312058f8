//! The Hugging Face hub's HTTP API, as much of it as a downloader needs (what
//! `huggingface_hub` itself calls):
//!
//! - `GET {endpoint}/api/models/{repo}/revision/{revision}`: the commit (`sha`) a branch, tag
//!   or commit names;
//! - `GET {endpoint}/api/models/{repo}/tree/{commit}?recursive=true`: every file with its size,
//!   its git blob id (`oid`) and, for LFS files, its sha256 (`lfs.oid`); paginated by `Link:
//!   <…>; rel="next"`;
//! - `GET {endpoint}/{repo}/resolve/{commit}/{path}`: the file (LFS files redirect to a CDN),
//!   with `Range` support.
//!
//! Errors carry the hub's own reason (`X-Error-Code`, `X-Error-Message`). A token goes only to
//! the hub's own host, never to where a redirect leads elsewhere, and never into a message.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;

use crate::ModelError;

/// One file of a repository at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub path: String,
    pub size: u64,
    /// Its blob name in the cache: the sha256 for LFS files, else the git blob id.
    pub etag: String,
    /// For LFS files: the sha256 the content must have.
    pub sha256: Option<String>,
    /// The git blob id (of the LFS pointer, for LFS files).
    pub blob_id: String,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The hub (or a mirror: `hf_endpoint`, `HF_ENDPOINT`).
#[derive(Clone)]
pub struct Hub {
    base: String,
    client: HttpClient,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("base", &self.base).finish_non_exhaustive()
    }
}

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a file path, keeping its `/`.
pub fn encode_path(p: &str) -> String {
    p.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// The host part of a URL.
fn host_of(url: &str) -> &str {
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
    // Never credentials, should a mirror's URL carry them.
    authority.rsplit('@').next().unwrap_or(authority)
}

/// The hub's reason for a refusal, without anything the caller sent.
fn refusal(status: StatusCode, headers: &HeaderMap, what: &str) -> ModelError {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let code = h("x-error-code").map(|c| format!(" ({c})")).unwrap_or_default();
    let msg = h("x-error-message").map(|m| format!(": {m}")).unwrap_or_default();
    ModelError::Refused(format!("{what}: the hub answered {status}{code}{msg}"))
}

impl Hub {
    pub fn new(base: &str, tls: Arc<rustls::ClientConfig>) -> Hub {
        let conn = sluice_tls::client::connector(tls, Duration::from_secs(10));
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(32).build(conn);
        Hub { base: base.trim_end_matches('/').to_owned(), client }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of a file at a commit.
    pub fn resolve_url(&self, repo: &str, commit: &str, path: &str) -> String {
        format!("{}/{repo}/resolve/{}/{}", self.base, encode_segment(commit), encode_path(path))
    }

    /// A GET, following redirects (at most 5); the token goes to the hub's host only. With
    /// `range`, asks for `[start, end)`. Any answer that is not 2xx is the hub's refusal.
    pub async fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
        token: Option<&str>,
        what: &str,
    ) -> Result<http::Response<Incoming>, ModelError> {
        let mut url = url.to_owned();
        for _ in 0..6 {
            let mut req = Request::get(&url).header(header::USER_AGENT, "sluice");
            if let Some((a, b)) = range {
                req = req.header(header::RANGE, format!("bytes={a}-{}", b.saturating_sub(1)));
            }
            if let Some(t) = token.filter(|_| host_of(&url) == host_of(&self.base)) {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Empty::new()).map_err(|_| ModelError::Refused(format!("{what}: not a usable URL")))?;
            let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
                .await
                .map_err(|_| ModelError::Network(format!("{what}: no answer within 60 s")))?
                .map_err(|e| ModelError::Network(format!("{what}: cannot reach {}: {}", host_of(&url), chain(&e))))?;
            let status = resp.status();
            if status.is_redirection() {
                let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
                    return Err(refusal(status, resp.headers(), what));
                };
                url = if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc.to_owned()
                } else {
                    let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                    format!("{origin}{loc}")
                };
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            return Err(refusal(status, resp.headers(), what));
        }
        Err(ModelError::Refused(format!("{what}: too many redirects")))
    }

    /// Whether `token` may read a file's content (a HEAD of its URL; the redirect is not
    /// followed). A gated repository lists its files to anyone, so a staging whose blobs are
    /// already cached still asks.
    pub async fn check_access(&self, url: &str, token: Option<&str>, what: &str) -> Result<(), ModelError> {
        let mut req = Request::head(url).header(header::USER_AGENT, "sluice");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::new()).map_err(|_| ModelError::Refused(format!("{what}: not a usable URL")))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| ModelError::Network(format!("{what}: no answer within 60 s")))?
            .map_err(|e| ModelError::Network(format!("{what}: cannot reach {}: {}", host_of(url), chain(&e))))?;
        let status = resp.status();
        if status.is_success() || status.is_redirection() { Ok(()) } else { Err(refusal(status, resp.headers(), what)) }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        token: Option<&str>,
        what: &str,
    ) -> Result<(T, HeaderMap), ModelError> {
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.get(url, None, token, what).await {
                Ok(resp) => {
                    let headers = resp.headers().clone();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| ModelError::Network(format!("{what}: {e}")))?
                        .to_bytes();
                    let v = serde_json::from_slice(&body).map_err(|e| {
                        ModelError::Refused(format!("{what}: the hub's answer is not what was expected: {e}"))
                    })?;
                    return Ok((v, headers));
                }
                Err(e @ ModelError::Network(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ModelError::Network(what.into())))
    }

    /// The commit a revision (branch, tag or commit) names.
    pub async fn commit(&self, repo: &str, revision: &str, token: Option<&str>) -> Result<String, ModelError> {
        let url = format!("{}/api/models/{repo}/revision/{}", self.base, encode_segment(revision));
        let (info, _): (RevisionInfo, _) = self.get_json(&url, token, &format!("{repo}@{revision}")).await?;
        if info.sha.len() < 7 || !info.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ModelError::Refused(format!("{repo}@{revision}: the hub gave no commit")));
        }
        Ok(info.sha)
    }

    /// Every file of a repository at a commit (the tree, recursive, every page).
    pub async fn files(&self, repo: &str, commit: &str, token: Option<&str>) -> Result<Vec<HubFile>, ModelError> {
        let mut url = format!("{}/api/models/{repo}/tree/{}?recursive=true", self.base, encode_segment(commit));
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let (entries, headers): (Vec<TreeEntry>, _) =
                self.get_json(&url, token, &format!("{repo}@{commit}")).await?;
            for e in entries.into_iter().filter(|e| e.kind == "file") {
                let blob_id = e.oid.clone();
                let (etag, sha256, size) = match e.lfs {
                    Some(l) => (l.oid.clone(), Some(l.oid), l.size),
                    None => (e.oid, None, e.size),
                };
                // The etag names a file in the cache: hex digits only.
                let named = !etag.is_empty() && etag.len() <= 128 && etag.bytes().all(|b| b.is_ascii_alphanumeric());
                if e.path.split('/').any(|c| c.is_empty() || c == "." || c == "..") || !named {
                    return Err(ModelError::Refused(format!("{repo}@{commit}: the hub listed an unusable file path")));
                }
                out.push(HubFile { path: e.path, size, etag, sha256, blob_id });
            }
            match next_page(&headers) {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
        Err(ModelError::Refused(format!("{repo}@{commit}: too many pages of files")))
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find(|l| l.contains("rel=\"next\"")).and_then(|l| {
        let start = l.find('<')? + 1;
        let end = l.find('>')?;
        Some(l[start..end].to_owned())
    })
}

/// An error with its sources.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_and_pages_followed() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_path("dir/my file.bin"), "dir/my%20file.bin");
        let mut h = HeaderMap::new();
        h.insert(header::LINK, "<https://hub/api/models/a/b/tree/main?cursor=x>; rel=\"next\"".parse().unwrap());
        assert_eq!(next_page(&h).as_deref(), Some("https://hub/api/models/a/b/tree/main?cursor=x"));
        assert_eq!(host_of("https://huggingface.co/api/x"), "huggingface.co");
        assert_eq!(host_of("https://u:pw@mirror:8443/x"), "mirror:8443", "no credentials in messages");
        let mut e = HeaderMap::new();
        e.insert("x-error-code", "RepoNotFound".parse().unwrap());
        e.insert("x-error-message", "Repository not found".parse().unwrap());
        assert_eq!(
            refusal(StatusCode::UNAUTHORIZED, &e, "org/x@main").to_string(),
            "org/x@main: the hub answered 401 Unauthorized (RepoNotFound): Repository not found"
        );
    }
}
