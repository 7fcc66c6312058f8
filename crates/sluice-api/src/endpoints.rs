//! `/v1` endpoints, workers, images, GPUs, templates, events and logs.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_core::{EndpointDraft, NetworkVolume, RegistryAuth};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkVolumeDto {
    /// Volume name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Absolute path at which workers see the volume.
    pub mount_path: String,
}

/// `GET /v1/endpoints/{id}/status`: the figures of seed 002's status page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointStatusView {
    pub id: String,
    pub status: String,
    /// Ready workers × concurrency per worker: what can run at once now.
    pub current_concurrency_limit: u64,
    /// `max_workers` × concurrency per worker: what can run once fully scaled.
    pub fully_autoscaled_concurrency_limit: u64,
    /// Absent: unlimited.
    pub max_requests_per_minute: Option<u32>,
    /// Requests being served now.
    pub running_requests: u64,
    /// Requests waiting in the gateway queue.
    pub queued_requests: u64,
    pub workers: WorkerCounts,
    /// Responses the gateway sent since the platform started.
    pub requests_total: u64,
    /// 429s since the platform started, by the limit that refused them.
    pub rate_limited_total: u64,
    pub concurrency_limited_total: u64,
    /// Request duration at the gateway (arrival to response head), p50 and p99, as the upper
    /// bounds of their histogram buckets; absent before the first request.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Streamed OpenAI answers: time to first token and between tokens, p50 and p99 (bucket
    /// bounds); absent before the first stream.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
    /// Tokens streamed, and the streams.
    pub output_tokens_total: u64,
    pub streams_total: u64,
}

/// One sample of an endpoint's load (every 2 s, the last hour).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct LoadPoint {
    /// Unix ms.
    pub t: u64,
    pub running: u64,
    pub queued: u64,
    pub ready: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoadSeries {
    pub step_ms: u64,
    pub points: Vec<LoadPoint>,
}

/// One GPU of the inventory (`GET /v1/gpus`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GpuView {
    pub index: u32,
    #[serde(rename = "type")]
    pub gpu_type: String,
    /// A worker holds it (of any account).
    #[serde(default)]
    pub in_use: bool,
    /// The worker holding it and its endpoint: shown only when they are the caller's own.
    pub worker: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    pub data_center: String,
    pub gpus: Vec<GpuView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GpuInventory {
    /// `declared` (simulated GPUs from the config) or `nvml` (real devices).
    pub source: String,
    pub nodes: Vec<NodeView>,
}

/// Where an image stands on one node (R2.5).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ImagePullView {
    pub image: String,
    pub node: String,
    pub data_center: String,
    /// `pending`, `pulling`, `ready` or `failed`.
    pub state: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Why the pull failed.
    pub error: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<ImagePullView>,
}

/// Body of `POST /v1/images/prewarm`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrewarmInput {
    pub image: String,
    /// Only the nodes of this data center (default: every node).
    pub data_center: Option<String>,
    pub registry_auth: Option<RegistryAuthDto>,
}

/// A quick-deploy template (`GET /v1/templates`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub title: String,
    pub description: String,
    pub image: String,
    pub http_port: u16,
    pub health_check_path: String,
    pub gpus_per_worker: u32,
    pub params: Vec<TemplateParamView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateParamView {
    pub name: String,
    pub description: String,
    /// Absent: the parameter is required.
    pub default: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// Body of `POST /v1/templates/{name}/deploy`: the template's parameters (`sluice deploy
/// TEMPLATE --set k=v`), and optionally registry credentials for a private image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployInput {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    pub registry_auth: Option<RegistryAuthDto>,
}

/// Private registry credentials (write-only: the API never returns the username or password).
#[derive(Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthDto {
    /// Registry host, e.g. `ghcr.io`.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuthDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuthDto").field("server", &self.server).finish_non_exhaustive()
    }
}

/// Body of `POST /v1/endpoints` and `PATCH /v1/endpoints/{id}` (and the CLI's `-f endpoint.toml`).
/// On create, omitted fields take their defaults; on update, omitted fields keep their values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// 1–128 characters, unique per account.
    pub name: Option<String>,
    /// Container image (required by container runtimes).
    pub image: Option<String>,
    /// Command run as `shell -c start_command` (required by the process runtime).
    pub start_command: Option<String>,
    /// Shell for the start command; default `/bin/sh`.
    pub shell: Option<String>,
    /// Data center from the configured list; default the first.
    pub data_center: Option<String>,
    /// The one HTTP port the worker listens on (containers); 1–65535, default 8000.
    pub http_port: Option<i64>,
    /// Environment variables; names `[A-Za-z_][A-Za-z0-9_]*`. Replaces the whole map on update.
    pub env: Option<BTreeMap<String, String>>,
    /// Persistent storage mounted into every worker.
    pub network_volume: Option<NetworkVolumeDto>,
    /// Credentials for pulling `image` from a private registry; stored, never returned.
    pub registry_auth: Option<RegistryAuthDto>,
    /// Reachable through the gateway without a key; default false (a key of the owning
    /// account is required: `Authorization: Bearer KEY` or the bare key).
    pub public: Option<bool>,
    /// `http` (default): requests are proxied to workers. `queue`: RunPod-style async jobs
    /// under `/v2/{id}/…` on the gateway.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Queue endpoints: `pull` (default: workers built on RunPod's `runpod.serverless.start()`
    /// take jobs with its worker protocol) or `push` (the platform POSTs `{"id", "input"}` to the
    /// worker's `job_path`).
    pub delivery: Option<String>,
    /// Queue endpoints: the worker path jobs are POSTed to; default `/`.
    pub job_path: Option<String>,
    /// Path that must answer 200 before a worker gets traffic; default `/health`.
    pub health_check_path: Option<String>,
    /// Seconds an autoscaled worker may stay idle; 1–3600, default 10.
    pub idle_timeout_secs: Option<i64>,
    /// Seconds a request may run; 1–86400, default 600.
    pub execution_timeout_secs: Option<i64>,
    /// Seconds a worker may take to become healthy; 1–3600, default 600.
    pub startup_timeout_secs: Option<i64>,
    /// Workers always running; ≥ 0, default 1.
    pub active_workers: Option<i64>,
    /// Upper bound on workers; ≥ max(1, active_workers), ≤ account quota; default 3.
    pub max_workers: Option<i64>,
    /// Whole GPUs per worker; 1–8, default 1.
    pub gpus_per_worker: Option<i64>,
    /// GPU type from the catalog; default the first.
    pub gpu_type: Option<String>,
    /// `round_robin` (default) or `least_outstanding_requests`.
    pub load_balancing: Option<String>,
    /// Autoscaling algorithm: `default`, `seed-atlas`, `seed-damped`, `seed-hf`,
    /// `fixed-keepalive`, `knative`, `hpa`, `ray-serve`, `beta9`.
    pub scaling_policy: Option<String>,
    /// `concurrency` (default), `request_count`, `queue_delay`, `rpm`, `gpu_utilization`.
    pub scaling_signal: Option<String>,
    /// Per-worker target of the signal (requests, seconds, requests/min or percent); default 100
    /// for concurrency (or `concurrency_per_worker` when that is given).
    pub scaling_target: Option<i64>,
    /// Hard cap on concurrent requests per worker; default the target.
    pub concurrency_per_worker: Option<i64>,
    /// Scale-up rate limit: at most this % of capacity added per window (default 200% / 60 s).
    pub scale_up_window_secs: Option<i64>,
    pub scale_up_max_percent: Option<i64>,
    /// Scale down only after this long below the threshold (default 60 s) …
    pub scale_down_delay_secs: Option<i64>,
    /// … removing at most this % of capacity per window (default 100).
    pub scale_down_max_percent: Option<i64>,
    /// Requests that may wait for a worker (default 1000) and for how long (default the startup timeout).
    pub queue_capacity: Option<i64>,
    pub queue_timeout_secs: Option<i64>,
    /// Requests per minute through the gateway, smoothed (GCRA); beyond it, 429. 0 or absent:
    /// unlimited.
    pub max_requests_per_minute: Option<i64>,
    /// Sleeping workers: POSTed on a scaled-down worker to put it to sleep instead of stopping
    /// it (e.g. vLLM's `/sleep?level=1`); "" clears it.
    pub sleep_path: Option<String>,
    /// POSTed to wake a sleeper for a scale-up (e.g. vLLM's `/wake_up`); "" clears it.
    pub wake_path: Option<String>,
    /// How many workers may sleep at once (0, the default: none). Sleepers count against
    /// `max_workers`; not for pull workers.
    pub max_sleeping: Option<i64>,
    /// A sleeper is stopped this long after it went to sleep (default 3600).
    pub sleep_ttl_secs: Option<i64>,
    /// Models staged on every node of the data center before a worker starts: Hugging Face
    /// repositories (`hf://org/name[@revision]`, with optional file patterns) or file URLs.
    /// Workers read them offline from `HF_HUB_CACHE`. `[]` clears them.
    pub models: Option<Vec<ModelInput>>,
    /// Names an OpenAI client may send as `model` to the account's base URL
    /// (`/openai/v1` on the gateway); unique within the account. `[]` clears them.
    pub served_models: Option<Vec<String>>,
    /// With `session_affinity`: the header holding the session key (default `X-Session-ID`;
    /// "" restores the default).
    pub session_header: Option<String>,
    /// The workers' Prometheus path (e.g. `/metrics`), scraped every second for the engine's
    /// load (the `engine_queue` and `kv_cache` signals, `least_engine_load`); "" turns it off.
    pub metrics_path: Option<String>,
    /// Whose metric names: `vllm` (default), `sglang`, `tgi`, or `RUNNING,WAITING[,KV_CACHE]`.
    pub engine: Option<String>,
    /// Recorded traffic (requests, starts, worker lifetimes) is kept this many hours (default
    /// 168; 0: nothing is recorded) …
    pub trace_retention_hours: Option<i64>,
    /// … and at most this many megabytes of it (default 64), oldest dropped first.
    pub trace_max_mb: Option<i64>,
    /// Policies evaluated on every tick beside the real one, never acting (e.g. `["knative",
    /// "slo"]`): their would-be worker counts are recorded. `[]` clears them.
    pub shadow_policies: Option<Vec<String>>,
    /// The `slo` policy's target: p99 end to end, queueing and starts included, in seconds
    /// (0 clears it).
    pub slo_p99_secs: Option<f64>,
    /// `apply` (default): the SLO policy sets what it finds; `advise`: it only records it.
    pub slo_mode: Option<String>,
}

/// One model of an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    /// `hf://org/name`, `hf://org/name@<branch, tag or commit>`, or an `https://` file URL.
    pub source: String,
    /// Only files matching one of these globs (fnmatch, as `huggingface_hub`'s allow_patterns).
    pub include: Option<Vec<String>>,
    /// Never files matching one of these.
    pub exclude: Option<Vec<String>>,
}

impl From<EndpointInput> for EndpointDraft {
    fn from(i: EndpointInput) -> EndpointDraft {
        EndpointDraft {
            name: i.name,
            image: i.image,
            start_command: i.start_command,
            shell: i.shell,
            data_center: i.data_center,
            http_port: i.http_port,
            env: i.env,
            network_volume: i.network_volume.map(|v| NetworkVolume { name: v.name, mount_path: v.mount_path }),
            public: i.public,
            kind: i.kind,
            delivery: i.delivery,
            job_path: i.job_path,
            registry_auth: i.registry_auth.map(|a| RegistryAuth {
                server: a.server,
                username: a.username,
                password: a.password,
            }),
            health_check_path: i.health_check_path,
            idle_timeout_secs: i.idle_timeout_secs,
            execution_timeout_secs: i.execution_timeout_secs,
            startup_timeout_secs: i.startup_timeout_secs,
            active_workers: i.active_workers,
            max_workers: i.max_workers,
            gpus_per_worker: i.gpus_per_worker,
            gpu_type: i.gpu_type,
            load_balancing: i.load_balancing,
            scaling_policy: i.scaling_policy,
            scaling_signal: i.scaling_signal,
            scaling_target: i.scaling_target,
            concurrency_per_worker: i.concurrency_per_worker,
            scale_up_window_secs: i.scale_up_window_secs,
            scale_up_max_percent: i.scale_up_max_percent,
            scale_down_delay_secs: i.scale_down_delay_secs,
            scale_down_max_percent: i.scale_down_max_percent,
            queue_capacity: i.queue_capacity,
            queue_timeout_secs: i.queue_timeout_secs,
            max_requests_per_minute: i.max_requests_per_minute,
            sleep_path: i.sleep_path,
            wake_path: i.wake_path,
            max_sleeping: i.max_sleeping,
            sleep_ttl_secs: i.sleep_ttl_secs,
            models: i.models.map(|v| {
                v.into_iter()
                    .map(|m| sluice_core::models::ModelDraft {
                        source: m.source,
                        include: m.include,
                        exclude: m.exclude,
                    })
                    .collect()
            }),
            served_models: i.served_models,
            session_header: i.session_header,
            metrics_path: i.metrics_path,
            engine: i.engine,
            trace_retention_hours: i.trace_retention_hours,
            trace_max_mb: i.trace_max_mb,
            shadow_policies: i.shadow_policies,
            slo_p99_secs: i.slo_p99_secs,
            slo_mode: i.slo_mode,
        }
    }
}

/// A model and where it stands on the nodes that need it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ModelView {
    /// As written: `hf://org/name@revision` or the URL.
    pub source: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The branch, tag or commit asked for (hub sources).
    pub revision: Option<String>,
    /// The commit it resolved to, once staged.
    pub commit: Option<String>,
    /// The caller's endpoints that list it.
    pub endpoints: Vec<String>,
    pub nodes: Vec<ModelNodeView>,
}

/// A model on one node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ModelNodeView {
    pub node: String,
    pub data_center: String,
    /// `pending`, `downloading`, `ready` or `failed`.
    pub state: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second since staging began.
    pub rate_bytes_per_sec: u64,
    pub ready_at: Option<String>,
    /// Why staging failed (the hub's reason; never a token).
    pub error: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

/// Worker counts of an endpoint by state, plus the reconciler's target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WorkerCounts {
    /// Requests being served and waiting in the gateway queue (for the status page; not part
    /// of the `workers` object).
    #[serde(skip)]
    pub running: u64,
    #[serde(skip)]
    pub queued: u64,
    pub desired: u32,
    pub pending: u32,
    pub starting: u32,
    pub ready: u32,
    pub draining: u32,
    /// Asleep (issue 17): out of rotation, woken by the next scale-up.
    #[serde(default)]
    pub sleeping: u32,
    /// A rolling update: workers of an older version still running (ready or draining), and
    /// ready workers of the current one. The update is done when `outdated` is 0.
    pub outdated: u32,
    pub updated: u32,
}

/// An endpoint as the API shows it. Secret-looking env values are masked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub name: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Host-form URL: `http://{id}.{data_center}.{domain}:{port}/`.
    pub url: String,
    /// Path-form URL: `http://{gateway}/e/{id}/`.
    pub path_url: String,
    pub image: Option<String>,
    pub start_command: Option<String>,
    pub shell: String,
    pub data_center: String,
    pub http_port: u16,
    pub env: BTreeMap<String, String>,
    pub network_volume: Option<NetworkVolumeDto>,
    /// The registry that credentials were given for (the credentials themselves are never shown).
    pub registry_server: Option<String>,
    /// The image's pull state on each node of the data center (prewarm, R2.5).
    pub image_pulls: Vec<ImagePullView>,
    /// Whether the gateway serves it without a key.
    pub public: bool,
    /// `http` or `queue`.
    #[serde(rename = "type")]
    pub kind: String,
    pub delivery: String,
    pub job_path: String,
    /// The owning account.
    pub account: String,
    pub health_check_path: String,
    pub idle_timeout_secs: u32,
    pub execution_timeout_secs: u32,
    pub startup_timeout_secs: u32,
    pub active_workers: u32,
    pub max_workers: u32,
    pub gpus_per_worker: u32,
    pub gpu_type: String,
    pub load_balancing: String,
    pub scaling_policy: String,
    pub scaling_signal: String,
    pub scaling_target: u32,
    pub concurrency_per_worker: u32,
    pub scale_up_window_secs: u32,
    pub scale_up_max_percent: u32,
    pub scale_down_delay_secs: u32,
    pub scale_down_max_percent: u32,
    pub queue_capacity: u32,
    pub queue_timeout_secs: u32,
    pub max_requests_per_minute: Option<u32>,
    pub sleep_path: Option<String>,
    pub wake_path: Option<String>,
    pub max_sleeping: u32,
    pub sleep_ttl_secs: u32,
    /// Its models and where they stand.
    pub models: Vec<ModelView>,
    /// The `model` names it serves behind the account's OpenAI base URL.
    pub served_models: Vec<String>,
    /// The session header of `session_affinity`.
    pub session_header: String,
    pub metrics_path: Option<String>,
    pub engine: String,
    pub trace_retention_hours: u32,
    pub trace_max_mb: u32,
    pub shadow_policies: Vec<String>,
    pub slo_p99_secs: Option<f64>,
    pub slo_mode: String,
    pub workers: WorkerCounts,
    /// Its HTTPS certificate, when the platform serves HTTPS: state, expiry, and why it is not
    /// issued yet.
    pub certificate: Option<crate::EndpointCertificate>,
    pub created_at: String,
    pub updated_at: String,
}

/// One recorded scaling decision (R4.7).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScalingEventView {
    pub id: i64,
    pub at: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// The figures the decision was based on.
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// `decision`, or `retune` (the SLO policy's, with its prediction as inputs).
    #[serde(default)]
    pub kind: String,
}

/// Newest first; pass `next_before` as `before` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScalingEventList {
    pub events: Vec<ScalingEventView>,
    pub next_before: Option<i64>,
}

/// `sluice sim --endpoint` (issue 20): the endpoint's recorded traffic over the window, with its
/// recorded start times, replayed through each policy asked for; the last row, `actual`, is what
/// really happened over the same window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayView {
    pub since: String,
    pub until: String,
    /// Requests replayed and start durations sampled.
    pub requests: u64,
    pub cold_starts: u64,
    /// One row per policy, then `actual`: the keys of `sluice sim --json`.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<sluice_core::autoscale::sim::SimResult>,
}

/// An endpoint's recorded traffic over a window in equal slices (the console's charts).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrafficView {
    pub since: String,
    pub until: String,
    #[schema(value_type = Vec<Object>)]
    pub buckets: Vec<sluice_core::recording::TrafficBucket>,
}

/// `sluice audit` (issue 20): each recorded decision of the window run again through the same
/// `decide()` on the inputs and state it was recorded with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub since: String,
    pub until: String,
    /// Decisions in the window.
    pub decisions: u64,
    /// Of which came out the same: target, reason and inputs.
    pub reproduced: u64,
    /// Decisions recorded before replays were kept (not checked).
    pub unchecked: u64,
    pub mismatches: Vec<AuditMismatch>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditMismatch {
    pub event_id: i64,
    pub at: String,
    /// What differs.
    pub detail: String,
}

/// Worker counts over a window (issue 20): what the autoscaler wanted, and what each shadow
/// policy would have wanted on the same ticks, with an estimate of each line's GPU-seconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShadowView {
    pub since: String,
    pub until: String,
    /// `actual` (the counts the autoscaler set) first, then each shadow policy.
    pub lines: Vec<ShadowLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShadowLine {
    pub policy: String,
    /// The count from each point on (Unix ms, workers); the first point is the count at `since`.
    pub points: Vec<(u64, u32)>,
    /// Worker-seconds of the line over the window times the endpoint's GPUs per worker; for
    /// `actual`, the GPU-seconds its workers really ran.
    pub gpu_seconds: f64,
}

/// One line of an endpoint's log: a worker's output (`stdout`, `stderr`) or a platform event
/// (`platform`). `id` orders lines; a follower resumes after it (SSE `Last-Event-ID`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    pub id: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub ts_ms: u64,
    pub worker: Option<String>,
    pub stream: String,
    pub line: String,
}

/// Log lines, oldest first, and how many lines of this endpoint were dropped because the
/// platform could not store them fast enough.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    pub lines: Vec<LogLineView>,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// A worker: one process or container with its GPUs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub endpoint_id: String,
    /// pending, starting, ready, draining, sleeping, stopped or failed.
    pub state: String,
    /// Why the worker is pending or failed (or how it stopped).
    pub reason: Option<String>,
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    /// `host:port` the gateway sends traffic to.
    pub address: Option<String>,
    pub pid: Option<u32>,
    pub created_at: String,
    /// When the runtime started it: metering runs from here to `stopped_at`.
    pub launched_at: Option<String>,
    pub ready_at: Option<String>,
    pub stopped_at: Option<String>,
    /// The anatomy of its starts and wakes: each phase reached (placed, image, started,
    /// healthy, slept, wake_called, woke) and when, oldest first.
    pub phases: Vec<PhaseView>,
    /// Its latest start in words: "cold start 48.2 s: placement 0.0 s, image 0.0 s, start 0.3
    /// s, model load 47.9 s" or "woke in 0.31 s".
    pub start: Option<String>,
}

/// One phase of a worker's start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PhaseView {
    pub phase: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// Where the platform listens (also written to `DATA_DIR/addresses.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Addresses {
    pub api: String,
    pub gateway: String,
    pub domain: String,
}
