//! Worker runtimes: the [`WorkerRuntime`] trait and its implementations. The local-process
//! runtime is the embedded default; Docker and (feature `k8s`) Kubernetes are the others.
//!
//! **Only this crate starts, signals or lists worker processes and containers**, and only the
//! reconciler in `sluice-control` calls it.
#![forbid(unsafe_code)]

pub mod docker;
mod error;
#[cfg(feature = "k8s")]
pub mod kubernetes;
#[cfg(feature = "k8s")]
pub mod kubernetes_models;
pub mod process;
pub mod sim;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

pub use error::Error;
use futures_util::future::BoxFuture;
use sluice_core::{EndpointId, RegistryAuth, RuntimeKind, WorkerId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a runtime needs to launch one worker.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub worker: WorkerId,
    pub endpoint: EndpointId,
    pub shell: String,
    pub start_command: Option<String>,
    pub image: Option<String>,
    /// The endpoint's own variables (the runtime adds `PORT`, GPU and `SLUICE_*` variables).
    pub env: BTreeMap<String, String>,
    /// Assigned GPU indices on the node.
    pub gpus: Vec<u32>,
    /// The port the worker listens on inside its container (process runtime: ignored, the
    /// platform picks a free host port).
    pub http_port: u16,
    pub volume: Option<VolumeMount>,
    /// Private registry credentials for pulling `image`.
    pub registry: Option<RegistryAuth>,
    /// The path that answers 200 once the worker is ready (a cluster's readiness probe uses it).
    pub health_path: String,
    /// The GPU type and data center the worker was placed for (a cluster selects nodes by them).
    pub gpu_type: String,
    pub data_center: String,
    /// Share the host's network (containers only): a worker that must reach the platform on a
    /// loopback address (a RunPod-protocol worker) cannot from a bridge network. Nothing is
    /// published; the worker's port is the host's `http_port`.
    pub host_network: bool,
    /// The model cache (issue 18), when the endpoint lists models.
    pub models: Option<ModelMount>,
}

/// What a worker of an endpoint with models reads them from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelMount {
    /// The cache on this host, staged by the control plane: processes get its path, containers
    /// a read-only bind mount at [`MODELS_MOUNT`]. None: the runtime stages them itself
    /// (Kubernetes: an init container per model into a hostPath cache on the Pod's node).
    pub dir: Option<std::path::PathBuf>,
    /// Where each model lies, relative to the cache (the snapshot folder of a hub model, the
    /// file of a URL), in the order the endpoint lists them.
    pub paths: Vec<String>,
    /// `sluice models fetch` arguments, one list per model (when `dir` is none).
    pub fetch: Vec<Vec<String>>,
    /// The hub the fetches use.
    pub hf_endpoint: String,
}

/// Where a container sees the model cache.
pub const MODELS_MOUNT: &str = "/sluice-models";

/// The variables a worker reading the model cache at `dir` gets: the hub cache's own names, so
/// every Hugging Face library loads from it without a network call, and where each model lies
/// (`SLUICE_MODEL_PATH`: the first, e.g. `vllm serve $SLUICE_MODEL_PATH`; `SLUICE_MODEL_PATHS`:
/// all of them, `:`-separated).
pub fn model_env(dir: &str, paths: &[String]) -> Vec<(String, String)> {
    let full: Vec<String> = paths.iter().map(|p| format!("{dir}/{p}")).collect();
    let mut env = vec![
        ("HF_HUB_CACHE".into(), format!("{dir}/hub")),
        ("HF_HUB_OFFLINE".into(), "1".into()),
        ("SLUICE_MODELS_DIR".into(), dir.to_owned()),
    ];
    if let Some(first) = full.first() {
        env.push(("SLUICE_MODEL_PATH".into(), first.clone()));
        env.push(("SLUICE_MODEL_PATHS".into(), full.join(":")));
    }
    env
}

#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

/// A launched worker: where the gateway reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// When the image was present on the node (pulled, or found cached): runtimes with images
    /// that know it; the anatomy of a start shows the wait for it.
    pub image_at: Option<sluice_core::Millis>,
}

/// The wall clock in Unix ms, for the times a runtime reports.
pub(crate) fn wall_ms() -> sluice_core::Millis {
    sluice_core::Millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    )
}

/// A worker the runtime found running (or just saw exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub worker: WorkerId,
    pub endpoint: Option<EndpointId>,
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    /// `None` while running; the exit description once it has exited.
    pub exited: Option<String>,
    /// Whether the worker is ready, when the runtime itself knows (a cluster's readiness probe
    /// does it there); `None`: the platform probes the worker's health path.
    pub ready: Option<bool>,
}

/// Progress of an image pull, summed over its layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A way to run workers. Implementations must be safe to call concurrently for different
/// workers; the reconciler never calls them concurrently for the same worker.
pub trait WorkerRuntime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;
    /// Launches a worker and returns once it has been started (not once it is healthy).
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched>>;
    /// Stops a worker: polite signal, `grace` to exit, then kill. Stopping an unknown or
    /// already-exited worker succeeds.
    fn stop(&self, worker: &WorkerId, grace: Duration) -> BoxFuture<'_, Result<()>>;
    /// Every worker of this platform instance that runs now, plus those seen exiting since the
    /// last call (with their exit description). Used every reconcile pass and, at startup, to
    /// adopt or reap the workers of a previous run (R8.2).
    fn list(&self) -> BoxFuture<'_, Result<Vec<Observed>>>;
    /// Whether [`Observed::ready`] is filled in: the reconciler then takes readiness from
    /// `list` rather than probing every worker itself (which does not scale to a cluster).
    fn reports_readiness(&self) -> bool {
        false
    }
    /// Where the worker's output goes, stdout's file first and stderr's second (the log pipeline
    /// tails them in that order).
    fn log_paths(&self, endpoint: &EndpointId, worker: &WorkerId) -> Vec<PathBuf>;
    /// Whether `image` is present where workers start (runtimes without images: always).
    fn has_image(&self, _image: &str) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async { Ok(true) })
    }
    /// Pulls `image` ahead of need (R2.5), reporting progress as it goes.
    fn pull_image<'a>(
        &'a self,
        _image: &'a str,
        _auth: Option<&'a RegistryAuth>,
        _progress: Box<dyn FnMut(PullProgress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
