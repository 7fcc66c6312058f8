//! One file, fetched: in ranges of `RANGE_BYTES`, several at once, into `<blob>.incomplete`,
//! with the bytes written per range kept beside it (`<blob>.incomplete.json`, every 200 ms), so
//! an interruption (a lost connection, a kill -9 of the platform) resumes where each range
//! stopped instead of starting over. Then verified: the sha256 the hub gave (LFS files), or the
//! git blob id (small files), or the size; a mismatch is fetched once more, then refused.
use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sluice_core::models::{RANGE_BYTES, ranges};

use crate::{ModelError, Progress, hub::Hub};

/// Ranges of one file fetched at once.
pub const PARALLEL_RANGES: usize = 4;
/// A connection that sends nothing for this long is dropped and the range retried.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FileJob {
    pub url: String,
    pub size: u64,
    /// The blob's final path.
    pub dest: PathBuf,
    /// The content's sha256 (hex), when known.
    pub sha256: Option<String>,
    /// The git blob id (hex sha1 of `blob <size>\0` + content), when known.
    pub git_sha1: Option<String>,
    pub what: String,
}

/// The ranges of an incomplete file and the bytes written to each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Partial {
    size: u64,
    ranges: Vec<(u64, u64, u64)>,
}

fn sidecar(incomplete: &Path) -> PathBuf {
    let mut s = incomplete.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn incomplete(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// Fetches `job` (unless its blob is already there), counting bytes into `progress`.
pub async fn fetch(hub: &Hub, job: &FileJob, token: Option<&str>, progress: &Progress) -> Result<(), ModelError> {
    if std::fs::metadata(&job.dest).is_ok_and(|m| m.len() == job.size) {
        progress.add(job.size);
        return Ok(());
    }
    for attempt in 0..2 {
        let part = download(hub, job, token, progress).await?;
        match verify(&part, job).await {
            Ok(()) => {
                std::fs::rename(&part, &job.dest).map_err(|e| ModelError::disk("finishing a file", e))?;
                let _ = std::fs::remove_file(sidecar(&part));
                return Ok(());
            }
            Err(why) => {
                let _ = std::fs::remove_file(&part);
                let _ = std::fs::remove_file(sidecar(&part));
                progress.sub(job.size);
                if attempt == 1 {
                    return Err(ModelError::Checksum(format!("{}: {why}", job.what)));
                }
                tracing::warn!(file = %job.what, %why, "a downloaded file does not match its digest; fetching it again");
            }
        }
    }
    unreachable!("the loop returns")
}

/// Downloads into `<dest>.incomplete`, resuming what an earlier run left; returns its path.
async fn download(hub: &Hub, job: &FileJob, token: Option<&str>, progress: &Progress) -> Result<PathBuf, ModelError> {
    let part = incomplete(&job.dest);
    let plan: Vec<(u64, u64)> =
        if job.size >= 2 * RANGE_BYTES { ranges(job.size, RANGE_BYTES) } else { vec![(0, job.size)] };
    // What an interrupted earlier run wrote, if it fetched the same file the same way.
    let earlier = std::fs::read(sidecar(&part))
        .ok()
        .and_then(|b| serde_json::from_slice::<Partial>(&b).ok())
        .filter(|p| p.size == job.size && p.ranges.len() == plan.len())
        .filter(|_| std::fs::metadata(&part).is_ok_and(|m| m.len() == job.size));
    let state = match earlier {
        Some(p) => {
            let kept: u64 = p.ranges.iter().map(|r| r.2).sum();
            tracing::info!(file = %job.what, kept, "resuming an interrupted download");
            p
        }
        None => {
            let f = std::fs::File::create(&part).map_err(|e| ModelError::disk("creating a file", e))?;
            f.set_len(job.size).map_err(|e| ModelError::disk("sizing a file", e))?;
            Partial { size: job.size, ranges: plan.iter().map(|(a, b)| (*a, *b, 0)).collect() }
        }
    };
    progress.add(state.ranges.iter().map(|r| r.2).sum());
    let file = Arc::new(
        std::fs::OpenOptions::new().write(true).open(&part).map_err(|e| ModelError::disk("opening a file", e))?,
    );
    let state = Arc::new(Mutex::new(state));
    // The bytes written per range, on disk every 200 ms while the ranges run.
    let keeper = {
        let (state, path) = (state.clone(), sidecar(&part));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                persist(&state, &path);
            }
        })
    };
    let work: Vec<usize> = (0..state.lock().unwrap_or_else(|p| p.into_inner()).ranges.len()).collect();
    let results: Vec<Result<(), ModelError>> = futures_util::stream::iter(work)
        .map(|k| range(hub, job, token, progress, &file, &state, k))
        .buffer_unordered(PARALLEL_RANGES)
        .collect()
        .await;
    keeper.abort();
    persist(&state, &sidecar(&part));
    for r in results {
        r?;
    }
    Ok(part)
}

fn persist(state: &Mutex<Partial>, path: &Path) {
    let json = serde_json::to_vec(&*state.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Fetches what is missing of range `k`, retrying network failures from where it stopped.
async fn range(
    hub: &Hub,
    job: &FileJob,
    token: Option<&str>,
    progress: &Progress,
    file: &std::fs::File,
    state: &Mutex<Partial>,
    k: usize,
) -> Result<(), ModelError> {
    let mut failures = 0u32;
    loop {
        let (start, end, written) = state.lock().unwrap_or_else(|p| p.into_inner()).ranges[k];
        let mut offset = start + written;
        if offset >= end {
            return Ok(());
        }
        let attempt = async {
            let resp = hub.get(&job.url, Some((offset, end)), token, &job.what).await?;
            if resp.status() == http::StatusCode::OK {
                // The server ignored the range: only a whole file from its first byte is usable.
                if offset != 0 || end != job.size {
                    return Err(ModelError::Refused(format!("{}: the server does not serve byte ranges", job.what)));
                }
            }
            let mut body = resp.into_body();
            loop {
                let frame = match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
                    Err(_) => {
                        return Err(ModelError::Network(format!(
                            "{}: no data for {} s",
                            job.what,
                            READ_TIMEOUT.as_secs()
                        )));
                    }
                    Ok(None) => break,
                    Ok(Some(f)) => f.map_err(|e| ModelError::Network(format!("{}: {e}", job.what)))?,
                };
                let Ok(data) = frame.into_data() else { continue };
                if offset + data.len() as u64 > end {
                    return Err(ModelError::Refused(format!("{}: the server sent more than asked", job.what)));
                }
                file.write_all_at(&data, offset).map_err(|e| ModelError::disk("writing a file", e))?;
                offset += data.len() as u64;
                progress.add(data.len() as u64);
                state.lock().unwrap_or_else(|p| p.into_inner()).ranges[k].2 = offset - start;
            }
            if offset < end {
                return Err(ModelError::Network(format!("{}: the connection ended early", job.what)));
            }
            Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(ModelError::Network(why)) if failures < 5 => {
                failures += 1;
                tracing::debug!(file = %job.what, %why, failures, "range interrupted; resuming it");
                tokio::time::sleep(Duration::from_millis(250 << failures.min(5))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks a downloaded file against what the hub said of it.
async fn verify(path: &Path, job: &FileJob) -> Result<(), String> {
    let (path, job) = (path.to_owned(), job.clone());
    tokio::task::spawn_blocking(move || {
        let len = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        if len != job.size {
            return Err(format!("{} bytes where {} were expected", len, job.size));
        }
        let want = match (&job.sha256, &job.git_sha1) {
            (Some(s), _) => (s.to_ascii_lowercase(), &ring::digest::SHA256, None),
            (None, Some(g)) => (g.to_ascii_lowercase(), &ring::digest::SHA1_FOR_LEGACY_USE_ONLY, Some(job.size)),
            (None, None) => return Ok(()),
        };
        let mut ctx = ring::digest::Context::new(want.1);
        if let Some(size) = want.2 {
            ctx.update(format!("blob {size}\0").as_bytes());
        }
        let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8 << 20];
        let mut at = 0u64;
        loop {
            let n = f.read_at(&mut buf, at).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            at += n as u64;
        }
        let got = crate::hex(ctx.finish().as_ref());
        if got == want.0 { Ok(()) } else { Err("the content does not match the digest the hub gave".into()) }
    })
    .await
    .map_err(|e| e.to_string())?
}
