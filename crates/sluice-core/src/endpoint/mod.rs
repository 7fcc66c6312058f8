//! Endpoint specifications: the raw, all-optional [`EndpointDraft`] that arrives from the API or
//! a TOML file (`draft.rs`), and the validated [`EndpointSpec`] that the rest of the platform
//! works with. An `EndpointSpec` can only be built by [`EndpointSpec::validate`]
//! (`validate.rs`), so an invalid one cannot exist (R1.11, R8.4); its parts are grouped by what
//! they govern, and what an endpoint serves is one [`Mode`], so that a combination that means
//! nothing (a job path on an HTTP endpoint) cannot be represented. Stored and on the wire, the
//! spec stays one flat object.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod draft;
#[cfg(test)]
mod tests;
mod validate;

pub use draft::EndpointDraft;
pub use validate::{is_env_name, validate_name};

use crate::autoscale::{Preset, ScalingPolicy, Signal};

pub const NAME_MAX_CHARS: usize = 128;
pub const MAX_GPUS_PER_WORKER: i64 = 8;
pub const DEFAULT_ACTIVE_WORKERS: i64 = 1;
pub const DEFAULT_MAX_WORKERS: i64 = 3;
pub const DEFAULT_IDLE_TIMEOUT_SECS: i64 = 10;
pub const DEFAULT_EXECUTION_TIMEOUT_SECS: i64 = 600;
pub const DEFAULT_STARTUP_TIMEOUT_SECS: i64 = 600;
pub const DEFAULT_HTTP_PORT: i64 = 8000;
pub const DEFAULT_SHELL: &str = "/bin/sh";
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/health";
pub const MAX_ENV_VARS: usize = 256;
/// Largest `concurrency_per_worker`.
pub const MAX_CONCURRENCY: i64 = 100_000;
/// Largest `scaling_target`.
pub const MAX_SCALING_TARGET: i64 = 1_000_000;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Environment variables the platform sets itself; an endpoint may not override them.
pub const RESERVED_ENV: &[&str] = &["PORT", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"];
/// Prefix reserved for variables the platform injects (`SLUICE_WORKER_ID`, ...).
pub const RESERVED_ENV_PREFIX: &str = "SLUICE_";

/// Which runtime runs workers; decides whether `image` or `start_command` is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Process,
    Docker,
    /// Pods in a Kubernetes cluster (builds with the `k8s` feature).
    Kubernetes,
}

/// What an endpoint serves: plain HTTP through the gateway, or an async job queue (R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    #[default]
    Http,
    Queue,
}

/// How a queue endpoint's jobs reach workers: workers take them (`pull`, RunPod's worker
/// protocol, what `runpod.serverless.start()` speaks), or the platform POSTs `{"id", "input"}`
/// to the worker's `job_path` (`push`, any HTTP server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Pull,
    Push,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pull => "pull",
            Delivery::Push => "push",
        }
    }
}

/// How the gateway picks among an endpoint's ready workers (R3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastOutstandingRequests,
    /// The fewest requests running plus waiting inside the engine (its own metrics,
    /// `metrics_path`), plus what this gateway sent it since.
    LeastEngineLoad,
    /// Requests with the same session key (a header, default `X-Session-ID`, else the OpenAI
    /// `user` field) go to the same worker while it has room (`affinity`).
    SessionAffinity,
    /// The worker most likely to hold the prompt's prefix in its KV cache, within the load
    /// bound (`affinity`).
    PrefixAware,
}

impl LoadBalancing {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(LoadBalancing::RoundRobin),
            "least_outstanding_requests" => Some(LoadBalancing::LeastOutstandingRequests),
            "session_affinity" => Some(LoadBalancing::SessionAffinity),
            "least_engine_load" => Some(LoadBalancing::LeastEngineLoad),
            "prefix_aware" => Some(LoadBalancing::PrefixAware),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::LeastOutstandingRequests => "least_outstanding_requests",
            LoadBalancing::SessionAffinity => "session_affinity",
            LoadBalancing::LeastEngineLoad => "least_engine_load",
            LoadBalancing::PrefixAware => "prefix_aware",
        }
    }
    /// Whether the gateway looks at the start of the request body to choose.
    pub fn looks_at_body(self) -> bool {
        matches!(self, LoadBalancing::SessionAffinity | LoadBalancing::PrefixAware)
    }
}

/// Whether an endpoint should have workers at all (`stop`/`start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Running,
    Stopped,
    /// Turned off because the account's credit fell below the floor (R5.4); requests get 402.
    StoppedNoCredit,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Running => "running",
            EndpointStatus::Stopped => "stopped",
            EndpointStatus::StoppedNoCredit => "stopped_no_credit",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(EndpointStatus::Running),
            "stopped" => Some(EndpointStatus::Stopped),
            "stopped_no_credit" => Some(EndpointStatus::StoppedNoCredit),
            _ => None,
        }
    }
}

/// Persistent storage mounted into every worker (R1.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkVolume {
    pub name: String,
    pub mount_path: String,
}

/// Credentials for a private registry (R1.5): sent to the container engine for pulls, never
/// returned by the API and never logged (`Debug` hides the password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Registry host, e.g. `ghcr.io` or `registry.example.com:5000`.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What the platform offers, against which a draft is validated.
#[derive(Debug, Clone)]
pub struct ValidationContext {
    /// GPU types of the catalog; the first is the default.
    pub gpu_types: Vec<String>,
    /// Configured data centers; the first is the default.
    pub data_centers: Vec<String>,
    /// The account's cap on `max_workers` (R5.5).
    pub max_workers_quota: u32,
    pub runtime: RuntimeKind,
}

/// What an endpoint serves: plain HTTP through the gateway, or a queue of jobs (R6) that its
/// workers take (RunPod's worker protocol) or that the platform pushes to them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Http,
    /// A queue whose workers take jobs with RunPod's worker protocol.
    QueuePull,
    /// A queue whose jobs the platform POSTs (`{"id", "input"}`) to `job_path` on a ready worker.
    QueuePush { job_path: String },
}

impl Mode {
    pub fn kind(&self) -> EndpointKind {
        match self {
            Mode::Http => EndpointKind::Http,
            Mode::QueuePull | Mode::QueuePush { .. } => EndpointKind::Queue,
        }
    }

    pub fn is_queue(&self) -> bool {
        self.kind() == EndpointKind::Queue
    }

    /// Its workers take jobs with RunPod's worker protocol (their health is their heartbeat).
    pub fn is_pull(&self) -> bool {
        *self == Mode::QueuePull
    }

    /// Where jobs are pushed (push queues only).
    pub fn job_path(&self) -> Option<&str> {
        match self {
            Mode::QueuePush { job_path } => Some(job_path),
            _ => None,
        }
    }

    /// The delivery as the API shows it (`pull` for everything but push queues).
    pub fn delivery(&self) -> Delivery {
        match self {
            Mode::QueuePush { .. } => Delivery::Push,
            _ => Delivery::Pull,
        }
    }
}

/// The mode as stored and sent: the flat fields `kind`, `delivery` and `job_path` of earlier
/// versions (an HTTP endpoint writes the defaults of the other two and ignores them on read).
mod mode_fields {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Delivery, EndpointKind, Mode, default_job_path};

    #[derive(Serialize, Deserialize)]
    struct Fields {
        #[serde(default)]
        kind: EndpointKind,
        #[serde(default)]
        delivery: Delivery,
        #[serde(default = "default_job_path")]
        job_path: String,
    }

    pub fn serialize<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
        let f = Fields {
            kind: m.kind(),
            delivery: m.delivery(),
            job_path: m.job_path().map_or_else(default_job_path, str::to_owned),
        };
        f.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let f = Fields::deserialize(d)?;
        Ok(match (f.kind, f.delivery) {
            (EndpointKind::Http, _) => Mode::Http,
            (EndpointKind::Queue, Delivery::Pull) => Mode::QueuePull,
            (EndpointKind::Queue, Delivery::Push) => Mode::QueuePush { job_path: f.job_path },
        })
    }
}

/// How many workers, of what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSettings {
    pub active_workers: u32,
    pub max_workers: u32,
    pub gpus_per_worker: u32,
    pub gpu_type: String,
}

/// How long things may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    pub idle_timeout_secs: u32,
    pub execution_timeout_secs: u32,
    pub startup_timeout_secs: u32,
}

/// Autoscaling (R4): the algorithm, its signal and target, and seed 000's windows and rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoscale {
    pub scaling_policy: Preset,
    pub scaling_signal: Signal,
    pub scaling_target: u32,
    pub scale_up_window_secs: u32,
    pub scale_up_max_percent: u32,
    pub scale_down_delay_secs: u32,
    pub scale_down_max_percent: u32,
}

/// What the gateway enforces and how it spreads requests (R3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub load_balancing: LoadBalancing,
    /// Hard cap on concurrent requests per worker; excess waits in the gateway queue (R3.6).
    pub concurrency_per_worker: u32,
    /// Bounded gateway queue for requests that find no free worker (R3.4).
    pub queue_capacity: u32,
    pub queue_timeout_secs: u32,
    /// Requests per minute through the gateway (R3.7); `None`: unlimited.
    #[serde(default)]
    pub max_requests_per_minute: Option<u32>,
}

/// Sleeping workers (issue 17): a scaled-down worker is put to sleep (an HTTP call on it, e.g.
/// vLLM's `POST /sleep?level=1`) instead of stopped, and a scale-up wakes it (`POST /wake_up`)
/// before starting anything cold. Off when `max_sleeping` is 0 (the default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sleep {
    /// POSTed to put a worker to sleep (a query string is sent as given).
    #[serde(default)]
    pub sleep_path: Option<String>,
    /// POSTed to wake it.
    #[serde(default)]
    pub wake_path: Option<String>,
    /// How many of its workers may sleep at once (0: none).
    #[serde(default)]
    pub max_sleeping: u32,
    /// A worker asleep this long since it went to sleep is stopped.
    #[serde(default = "default_sleep_ttl")]
    pub sleep_ttl_secs: u32,
}

/// An hour: long enough to cover the gaps of a bursty day, short enough that a forgotten
/// endpoint gives its host memory back.
pub const DEFAULT_SLEEP_TTL_SECS: u32 = 3600;

fn default_sleep_ttl() -> u32 {
    DEFAULT_SLEEP_TTL_SECS
}

impl Default for Sleep {
    fn default() -> Self {
        Sleep { sleep_path: None, wake_path: None, max_sleeping: 0, sleep_ttl_secs: DEFAULT_SLEEP_TTL_SECS }
    }
}

impl Sleep {
    /// Whether workers may sleep.
    pub fn enabled(&self) -> bool {
        self.max_sleeping > 0 && self.sleep_path.is_some() && self.wake_path.is_some()
    }
}

/// Recorded traffic, shadow policies and the SLO policy (issue 20).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// Recorded requests, starts and worker lifetimes are kept this long (0: nothing recorded).
    #[serde(default = "default_trace_retention_hours")]
    pub trace_retention_hours: u32,
    /// … and at most this much of them, oldest dropped first.
    #[serde(default = "default_trace_max_mb")]
    pub trace_max_mb: u32,
    /// Policies evaluated on every live tick beside the real one, never acting: their would-be
    /// worker counts are recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow_policies: Vec<Preset>,
    /// The `slo` policy's target: p99 end to end (queueing and starts included), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_p99_secs: Option<f64>,
    #[serde(default)]
    pub slo_mode: SloMode,
}

/// A week: long enough to rehearse a policy on a week's pattern.
pub const DEFAULT_TRACE_RETENTION_HOURS: u32 = 168;
/// About 1.5 million requests (a record is about 40 bytes).
pub const DEFAULT_TRACE_MAX_MB: u32 = 64;

fn default_trace_retention_hours() -> u32 {
    DEFAULT_TRACE_RETENTION_HOURS
}

fn default_trace_max_mb() -> u32 {
    DEFAULT_TRACE_MAX_MB
}

impl Default for Insight {
    fn default() -> Self {
        Insight {
            trace_retention_hours: DEFAULT_TRACE_RETENTION_HOURS,
            trace_max_mb: DEFAULT_TRACE_MAX_MB,
            shadow_policies: Vec::new(),
            slo_p99_secs: None,
            slo_mode: SloMode::Apply,
        }
    }
}

/// Whether the SLO policy applies its re-tunes or only records them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMode {
    #[default]
    Apply,
    Advise,
}

impl SloMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SloMode::Apply => "apply",
            SloMode::Advise => "advise",
        }
    }
}

/// A validated endpoint specification. Build it with [`EndpointSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    pub image: Option<String>,
    pub start_command: Option<String>,
    pub shell: String,
    pub data_center: String,
    pub http_port: u16,
    pub env: BTreeMap<String, String>,
    pub network_volume: Option<NetworkVolume>,
    /// Private registry credentials for pulls (absent in specs stored before they existed).
    #[serde(default)]
    pub registry_auth: Option<RegistryAuth>,
    /// Reachable through the gateway without a key (default: private, R3.5).
    #[serde(default)]
    pub public: bool,
    pub health_check_path: String,
    #[serde(flatten, with = "mode_fields")]
    pub mode: Mode,
    #[serde(flatten)]
    pub workers: WorkerSettings,
    #[serde(flatten)]
    pub timeouts: Timeouts,
    #[serde(flatten)]
    pub autoscale: Autoscale,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(flatten)]
    pub sleep: Sleep,
    #[serde(flatten, default)]
    pub insight: Insight,
    /// Models staged on every node of its data center before a worker starts (issue 18).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::models::ModelSpec>,
    /// The `model` names it serves behind the account's OpenAI base URL (unique per account).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_models: Vec<String>,
    /// The header `session_affinity` keys on (lowercase); `None`: `x-session-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    /// Scraped on each ready worker for the engine's own load (`engine_queue`, `kv_cache`,
    /// `least_engine_load`); `None`: not scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Whose metric names (see `crate::engine`).
    #[serde(default = "default_engine")]
    pub engine: String,
}

fn default_engine() -> String {
    "vllm".into()
}

fn default_job_path() -> String {
    "/".into()
}

impl EndpointSpec {
    /// The autoscaling policy this endpoint asks for.
    pub fn scaling(&self) -> ScalingPolicy {
        let a = &self.autoscale;
        ScalingPolicy {
            preset: a.scaling_policy,
            signal: a.scaling_signal,
            target: a.scaling_target,
            concurrency_per_worker: self.limits.concurrency_per_worker,
            min_workers: self.workers.active_workers,
            max_workers: self.workers.max_workers,
            idle_timeout_ms: u64::from(self.timeouts.idle_timeout_secs) * 1000,
            scale_up_window_ms: u64::from(a.scale_up_window_secs) * 1000,
            scale_up_max_percent: a.scale_up_max_percent,
            scale_down_delay_ms: u64::from(a.scale_down_delay_secs) * 1000,
            scale_down_max_percent: a.scale_down_max_percent,
        }
    }

    /// The policy that runs and the shadow policies, given the SLO policy's latest setting
    /// (`tuned`): with `scaling_policy = "slo"` in `apply` mode the setting is applied, in
    /// `advise` mode it is not (the endpoint scales as the default policy with its own
    /// parameters); a shadow `slo` always runs with it.
    pub fn policies(&self, tuned: Option<crate::autoscale::tune::Setting>) -> (ScalingPolicy, Vec<ScalingPolicy>) {
        use crate::autoscale::tune::with_setting;
        let base = self.scaling();
        // A setting tuned before the endpoint's ceiling was lowered stays under the new one.
        let slo = |p: &ScalingPolicy| match tuned {
            Some(s) => with_setting(
                p,
                crate::autoscale::tune::Setting {
                    active_workers: s.active_workers.min(base.max_workers),
                    max_workers: s.max_workers.min(base.max_workers),
                    ..s
                },
            ),
            None => p.clone(),
        };
        let live = if base.preset == Preset::Slo && self.insight.slo_mode == SloMode::Apply {
            slo(&base)
        } else {
            base.clone()
        };
        let shadows = self
            .insight
            .shadow_policies
            .iter()
            .map(|&preset| {
                let p = ScalingPolicy { preset, ..base.clone() };
                if preset == Preset::Slo { slo(&p) } else { p }
            })
            .collect();
        (live, shadows)
    }

    /// Whether a change from `self` to `new` requires replacing running workers (what they run
    /// or where), as opposed to only changing counts, timeouts or routing.
    pub fn workers_differ(&self, new: &EndpointSpec) -> bool {
        self.image != new.image
            || self.start_command != new.start_command
            || self.shell != new.shell
            || self.env != new.env
            || self.http_port != new.http_port
            || self.network_volume != new.network_volume
            || self.workers.gpu_type != new.workers.gpu_type
            || self.workers.gpus_per_worker != new.workers.gpus_per_worker
            || self.data_center != new.data_center
            || self.models != new.models
    }
}
