//! Cached models (issue 18): when an endpoint is created or its models change, each model is
//! staged into the node's cache ahead of need, as images are prewarmed: one job per model
//! (several endpoints listing it share it), its state and progress shown by the API, and a
//! worker of an endpoint is not started before its models are ready (the plan keeps it pending
//! with the staging's progress as its reason), so no GPU time is billed for a download.
//!
//! With the local runtimes every declared node is this machine and shares its one cache, so a
//! model's state is reported for each node of the data center. On Kubernetes each worker Pod
//! stages its models itself (an init container into its node's cache) and nothing is gated here.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sluice_core::{
    Millis, WorkerId,
    endpoint::EndpointSpec,
    models::{CacheEntry, ModelSource, ModelSpec, evict, may_hold, staging_reason},
    placement::Node,
};
use sluice_models::{Cache, Hub, ModelError, Progress, Staged, fingerprint};
use sluice_runtime::ModelMount;
use tokio::sync::Notify;

use crate::now;

/// Where a model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StageState {
    Pending,
    Downloading,
    Ready,
    Failed(String),
    /// Each worker stages its own (Kubernetes: an init container on its node).
    Worker,
}

impl StageState {
    pub fn name(&self) -> &'static str {
        match self {
            StageState::Pending => "pending",
            StageState::Downloading => "downloading",
            StageState::Ready => "ready",
            StageState::Failed(_) => "failed",
            StageState::Worker => "staged_by_worker",
        }
    }
}

struct Job {
    state: StageState,
    progress: Arc<Progress>,
    started: Millis,
    ready_at: Option<Millis>,
    staged: Option<Staged>,
    /// A failure that may pass: when to try again.
    retry_at: Option<Millis>,
}

impl Job {
    fn new() -> Job {
        Job {
            state: StageState::Pending,
            progress: Progress::new(),
            started: now(),
            ready_at: None,
            staged: None,
            retry_at: None,
        }
    }
}

/// A model as the API shows it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub spec: ModelSpec,
    pub state: StageState,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second since the staging began.
    pub rate: f64,
    pub commit: Option<String>,
    pub ready_at: Option<Millis>,
}

/// How models are staged.
#[derive(Debug, Clone)]
pub struct ModelsConfig {
    /// The cache (none: workers stage their own, as Kubernetes Pods do).
    pub cache_dir: Option<std::path::PathBuf>,
    /// The hub or a mirror.
    pub hf_endpoint: String,
    /// Eviction keeps the cache under this (0: no limit).
    pub max_bytes: u64,
}

impl Default for ModelsConfig {
    /// No cache: nothing is staged (workers stage their own).
    fn default() -> Self {
        ModelsConfig { cache_dir: None, hf_endpoint: sluice_models::hub::DEFAULT_ENDPOINT.into(), max_bytes: 0 }
    }
}

pub struct Models {
    cache: Option<Arc<Cache>>,
    hub: Hub,
    max_bytes: u64,
    nodes: Vec<Node>,
    jobs: Mutex<HashMap<JobKey, Job>>,
    /// The models some endpoint lists: never evicted.
    listed: Mutex<Vec<JobKey>>,
    /// The cached models each running worker was started with (cache keys): never evicted
    /// either, though its endpoint may list others now (an old version still serving, or
    /// draining, during a rolling update).
    in_use: Mutex<HashMap<WorkerId, Vec<String>>>,
    wake: Arc<Notify>,
}

/// One staging: a model, for whoever holds one token (see [`sluice_models::fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct JobKey {
    spec: ModelSpec,
    access: String,
}

/// A failed staging that may pass on a later try (the network, the disk) is tried again after
/// this long; a refusal or a checksum mismatch waits for the endpoint to change.
const RETRY_MS: u64 = 60_000;

/// The endpoint's token for gated and private repositories.
fn token(e: &EndpointSpec) -> Option<&str> {
    e.env.get("HF_TOKEN").map(String::as_str).filter(|t| !t.is_empty())
}

fn keys(e: &EndpointSpec) -> Vec<JobKey> {
    let access = fingerprint(token(e));
    e.models.iter().map(|m| JobKey { spec: m.clone(), access: access.clone() }).collect()
}

impl Models {
    pub fn new(cfg: &ModelsConfig, tls: Arc<rustls::ClientConfig>, nodes: Vec<Node>, wake: Arc<Notify>) -> Arc<Models> {
        let cache = cfg.cache_dir.as_ref().and_then(|d| match Cache::open(d) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, dir = %d.display(), "the model cache cannot be opened; models will not be staged");
                None
            }
        });
        Arc::new(Models {
            cache,
            hub: Hub::new(&cfg.hf_endpoint, tls),
            max_bytes: cfg.max_bytes,
            nodes,
            jobs: Mutex::default(),
            listed: Mutex::default(),
            in_use: Mutex::default(),
            wake,
        })
    }

    /// The hub (or mirror) models come from.
    pub fn hf_endpoint(&self) -> &str {
        self.hub.base()
    }

    /// Whether models are staged here (not by the workers themselves, as on Kubernetes).
    pub fn local(&self) -> bool {
        self.cache.is_some()
    }

    /// Starts staging an endpoint's models that are neither staged nor staging (a failure that
    /// may pass is tried again after a while).
    pub fn stage(self: &Arc<Self>, e: &EndpointSpec) {
        let Some(cache) = self.cache.clone() else { return };
        let t = now();
        for key in keys(e) {
            {
                let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                if jobs.get(&key).is_some_and(|j| j.retry_at.is_none_or(|r| r > t)) {
                    continue;
                }
                jobs.insert(key.clone(), Job::new());
            }
            let (me, cache, token) = (self.clone(), cache.clone(), token(e).map(str::to_owned));
            tokio::spawn(async move {
                let progress = me.set(&key, |j| {
                    j.state = StageState::Downloading;
                    j.progress.clone()
                });
                let what = key.spec.source.display();
                tracing::info!(model = %what, "staging a model");
                let result = cache.stage(&me.hub, &key.spec, token.as_deref(), &progress, now()).await;
                match result {
                    Ok(staged) => {
                        tracing::info!(model = %what, bytes = staged.bytes, "model staged");
                        me.set(&key, |j| {
                            j.state = StageState::Ready;
                            j.ready_at = Some(now());
                            j.staged = Some(staged);
                        });
                        me.evict(&cache);
                    }
                    Err(e) => {
                        tracing::warn!(model = %what, error = %e, "model staging failed");
                        let retry = matches!(e, ModelError::Network(_) | ModelError::Disk(_));
                        me.set(&key, |j| {
                            j.state = StageState::Failed(e.to_string());
                            j.retry_at = retry.then(|| now().plus_ms(RETRY_MS));
                        });
                    }
                }
                me.wake.notify_one();
            });
        }
    }

    fn set<T>(&self, key: &JobKey, f: impl FnOnce(&mut Job) -> T) -> T {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        f(jobs.entry(key.clone()).or_insert_with(Job::new))
    }

    /// The workers running now (started, adopted, draining): the models of any other worker
    /// are no longer in use.
    pub fn set_running<'a>(&self, workers: impl Iterator<Item = &'a WorkerId>) {
        let live: std::collections::HashSet<&WorkerId> = workers.collect();
        self.in_use.lock().unwrap_or_else(|p| p.into_inner()).retain(|w, _| live.contains(w));
    }

    /// The endpoints there are now: their models are never evicted, a staging no endpoint
    /// wants any more is forgotten (its files stay cached until evicted), and the cache is
    /// brought under its limit.
    pub fn set_listed(&self, endpoints: &[&EndpointSpec]) {
        let listed: Vec<JobKey> = endpoints.iter().flat_map(|e| keys(e)).collect();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, j| listed.contains(k) || j.state == StageState::Downloading);
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = listed;
        // A model no endpoint lists any more may now make room.
        if let Some(cache) = &self.cache {
            self.evict(cache);
        }
    }

    /// Keeps the cache under its limit: least recently used first, never a listed model.
    fn evict(&self, cache: &Cache) {
        if self.max_bytes == 0 {
            return;
        }
        let (pinned, unresolved): (Vec<String>, Vec<ModelSource>) = {
            let listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            // What is staging or staged for anyone is in use too, and what a running worker
            // was started with.
            let in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
            let pinned = jobs
                .iter()
                .filter(|(k, j)| listed.contains(k) || j.state == StageState::Downloading)
                .filter_map(|(_, j)| j.staged.as_ref().map(|st| st.key.clone()))
                .chain(in_use.values().flatten().cloned())
                .collect();
            // A listed model not resolved yet (after a restart, until it is looked up again)
            // may be any cached revision of it: all of them stay until it is.
            let unresolved = listed
                .iter()
                .filter(|k| jobs.get(k).is_none_or(|j| j.staged.is_none()))
                .map(|k| k.spec.source.clone())
                .collect();
            (pinned, unresolved)
        };
        let entries: Vec<CacheEntry> = cache
            .entries()
            .into_iter()
            .map(|(key, bytes, last_used)| CacheEntry {
                pinned: pinned.contains(&key) || unresolved.iter().any(|s| may_hold(&key, s)),
                key,
                bytes,
                last_used,
            })
            .collect();
        for key in evict(&entries, self.max_bytes) {
            tracing::info!(model = %key, "evicting a model from the cache (least recently used)");
            if let Err(e) = cache.remove(&key) {
                tracing::warn!(model = %key, error = %e, "could not evict a model");
            }
            self.jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, j| j.staged.as_ref().is_none_or(|s| s.key != key));
        }
    }

    /// Whether a worker of this endpoint may start: `Err` is the pending reason (the
    /// staging's progress, or why it failed).
    pub fn ready(&self, e: &EndpointSpec) -> Result<(), String> {
        if self.cache.is_none() || e.models.is_empty() {
            return Ok(());
        }
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let (mut done, mut total) = (0u64, 0u64);
        let mut waiting = false;
        for k in keys(e) {
            match jobs.get(&k) {
                Some(Job { state: StageState::Ready, .. }) => {}
                Some(Job { state: StageState::Failed(why), .. }) => {
                    return Err(format!("model {} could not be staged: {why}", k.spec.source.display()));
                }
                Some(j) => {
                    let (d, t) = j.progress.get();
                    done += d;
                    total += t;
                    waiting = true;
                }
                None => waiting = true,
            }
        }
        if waiting { Err(staging_reason(done, total)) } else { Ok(()) }
    }

    /// What a worker of this endpoint mounts: the cache, and where each model lies in it (in
    /// the order the endpoint lists them). They count as used now.
    pub fn mount(&self, worker: &WorkerId, e: &EndpointSpec) -> Option<ModelMount> {
        if e.models.is_empty() {
            return None;
        }
        let Some(cache) = &self.cache else {
            // The Pod stages them: one `sluice models fetch` per model, in an init container.
            let fetch = e
                .models
                .iter()
                .map(|m| {
                    let mut args = vec![m.source.display()];
                    for p in &m.include {
                        args.extend(["--include".to_owned(), p.clone()]);
                    }
                    for p in &m.exclude {
                        args.extend(["--exclude".to_owned(), p.clone()]);
                    }
                    args
                })
                .collect();
            return Some(ModelMount { dir: None, paths: Vec::new(), fetch, hf_endpoint: self.hub.base().into() });
        };
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let (mut paths, mut used) = (Vec::new(), Vec::new());
        for k in keys(e) {
            if let Some(st) = jobs.get(&k).and_then(|j| j.staged.as_ref()) {
                cache.touch(&st.key, now());
                paths.push(st.path.clone());
                used.push(st.key.clone());
            }
        }
        self.in_use.lock().unwrap_or_else(|p| p.into_inner()).insert(worker.clone(), used);
        Some(ModelMount {
            dir: Some(cache.root().to_owned()),
            paths,
            fetch: Vec::new(),
            hf_endpoint: self.hub.base().into(),
        })
    }

    /// Where an endpoint's models stand, in the order it lists them.
    pub fn status(&self, e: &EndpointSpec) -> Vec<ModelStatus> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        keys(e)
            .into_iter()
            .map(|k| match jobs.get(&k) {
                Some(j) => {
                    let (done, total) = j.progress.get();
                    let secs = j.ready_at.unwrap_or_else(now).saturating_sub(j.started) as f64 / 1000.0;
                    ModelStatus {
                        spec: k.spec,
                        state: j.state.clone(),
                        bytes_done: done,
                        bytes_total: total,
                        rate: if secs > 0.0 { done as f64 / secs } else { 0.0 },
                        commit: j.staged.as_ref().and_then(|st| st.commit.clone()),
                        ready_at: j.ready_at,
                    }
                }
                None => ModelStatus {
                    spec: k.spec,
                    state: if self.cache.is_some() { StageState::Pending } else { StageState::Worker },
                    bytes_done: 0,
                    bytes_total: 0,
                    rate: 0.0,
                    commit: None,
                    ready_at: None,
                },
            })
            .collect()
    }

    /// The nodes a model is staged on for an endpoint of `data_center`.
    pub fn nodes_of(&self, data_center: &str) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter(|n| n.data_center == data_center)
            .map(|n| (n.name.clone(), n.data_center.clone()))
            .collect()
    }
}

/// The revision a source names, for the view.
pub fn revision(s: &ModelSource) -> Option<String> {
    match s {
        ModelSource::Hub { revision, .. } => Some(revision.clone()),
        ModelSource::Url { .. } => None,
    }
}
