//! Model files at the edge (issue 18): the Hugging Face hub's HTTP API ([`hub`]), downloads in
//! parallel ranges that resume after an interruption and are verified against the hub's
//! digests ([`fetch`]), and the cache on disk in the hub cache's own layout, so every Hugging
//! Face library reads it offline ([`cache`]). What to fetch and what to evict is decided in
//! `sluice_core::models`; who fetches when is the control plane's.
#![forbid(unsafe_code)]

pub mod cache;
pub mod fetch;
pub mod hub;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

pub use cache::{Cache, Staged};
pub use hub::Hub;

/// Why a model could not be staged. Messages never carry a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The hub (or the URL's server) refused: its status and its own reason.
    #[error("{0}")]
    Refused(String),
    /// The network failed (retried first).
    #[error("{0}")]
    Network(String),
    /// A file's content does not match its digest (after one more try).
    #[error("checksum mismatch: {0}")]
    Checksum(String),
    /// The local disk failed.
    #[error("cache: {0}")]
    Disk(String),
}

impl ModelError {
    pub(crate) fn disk(what: &str, e: std::io::Error) -> ModelError {
        ModelError::Disk(format!("{what}: {e}"))
    }
}

/// A staging's progress, shared with whoever shows it.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::default()
    }
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Relaxed);
    }
    /// Takes back bytes counted for a file fetched again.
    pub fn sub(&self, n: u64) {
        let _ = self.done.fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(n)));
    }
    pub fn get(&self) -> (u64, u64) {
        (self.done.load(Relaxed), self.total.load(Relaxed))
    }
}

/// Hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is asking, without the token: a digest of it ("" for none). Stagings with different
/// tokens are kept apart, so one account's access to a gated or private repository never
/// serves another account's endpoint.
pub fn fingerprint(token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => hex(&ring::digest::digest(&ring::digest::SHA256, t.as_bytes()).as_ref()[..16]),
        _ => String::new(),
    }
}
