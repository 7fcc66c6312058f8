//! The model cache on disk, in the Hugging Face hub cache's layout, so `huggingface_hub`,
//! transformers, diffusers, vLLM and TGI read it offline (`HF_HUB_CACHE` pointing at `hub/`):
//!
//! ```text
//! <root>/hub/models--org--name/blobs/<etag>             content, named by its sha256 (LFS) or git blob id
//! <root>/hub/models--org--name/snapshots/<commit>/<path> -> ../../blobs/<etag>
//! <root>/hub/models--org--name/refs/<revision>          the commit a branch or tag named
//! <root>/urls/<hash of the URL>/<file name>             files from plain URLs
//! <root>/index.json                                      what is staged, its size, when last used
//! ```
//!
//! A blob is stored once per repository and fetched once even when several stagings want it at
//! the same moment (a lock per blob).
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_core::{
    Millis,
    models::{ModelSource, ModelSpec, file_name, repo_folder, selects},
};

use crate::{
    ModelError, Progress,
    fetch::{FileJob, fetch},
    hub::Hub,
};

/// Files of one model fetched at once (each in up to `PARALLEL_RANGES` ranges).
pub const PARALLEL_FILES: usize = 4;

/// A model staged in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// What it is kept under: `hf://org/name@<commit>` (plus its patterns), or the URL.
    pub key: String,
    /// The commit a hub revision resolved to.
    pub commit: Option<String>,
    pub bytes: u64,
    /// Where a worker finds it, relative to the cache's root: the snapshot folder of a hub
    /// model, the file of a URL.
    pub path: String,
}

/// What the index remembers of a staged model.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    bytes: u64,
    last_used: u64,
    /// The snapshot folder (hub) or the file's folder (URL), relative to the root.
    dir: String,
    /// Who the hub let read it: token fingerprints (`""`: no token). When the hub cannot be
    /// reached, a staged copy serves only these.
    #[serde(default)]
    granted: Vec<String>,
}

pub struct Cache {
    root: PathBuf,
    index: Mutex<HashMap<String, Entry>>,
    blob_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("root", &self.root).finish_non_exhaustive()
    }
}

/// The key a model is kept under once resolved.
pub fn key(spec: &ModelSpec, commit: Option<&str>) -> String {
    let base = match (&spec.source, commit) {
        (ModelSource::Hub { repo, .. }, Some(c)) => format!("hf://{repo}@{c}"),
        (s, _) => s.display(),
    };
    if spec.include.is_empty() && spec.exclude.is_empty() {
        base
    } else {
        format!("{base} include={:?} exclude={:?}", spec.include, spec.exclude)
    }
}

/// A short stable name for a URL's folder.
fn url_dir(url: &str) -> String {
    crate::hex(&ring::digest::digest(&ring::digest::SHA256, url.as_bytes()).as_ref()[..8])
}

impl Cache {
    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Arc<Cache>, ModelError> {
        std::fs::create_dir_all(root.join("hub")).map_err(|e| ModelError::disk("creating the model cache", e))?;
        let index = std::fs::read(root.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Arc::new(Cache { root: root.to_owned(), index: Mutex::new(index), blob_locks: Mutex::default() }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What `HF_HUB_CACHE` points at.
    pub fn hub_dir(&self) -> PathBuf {
        self.root.join("hub")
    }

    fn save_index(&self, index: &HashMap<String, Entry>) {
        let tmp = self.root.join("index.json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec(index).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, self.root.join("index.json"));
        }
    }

    /// Marks a staged model used now (eviction removes the least recently used first).
    pub fn touch(&self, key: &str, now: Millis) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = index.get_mut(key) {
            e.last_used = now.0;
            self.save_index(&index);
        }
    }

    /// Every staged model: (key, bytes, last used).
    pub fn entries(&self) -> Vec<(String, u64, Millis)> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.iter().map(|(k, e)| (k.clone(), e.bytes, Millis(e.last_used))).collect()
    }

    /// Whether `key` is staged.
    pub fn has(&self, key: &str) -> bool {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key)
    }

    fn lock_for(&self, blob: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.blob_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(blob.to_owned()).or_default().clone()
    }

    /// Stages a model (fetching what is missing), counting bytes into `progress`.
    pub async fn stage(
        &self,
        hub: &Hub,
        spec: &ModelSpec,
        token: Option<&str>,
        progress: &Progress,
        now: Millis,
    ) -> Result<Staged, ModelError> {
        match &spec.source {
            ModelSource::Hub { repo, revision } => {
                match self.stage_hub(hub, spec, repo, revision, token, progress, now).await {
                    // The hub is out of reach: what was staged before (for the same access)
                    // still serves, so workers keep starting through a hub outage or a restart.
                    Err(ModelError::Network(why)) => {
                        self.staged_before(spec, repo, revision, token, progress, now).ok_or(ModelError::Network(why))
                    }
                    other => other,
                }
            }
            ModelSource::Url { url } => self.stage_url(hub, spec, url, progress, now).await,
        }
    }

    /// A hub model staged by an earlier staging with this token's access, if its snapshot is
    /// still whole.
    fn staged_before(
        &self,
        spec: &ModelSpec,
        repo: &str,
        revision: &str,
        token: Option<&str>,
        progress: &Progress,
        now: Millis,
    ) -> Option<Staged> {
        let repo_dir = self.hub_dir().join(repo_folder(repo));
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision))
            .map_or_else(|_| revision.to_owned(), |c| c.trim().to_owned());
        let key = key(spec, Some(&commit));
        let access = crate::fingerprint(token);
        let entry = {
            let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            index.get(&key).filter(|e| e.granted.contains(&access)).cloned()?
        };
        // Every link of the snapshot must still lead to a blob.
        let snapshot = self.root.join(&entry.dir);
        if !(snapshot.is_dir() && links_resolve(&snapshot)) {
            return None;
        }
        tracing::warn!(model = %key, "the hub cannot be reached; using the copy staged before");
        progress.total.store(entry.bytes, std::sync::atomic::Ordering::Relaxed);
        progress.add(entry.bytes);
        self.touch(&key, now);
        Some(Staged { key, commit: Some(commit), bytes: entry.bytes, path: entry.dir })
    }

    #[allow(clippy::too_many_arguments)]
    async fn stage_hub(
        &self,
        hub: &Hub,
        spec: &ModelSpec,
        repo: &str,
        revision: &str,
        token: Option<&str>,
        progress: &Progress,
        now: Millis,
    ) -> Result<Staged, ModelError> {
        let commit = hub.commit(repo, revision, token).await?;
        let files: Vec<_> =
            hub.files(repo, &commit, token).await?.into_iter().filter(|f| selects(spec, &f.path)).collect();
        if files.is_empty() {
            return Err(ModelError::Refused(format!("hf://{repo}@{revision}: no file matches the model's patterns")));
        }
        let total: u64 = files.iter().map(|f| f.size).sum();
        progress.total.store(total, std::sync::atomic::Ordering::Relaxed);
        let repo_dir = self.hub_dir().join(repo_folder(repo));
        let (blobs, snapshot) = (repo_dir.join("blobs"), repo_dir.join("snapshots").join(&commit));
        for d in [&blobs, &snapshot, &repo_dir.join("refs")] {
            std::fs::create_dir_all(d).map_err(|e| ModelError::disk("creating the model cache", e))?;
        }
        // The content is the caller's to read (cached blobs are served without asking the hub).
        hub.check_access(&hub.resolve_url(repo, &commit, &files[0].path), token, &format!("{repo}@{revision}")).await?;
        // Owned jobs first: a stream over borrowed files trips the `Send` check of spawned tasks.
        let jobs: Vec<FileJob> = files
            .iter()
            .map(|f| FileJob {
                url: hub.resolve_url(repo, &commit, &f.path),
                size: f.size,
                dest: blobs.join(&f.etag),
                sha256: f.sha256.clone(),
                git_sha1: f.sha256.is_none().then(|| f.etag.clone()),
                what: format!("{repo}/{}", f.path),
            })
            .collect();
        let results: Vec<Result<(), ModelError>> = futures_util::stream::iter(jobs)
            .map(|job| async move {
                let lock = self.lock_for(&job.dest);
                let _one = lock.lock().await;
                fetch(hub, &job, token, progress).await
            })
            .buffer_unordered(PARALLEL_FILES)
            .collect()
            .await;
        for r in results {
            r?;
        }
        // The snapshot: one link per file, to its blob (relative, as the hub cache has them).
        for f in &files {
            let link = snapshot.join(&f.path);
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ModelError::disk("creating a snapshot", e))?;
            }
            let depth = f.path.matches('/').count();
            let target = PathBuf::from(format!("{}../../blobs/{}", "../".repeat(depth), f.etag));
            if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).map_err(|e| ModelError::disk("linking a snapshot", e))?;
            }
        }
        if spec.include.is_empty() && spec.exclude.is_empty() {
            // The listing, as huggingface_hub keeps it: offline, it then checks the snapshot
            // is complete. Not for a part of a repository (it would look incomplete).
            write_tree(&repo_dir, &commit, &files)?;
        }
        if revision != commit {
            let r = repo_dir.join("refs").join(revision);
            if let Some(parent) = r.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ModelError::disk("writing a ref", e))?;
            }
            std::fs::write(&r, &commit).map_err(|e| ModelError::disk("writing a ref", e))?;
        }
        let key = key(spec, Some(&commit));
        let dir = snapshot.strip_prefix(&self.root).unwrap_or(&snapshot).display().to_string();
        self.record(&key, total, dir.clone(), now, Some(&crate::fingerprint(token)));
        Ok(Staged { key, commit: Some(commit), bytes: total, path: dir })
    }

    async fn stage_url(
        &self,
        hub: &Hub,
        spec: &ModelSpec,
        url: &str,
        progress: &Progress,
        now: Millis,
    ) -> Result<Staged, ModelError> {
        let rel = |p: &Path| p.strip_prefix(&self.root).unwrap_or(p).display().to_string();
        let name = file_name(url).unwrap_or("file");
        let dir = self.root.join("urls").join(url_dir(url));
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::disk("creating the model cache", e))?;
        let dest = dir.join(name);
        let key = key(spec, None);
        if let Ok(m) = std::fs::metadata(&dest) {
            progress.total.store(m.len(), std::sync::atomic::Ordering::Relaxed);
            progress.add(m.len());
            self.record(&key, m.len(), rel(&dir), now, None);
            return Ok(Staged { key, commit: None, bytes: m.len(), path: rel(&dest) });
        }
        // The size first (a range of one byte), then the file in ranges like any other.
        let probe = hub.get(url, Some((0, 1)), None, url).await?;
        let size = probe
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| probe.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok())
            .ok_or_else(|| ModelError::Refused(format!("{url}: the server does not say the file's size")))?;
        drop(probe);
        progress.total.store(size, std::sync::atomic::Ordering::Relaxed);
        let job =
            FileJob { url: url.to_owned(), size, dest: dest.clone(), sha256: None, git_sha1: None, what: url.into() };
        let lock = self.lock_for(&dest);
        let _one = lock.lock().await;
        fetch(hub, &job, None, progress).await?;
        self.record(&key, size, rel(&dir), now, None);
        Ok(Staged { key, commit: None, bytes: size, path: rel(&dest) })
    }

    fn record(&self, key: &str, bytes: u64, dir: String, now: Millis, access: Option<&str>) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut granted = index.remove(key).map(|e| e.granted).unwrap_or_default();
        if let Some(a) = access.filter(|a| !granted.iter().any(|g| g == a)) {
            granted.push(a.to_owned());
        }
        index.insert(key.to_owned(), Entry { bytes, last_used: now.0, dir, granted });
        self.save_index(&index);
    }

    /// Removes a staged model: its snapshot (or file), and the blobs no other snapshot of its
    /// repository links to.
    pub fn remove(&self, key: &str) -> Result<(), ModelError> {
        let Some(e) = self.index.lock().unwrap_or_else(|p| p.into_inner()).remove(key) else { return Ok(()) };
        let dir = self.root.join(&e.dir);
        if dir.starts_with(self.root.join("urls")) {
            let _ = std::fs::remove_dir_all(&dir);
        } else if let Some(repo_dir) = dir.parent().and_then(Path::parent) {
            // Another staged model may share the snapshot (other patterns, same commit).
            let shared = self.index.lock().unwrap_or_else(|p| p.into_inner()).values().any(|o| o.dir == e.dir);
            if !shared {
                let _ = std::fs::remove_dir_all(&dir);
                let mut kept: std::collections::HashSet<std::ffi::OsString> = Default::default();
                for snap in std::fs::read_dir(repo_dir.join("snapshots")).into_iter().flatten().flatten() {
                    collect_targets(&snap.path(), &mut kept);
                }
                for b in std::fs::read_dir(repo_dir.join("blobs")).into_iter().flatten().flatten() {
                    // A blob still being fetched (for another staging) has no link yet.
                    let partial = b.file_name().to_string_lossy().contains(".incomplete");
                    if !partial && !kept.contains(&b.file_name()) {
                        let _ = std::fs::remove_file(b.path());
                    }
                }
            }
        }
        self.save_index(&self.index.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(())
    }
}

/// `trees/<commit>.json`: `{"format_version": 1, "files": {path: {size, blob_id, lfs_sha256?,
/// lfs_size?}}}`.
fn write_tree(repo_dir: &Path, commit: &str, files: &[crate::hub::HubFile]) -> Result<(), ModelError> {
    let entries: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"size": f.size, "blob_id": f.blob_id});
            if let Some(sha) = &f.sha256 {
                v["lfs_sha256"] = sha.clone().into();
                v["lfs_size"] = f.size.into();
            }
            (f.path.clone(), v)
        })
        .collect();
    let dir = repo_dir.join("trees");
    std::fs::create_dir_all(&dir).map_err(|e| ModelError::disk("writing a tree", e))?;
    let body = serde_json::json!({"format_version": 1, "files": entries});
    let tmp = dir.join(format!("{commit}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&body).unwrap_or_default())
        .and_then(|()| std::fs::rename(&tmp, dir.join(format!("{commit}.json"))))
        .map_err(|e| ModelError::disk("writing a tree", e))
}

/// Whether every link under `dir` leads to a file.
fn links_resolve(dir: &Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().all(|e| {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => std::fs::metadata(&p).is_ok_and(|t| t.is_file()),
            Ok(m) if m.is_dir() => links_resolve(&p),
            Ok(_) => true,
            Err(_) => false,
        }
    })
}

/// The blob names the links under `dir` point to.
fn collect_targets(dir: &Path, out: &mut std::collections::HashSet<std::ffi::OsString>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if let Ok(t) = std::fs::read_link(&p) {
            if let Some(n) = t.file_name() {
                out.insert(n.to_owned());
            }
        } else if p.is_dir() {
            collect_targets(&p, out);
        }
    }
}
