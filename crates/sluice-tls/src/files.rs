//! Certificates from files (`tls_cert` / `tls_key`, several pairs): checked at startup (an
//! unusable file is an error naming it), and watched: a changed file is read again without a
//! restart and without touching open connections (the store is swapped; a connection keeps the
//! certificate it was made with). A file that changed into something unusable is logged and the
//! certificate held so far stays.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use sluice_core::Millis;

use crate::{
    CertError,
    certs::{certified, load_files},
    store::{CertStore, Served, Source},
};

/// How often the files are looked at (SIGHUP reads them at once).
pub const POLL: Duration = Duration::from_secs(2);

/// Certificate and key file pairs.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pairs: Vec<(PathBuf, PathBuf)>,
}

/// What a file looked like (modification time and length), to notice a change.
type Stamp = Vec<Option<(SystemTime, u64)>>;

impl CertFiles {
    /// Pairs `certs[i]` with `keys[i]`.
    pub fn new(certs: Vec<PathBuf>, keys: Vec<PathBuf>) -> Result<CertFiles, CertError> {
        if certs.len() != keys.len() {
            return Err(CertError::Config(format!(
                "tls_cert and tls_key must come in pairs: {} certificate file(s), {} key file(s)",
                certs.len(),
                keys.len()
            )));
        }
        Ok(CertFiles { pairs: certs.into_iter().zip(keys).collect() })
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Reads and checks every pair (at `now`): the first problem is the error, naming its file.
    pub fn load(&self, now: Millis) -> Result<Vec<Served>, CertError> {
        self.pairs
            .iter()
            .map(|(cert, key)| {
                let pem = load_files(cert, key)?;
                let what = format!("{} (with key {})", cert.display(), key.display());
                let (key, info) = certified(&pem, &what, now)?;
                Ok(Served { info, key })
            })
            .collect()
    }

    fn stamp(&self) -> Stamp {
        let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        self.pairs.iter().flat_map(|(c, k)| [one(c), one(k)]).collect()
    }

    /// Watches the files for ever (every [`POLL`], and at once on SIGHUP), putting what they hold
    /// into `store` when it changed and is usable.
    pub async fn watch(self, store: Arc<CertStore>, now: impl Fn() -> Millis + Send + 'static) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut seen = self.stamp();
        loop {
            let forced = tokio::select! {
                () = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let stamp = self.stamp();
            if !forced && stamp == seen {
                continue;
            }
            // A writer may be half-way through (key written, certificate not yet): its next
            // write changes the stamp again, and the files are read then.
            match self.load(now()) {
                Ok(served) => {
                    let names: Vec<String> = served.iter().flat_map(|s| s.info.names.clone()).collect();
                    store.set(Source::Files, served);
                    seen = stamp;
                    tracing::info!(?names, "certificate files read again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "a certificate file changed but cannot be used; keeping the previous certificate");
                    seen = stamp;
                }
            }
        }
    }
}
