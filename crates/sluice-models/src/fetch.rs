//! One file, fetched: in ranges of `RANGE_BYTES`, several at once, into `<blob>.incomplete`,
//! with the bytes written per range kept beside it (`<blob>.incomplete.json`, every 200 ms), so
//! an interruption (a lost connection, a kill -9 of the platform) resumes where each range
//! stopped instead of starting over. Verified as it arrives: a thread hashes the file's prefix
//! that every range has written so far (from the page cache, while later ranges download), and
//! the digest is compared once the last byte is in: the sha256 the hub gave (LFS files), or the
//! git blob id (small files), or else the size; a mismatch is fetched once more, then refused.
use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
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
        let (part, digest) = download(hub, job, token, progress).await?;
        match check(&part, job, digest) {
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

/// Downloads into `<dest>.incomplete`, resuming what an earlier run left; returns its path and,
/// when the hub gave a digest to check, the digest of what was written.
async fn download(
    hub: &Hub,
    job: &FileJob,
    token: Option<&str>,
    progress: &Progress,
) -> Result<(PathBuf, Option<String>), ModelError> {
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
    let hasher = expected(job).map(|(_, alg, header)| Hasher::start(&part, alg, header, state.clone()));
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
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e); // (the hasher, dropped, ends)
    }
    let digest = match hasher {
        Some(h) => Some(h.finish().await.map_err(|e| ModelError::disk("reading a downloaded file", e))?),
        None => None,
    };
    Ok((part, digest))
}

/// The digest the hub gave for a file, as (hex, algorithm, size for git's `blob <size>\0`
/// header); none for a file known only by its size.
fn expected(job: &FileJob) -> Option<(String, &'static ring::digest::Algorithm, Option<u64>)> {
    match (&job.sha256, &job.git_sha1) {
        (Some(s), _) => Some((s.to_ascii_lowercase(), &ring::digest::SHA256, None)),
        (None, Some(g)) => Some((g.to_ascii_lowercase(), &ring::digest::SHA1_FOR_LEGACY_USE_ONLY, Some(job.size))),
        (None, None) => None,
    }
}

/// How far a file is written without a gap: the ranges in order, up to the first unfinished one.
fn written_prefix(p: &Partial) -> u64 {
    for &(start, end, written) in &p.ranges {
        if start + written < end {
            return start + written;
        }
    }
    p.size
}

/// A thread that hashes a file being downloaded, following its written prefix. Dropped (the
/// download failed, or was itself dropped), it tells the thread to stop at once.
struct Hasher {
    /// The download ended: every write is in, so the thread hashes up to the end and stops.
    ended: Arc<AtomicBool>,
    /// Nobody wants the digest any more.
    cancel: Arc<AtomicBool>,
    /// The thread, once it runs: woken when the download ends, so that a file's last bytes are
    /// hashed at once rather than after its next poll.
    thread: Arc<std::sync::OnceLock<std::thread::Thread>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<Option<String>>>>,
}

impl Hasher {
    fn start(
        path: &Path,
        alg: &'static ring::digest::Algorithm,
        header: Option<u64>,
        state: Arc<Mutex<Partial>>,
    ) -> Hasher {
        let (ended, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let thread = Arc::new(std::sync::OnceLock::new());
        let (path, end, quit, me) = (path.to_owned(), ended.clone(), cancel.clone(), thread.clone());
        let done = tokio::task::spawn_blocking(move || {
            let _ = me.set(std::thread::current());
            let mut ctx = ring::digest::Context::new(alg);
            if let Some(size) = header {
                ctx.update(format!("blob {size}\0").as_bytes());
            }
            let f = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 8 << 20];
            let mut at = 0u64;
            loop {
                if quit.load(Ordering::Acquire) {
                    return Ok(None);
                }
                // Read before the state: once it says ended, the state read after it is final.
                let ended = end.load(Ordering::Acquire);
                let (upto, size) = {
                    let p = state.lock().unwrap_or_else(|p| p.into_inner());
                    (written_prefix(&p), p.size)
                };
                if upto > at {
                    let n = (upto - at).min(buf.len() as u64) as usize;
                    f.read_exact_at(&mut buf[..n], at)?;
                    ctx.update(&buf[..n]);
                    at += n as u64;
                } else if at >= size {
                    return Ok(Some(crate::hex(ctx.finish().as_ref())));
                } else if ended {
                    return Ok(None);
                } else {
                    std::thread::park_timeout(Duration::from_millis(5));
                }
            }
        });
        Hasher { ended, cancel, thread, done: Some(done) }
    }

    fn wake(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The digest of the whole file, once every range is written (called after the last write).
    async fn finish(mut self) -> std::io::Result<String> {
        self.wake(&self.ended);
        let Some(done) = self.done.take() else { return Err(std::io::Error::other("already finished")) };
        match done.await {
            Ok(Ok(Some(d))) => Ok(d),
            Ok(Ok(None)) => Err(std::io::Error::other("the file was not written to its end")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // (After `finish` the thread has ended already; while `finish` is awaited and dropped
        // itself, this stops the thread.)
        self.wake(&self.cancel);
    }
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

/// Checks a downloaded file against what the hub said of it: its size, and its digest as
/// hashed while it downloaded.
fn check(path: &Path, job: &FileJob, digest: Option<String>) -> Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len != job.size {
        return Err(format!("{} bytes where {} were expected", len, job.size));
    }
    match (expected(job), digest) {
        (None, _) => Ok(()),
        (Some((want, _, _)), Some(got)) if got == want => Ok(()),
        (Some(_), _) => Err("the content does not match the digest the hub gave".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_prefix_stops_at_the_first_unfinished_range() {
        type Ranges = [(u64, u64, u64)];
        let p = |ranges: &Ranges| Partial { size: 30, ranges: ranges.to_vec() };
        let cases: &[(&Ranges, u64)] = &[
            (&[(0, 10, 0), (10, 20, 0), (20, 30, 0)], 0),
            // The first range half done, later ones further: only the first half counts.
            (&[(0, 10, 5), (10, 20, 10), (20, 30, 3)], 5),
            (&[(0, 10, 10), (10, 20, 4), (20, 30, 10)], 14),
            (&[(0, 10, 10), (10, 20, 10), (20, 30, 10)], 30),
            (&[(0, 30, 30)], 30),
        ];
        for (ranges, want) in cases {
            assert_eq!(written_prefix(&p(ranges)), *want, "{ranges:?}");
        }
        assert_eq!(written_prefix(&Partial { size: 0, ranges: vec![(0, 0, 0)] }), 0);
    }

    /// The hasher follows ranges written out of order and gives the digest of the whole file,
    /// as one pass over the finished file would; git's blob header included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_while_ranges_arrive_equals_hashing_the_finished_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..(20u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let size = content.len() as u64;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let cut = [0, 7 << 20, 13 << 20, size];
        let state = Arc::new(Mutex::new(Partial { size, ranges: (0..3).map(|k| (cut[k], cut[k + 1], 0)).collect() }));
        for (alg, header) in [(&ring::digest::SHA256, None), (&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, Some(size))] {
            for r in state.lock().unwrap().ranges.iter_mut() {
                r.2 = 0;
            }
            let h = Hasher::start(&path, alg, header, state.clone());
            // The last range first, then the first, then the middle, in 1 MiB writes.
            for k in [2usize, 0, 1] {
                let (start, end, _) = state.lock().unwrap().ranges[k];
                let mut at = start;
                while at < end {
                    let n = (1u64 << 20).min(end - at);
                    f.write_all_at(&content[at as usize..(at + n) as usize], at).unwrap();
                    at += n;
                    state.lock().unwrap().ranges[k].2 = at - start;
                    tokio::task::yield_now().await;
                }
            }
            let mut whole = ring::digest::Context::new(alg);
            if let Some(s) = header {
                whole.update(format!("blob {s}\0").as_bytes());
            }
            whole.update(&content);
            assert_eq!(h.finish().await.unwrap(), crate::hex(whole.finish().as_ref()));
        }
        // A download that fails midway: the thread ends without a digest.
        state.lock().unwrap().ranges[1].2 = 0;
        let h = Hasher::start(&path, &ring::digest::SHA256, None, state.clone());
        assert!(h.finish().await.is_err());
    }
}
