//! Host names as requests carry them.
use http::{HeaderMap, Request, Uri, header::HOST};

/// The host a request names: its `Host` header, else its URI's authority (HTTP/2).
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    host_of(req.headers(), req.uri())
}

/// The same from a request's parts.
pub(crate) fn host_of<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers.get(HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()))
}

/// Whether `host` (maybe with a port) is `name`, without regard to case.
pub(crate) fn host_is(host: &str, name: &str) -> bool {
    let h = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    h.trim_end_matches('.').eq_ignore_ascii_case(name)
}
