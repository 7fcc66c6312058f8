//! Wire types of the `/v1` control API: request bodies, responses and the error body. Only these
//! types are serialized to clients. Validation lives in `sluice-core`; this crate only maps
//! shapes, with `deny_unknown_fields` on every input.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_core::{EndpointDraft, NetworkVolume, RegistryAuth};
use utoipa::ToSchema;

/// `{"error": {"code": .., "message": .., "field": ..}}`: the body of every 4xx/5xx answer of the
/// control API and the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_field`, `not_found`, `conflict`, `unauthorized`.
    pub code: String,
    pub message: String,
    /// The offending field, for validation errors (`name`, `env.FOO`, `network_volume.mount_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>, field: Option<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into(), field } }
    }
}

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

/// Usage of one endpoint on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageRowView {
    pub account: String,
    pub endpoint: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub gpu_seconds: u64,
    pub cost_usd: f64,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub rows: Vec<UsageRowView>,
    pub total_gpu_seconds: u64,
    pub total_cost_usd: f64,
}

/// An account (`/v1/accounts`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub name: String,
    /// Cap on any endpoint's `max_workers` (R5.5).
    pub max_workers_quota: u32,
    pub created_at: String,
    /// Credit in USD (R5.4); absent: unlimited (the admin account).
    pub balance_usd: Option<f64>,
    /// The balance is below 10 hours of the account's current runtime cost.
    pub low_credit_warning: bool,
    /// Where low-credit warnings are POSTed.
    pub webhook_url: Option<String>,
}

/// Body of `POST /v1/accounts/{name}/credit` (admin only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditInput {
    /// Dollars to add, more than 0.
    pub amount_usd: f64,
}

/// An account event: a low-credit warning, a turn-off, a top-up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountEventView {
    pub id: i64,
    pub at: String,
    /// `low_credit`, `turned_off` or `credit_added`.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountEventList {
    pub events: Vec<AccountEventView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// Body of `POST /v1/accounts` (admin only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    /// Lowercase letters, digits and `-`, at most 63; also the account's id.
    pub name: Option<String>,
    pub max_workers_quota: Option<i64>,
    /// Low-credit warnings are POSTed here as JSON (http://; empty string clears it).
    pub webhook_url: Option<String>,
}

/// A new key: the only time the key itself is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewKey {
    pub key: String,
    pub id: String,
    pub prefix: String,
    pub account: String,
    pub label: Option<String>,
}

/// Answer of `POST /v1/accounts`: the account and its first key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub account: AccountView,
    pub key: NewKey,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Names the key for `DELETE /v1/keys/{id}`.
    pub id: String,
    pub prefix: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub account: String,
    pub keys: Vec<KeyView>,
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub label: Option<String>,
    /// Admin only: the account to create the key for (default: the caller's).
    pub account: Option<String>,
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
        }
    }
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
    pub workers: WorkerCounts,
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
}

/// Newest first; pass `next_before` as `before` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScalingEventList {
    pub events: Vec<ScalingEventView>,
    pub next_before: Option<i64>,
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
    /// pending, starting, ready, draining, stopped or failed.
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

/// Why a JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The path of the offending field (`max_workers`, `env.A`, `network_volume.path`), when
    /// there is one.
    pub field: Option<String>,
    pub message: String,
    /// Malformed JSON (400) rather than well-formed JSON of the wrong shape (422).
    pub syntax: bool,
}

/// Parses a JSON body into `T`, reporting the path of the offending field on failure. Every body
/// of the API is a JSON object (serde would also read a struct from an array of its fields).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    if let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        return Err(JsonError { field: None, message: "the body must be a JSON object".into(), syntax: false });
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
        // A top-level value of the wrong kind (an array, a string) has no field to name.
        let field =
            (!syntax && path != "." && path != "?" && !path.is_empty() && !path.starts_with('[')).then_some(path);
        JsonError { field, message: scrub(&inner.to_string()), syntax }
    })
}

/// A deserializer's message without the value it refused. serde quotes what it was given
/// (`invalid type: string "hf_…", expected a map`), and a body may carry secrets in any field, so
/// an error keeps what was wrong and what was expected, never the submitted value: `invalid type:
/// string, expected a map`. Field names (`unknown field `x``) are kept: the path names them anyway.
pub fn scrub(message: &str) -> String {
    // serde_json appends the position: " at line 1 column 17" (exactly that, at the very end).
    let position = |tail: &str| {
        let mut words = tail.split(' ');
        matches!(
            (words.next(), words.next(), words.next(), words.next(), words.next()),
            (Some("line"), Some(l), Some("column"), Some(c), None)
                if !l.is_empty() && !c.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit())
        )
    };
    let (core, at) = match message.rfind(" at line ") {
        Some(i) if position(&message[i + 4..]) => message.split_at(i),
        _ => (message, ""),
    };
    // Deserializers of query strings put the key first (`limit: invalid digit found in string`):
    // the key is kept, what follows is cleaned like a whole message.
    const MARKERS: [&str; 7] = [
        "invalid type: ",
        "invalid value: ",
        "unknown variant ",
        "unknown field ",
        "missing field ",
        "duplicate field ",
        "invalid length ",
    ];
    let (head, core) = match MARKERS.iter().filter_map(|m| core.find(m)).min() {
        Some(i) if i > 0 && core[..i].ends_with(": ") && !core[..i].contains(['"', '`']) => core.split_at(i),
        _ => ("", core),
    };
    let kept = |prefix: &str, rest: &str| -> String {
        // `rest` is `<what was given>, expected <what we wanted>`; the given part is reduced to
        // its kind (`string`, `integer`, `map`), the expected part is ours.
        let (given, expected) = match rest.rfind(", expected ") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let kind = given.split(['"', '`', '\'']).next().unwrap_or("").trim();
        let kind = if kind.is_empty() { "value" } else { kind };
        match expected {
            Some(e) => format!("{prefix}{kind}, {e}"),
            None => format!("{prefix}{kind}"),
        }
    };
    let cleaned = if let Some(rest) = core.strip_prefix("invalid type: ") {
        kept("invalid type: ", rest)
    } else if let Some(rest) = core.strip_prefix("invalid value: ") {
        kept("invalid value: ", rest)
    } else if let Some(rest) = core.strip_prefix("unknown variant ") {
        match rest.rfind(", expected ") {
            Some(i) => format!("unknown variant, {}", &rest[i + 2..]),
            None => "unknown variant".to_owned(),
        }
    } else if ["unknown field ", "missing field ", "duplicate field ", "invalid length "]
        .iter()
        .any(|p| core.starts_with(p))
    {
        core.to_owned()
    } else {
        // Anything else (a custom message): quoted parts may be values, so they go.
        unquote(core)
    };
    format!("{head}{cleaned}{at}")
}

/// Replaces every `"…"` and `` `…` `` segment with `…`.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => open = None,
            Some(_) => {}
            None if c == '"' || c == '`' => {
                open = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let field = |body: &[u8]| parse_json::<EndpointInput>(body).unwrap_err().field;
        assert_eq!(field(br#"{"name":"x","bogus":1}"#).as_deref(), Some("bogus"));
        assert_eq!(field(br#"{"name":"x","max_workers":"3"}"#).as_deref(), Some("max_workers"));
        assert_eq!(field(br#"{"network_volume":{"name":"v","mount":"/x"}}"#).as_deref(), Some("network_volume.mount"));
        assert_eq!(field(br#"{"env":{"A":1}}"#).as_deref(), Some("env.A"));
        assert_eq!(field(b"[1,2]"), None);
        let e = parse_json::<EndpointInput>(b"{not json").unwrap_err();
        assert!(e.syntax && e.field.is_none());
        let e = parse_json::<EndpointInput>(b"[1]").unwrap_err();
        assert!(!e.syntax);
        // A struct is never read from an array of its fields.
        let e = parse_json::<KeyInput>(b"[null, null]").unwrap_err();
        assert_eq!((e.syntax, e.message.as_str()), (false, "the body must be a JSON object"));
        assert!(parse_json::<KeyInput>(b" [null").unwrap_err().syntax, "malformed stays a syntax error");
        let ok = parse_json::<EndpointInput>(br#"{"name":"x","max_workers":3}"#).unwrap();
        assert_eq!(ok.max_workers, Some(3));
    }

    #[test]
    fn json_errors_never_repeat_a_submitted_value() {
        let secret = "hf_SECRETsecret0123456789";
        let bodies = [
            format!(r#"{{"name":"x","env":"HF_TOKEN={secret}"}}"#),
            format!(r#"{{"name":"x","registry_auth":"user:{secret}"}}"#),
            format!(r#"{{"name":"x","max_workers":"{secret}"}}"#),
            format!(r#"{{"name":"x","public":"{secret}"}}"#),
            format!(r#"{{"name":"x","network_volume":"{secret}"}}"#),
            format!(r#"{{"name":"x","env":{{"A":["{secret}"]}}}}"#),
            format!(r#"{{"name":["{secret}"]}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#""{secret}""#),
            format!(r#"{{"name":"x","registry_auth":{{"server":"s","username":"u","password":7,"x":"{secret}"}}}}"#),
        ];
        for b in &bodies {
            let e = parse_json::<EndpointInput>(b.as_bytes()).unwrap_err();
            assert!(!e.message.contains("SECRET"), "{b} -> {}", e.message);
            assert!(!e.message.is_empty());
        }
        // What is kept: the kind given and what was expected, where it is.
        let e = parse_json::<EndpointInput>(bodies[0].as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("env"));
        assert!(e.message.starts_with("invalid type: string, expected a map at line 1"), "{}", e.message);
        for (raw, clean) in [
            ("invalid type: string \"a, expected b\", expected u32", "invalid type: string, expected u32"),
            ("invalid value: integer `4294967296`, expected u32", "invalid value: integer, expected u32"),
            (
                "unknown variant `s3cr3t`, expected one of `http`, `queue`",
                "unknown variant, expected one of `http`, `queue`",
            ),
            ("unknown field `bogus`, expected `name`", "unknown field `bogus`, expected `name`"),
            ("invalid type: map, expected a string", "invalid type: map, expected a string"),
            ("something \"quoted\" here", "something … here"),
            ("limit: invalid digit found in string", "limit: invalid digit found in string"),
            (
                "invalid type: string \"x at line 1 column 2 secret\", expected u32",
                "invalid type: string, expected u32",
            ),
            ("custom \"v at line 3 column 4\"", "custom …"),
            (
                "x-y: unknown field `x-y`, expected `limit` or `before`",
                "x-y: unknown field `x-y`, expected `limit` or `before`",
            ),
            ("stream: invalid value: string \"s3cr3t\", expected x", "stream: invalid value: string, expected x"),
        ] {
            assert_eq!(scrub(raw), clean);
        }
    }
}
