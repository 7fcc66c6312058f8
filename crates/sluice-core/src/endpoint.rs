//! Endpoint specifications: the raw, all-optional [`EndpointDraft`] that arrives from the API or
//! a TOML file, and the validated [`EndpointSpec`] that the rest of the platform works with.
//! An `EndpointSpec` can only be built by [`EndpointSpec::validate`], so an invalid one cannot
//! exist (R1.11, R8.4).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    FieldError,
    autoscale::{Preset, ScalingPolicy, Signal},
};

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
}

impl LoadBalancing {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(LoadBalancing::RoundRobin),
            "least_outstanding_requests" => Some(LoadBalancing::LeastOutstandingRequests),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "round_robin",
            LoadBalancing::LeastOutstandingRequests => "least_outstanding_requests",
        }
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

fn validate_registry_auth(a: &RegistryAuth) -> Result<(), FieldError> {
    for (field, v, max) in [
        ("registry_auth.server", &a.server, 255),
        ("registry_auth.username", &a.username, 255),
        ("registry_auth.password", &a.password, 4096),
    ] {
        if v.is_empty() || v.len() > max {
            return Err(FieldError::new(field, format!("must be 1 to {max} bytes")));
        }
        no_control_chars(field, v)?;
    }
    if a.server.contains(char::is_whitespace) {
        return Err(FieldError::new("registry_auth.server", "must be a registry host such as ghcr.io or host:5000"));
    }
    Ok(())
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

/// An endpoint as submitted: every field optional, numbers wide enough that out-of-range values
/// reach validation (and get a message naming the field) instead of failing to parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointDraft {
    pub name: Option<String>,
    pub image: Option<String>,
    pub start_command: Option<String>,
    pub shell: Option<String>,
    pub data_center: Option<String>,
    pub http_port: Option<i64>,
    pub env: Option<BTreeMap<String, String>>,
    pub network_volume: Option<NetworkVolume>,
    pub registry_auth: Option<RegistryAuth>,
    pub public: Option<bool>,
    /// `http` (default) or `queue`.
    pub kind: Option<String>,
    /// Queue endpoints: `pull` (default, RunPod SDK workers) or `push`.
    pub delivery: Option<String>,
    /// Queue endpoints with push delivery: the path jobs are POSTed to.
    pub job_path: Option<String>,
    pub health_check_path: Option<String>,
    pub idle_timeout_secs: Option<i64>,
    pub execution_timeout_secs: Option<i64>,
    pub startup_timeout_secs: Option<i64>,
    pub active_workers: Option<i64>,
    pub max_workers: Option<i64>,
    pub gpus_per_worker: Option<i64>,
    pub gpu_type: Option<String>,
    pub load_balancing: Option<String>,
    pub scaling_policy: Option<String>,
    pub scaling_signal: Option<String>,
    pub scaling_target: Option<i64>,
    pub concurrency_per_worker: Option<i64>,
    pub scale_up_window_secs: Option<i64>,
    pub scale_up_max_percent: Option<i64>,
    pub scale_down_delay_secs: Option<i64>,
    pub scale_down_max_percent: Option<i64>,
    pub queue_capacity: Option<i64>,
    pub queue_timeout_secs: Option<i64>,
    /// 0 clears the limit.
    pub max_requests_per_minute: Option<i64>,
}

impl EndpointDraft {
    /// Overlays the fields set in `patch` on `self` (an update is "old spec + patch", then
    /// validated as a whole).
    pub fn overlay(mut self, patch: EndpointDraft) -> EndpointDraft {
        macro_rules! take {
            // Destructured exhaustively: a field added to the draft but not listed here does
            // not compile (an update must never drop a field silently).
            ($($f:ident),*) => {
                let EndpointDraft { $($f),* } = patch;
                $( if $f.is_some() { self.$f = $f; } )*
            };
        }
        take!(
            name,
            image,
            start_command,
            shell,
            data_center,
            http_port,
            env,
            network_volume,
            registry_auth,
            public,
            kind,
            delivery,
            job_path,
            health_check_path,
            idle_timeout_secs,
            execution_timeout_secs,
            startup_timeout_secs,
            active_workers,
            max_workers,
            gpus_per_worker,
            gpu_type,
            load_balancing,
            scaling_policy,
            scaling_signal,
            scaling_target,
            concurrency_per_worker,
            scale_up_window_secs,
            scale_up_max_percent,
            scale_down_delay_secs,
            scale_down_max_percent,
            queue_capacity,
            queue_timeout_secs,
            max_requests_per_minute
        );
        self
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
    #[serde(default)]
    pub kind: EndpointKind,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default = "default_job_path")]
    pub job_path: String,
    pub health_check_path: String,
    pub idle_timeout_secs: u32,
    pub execution_timeout_secs: u32,
    pub startup_timeout_secs: u32,
    pub active_workers: u32,
    pub max_workers: u32,
    pub gpus_per_worker: u32,
    pub gpu_type: String,
    pub load_balancing: LoadBalancing,
    /// Autoscaling (R4): the algorithm, its signal and target, and seed 000's windows and rates.
    pub scaling_policy: Preset,
    pub scaling_signal: Signal,
    pub scaling_target: u32,
    /// Hard cap on concurrent requests per worker; excess waits in the gateway queue (R3.6).
    pub concurrency_per_worker: u32,
    pub scale_up_window_secs: u32,
    pub scale_up_max_percent: u32,
    pub scale_down_delay_secs: u32,
    pub scale_down_max_percent: u32,
    /// Bounded gateway queue for requests that find no free worker (R3.4).
    pub queue_capacity: u32,
    pub queue_timeout_secs: u32,
    /// Requests per minute through the gateway (R3.7); `None`: unlimited.
    #[serde(default)]
    pub max_requests_per_minute: Option<u32>,
}

fn default_job_path() -> String {
    "/".into()
}

fn range(field: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> Result<i64, FieldError> {
    let v = v.unwrap_or(default);
    if v < lo || v > hi {
        return Err(FieldError::new(field, format!("must be between {lo} and {hi}")));
    }
    Ok(v)
}

fn no_control_chars(field: &str, s: &str) -> Result<(), FieldError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Validates an endpoint name: 1–128 UTF-8 characters (characters, not bytes), no control
/// characters, not only whitespace (R1.2).
pub fn validate_name(name: &str) -> Result<(), FieldError> {
    let n = name.chars().count();
    if n == 0 || name.trim().is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if n > NAME_MAX_CHARS {
        return Err(FieldError::new("name", format!("must be at most {NAME_MAX_CHARS} characters, got {n}")));
    }
    no_control_chars("name", name)
}

/// POSIX-style environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if env.len() > MAX_ENV_VARS {
        return Err(FieldError::new("env", format!("at most {MAX_ENV_VARS} variables, got {}", env.len())));
    }
    for (k, v) in env {
        if !is_env_name(k) {
            // Not named in the field: a malformed name may be a whole `KEY=secret` pasted as one.
            return Err(FieldError::new("env", "variable names must match [A-Za-z_][A-Za-z0-9_]*"));
        }
        if RESERVED_ENV.contains(&k.as_str()) || k.starts_with(RESERVED_ENV_PREFIX) {
            return Err(FieldError::new(format!("env.{k}"), "is set by the platform and cannot be overridden"));
        }
        if v.len() > MAX_ENV_VALUE_BYTES {
            return Err(FieldError::new(
                format!("env.{k}"),
                format!("value is longer than {MAX_ENV_VALUE_BYTES} bytes"),
            ));
        }
        if v.contains('\0') {
            return Err(FieldError::new(format!("env.{k}"), "value must not contain NUL"));
        }
    }
    Ok(())
}

/// Checks an absolute path made of plain components (no `.`/`..`, no empty components).
fn validate_abs_path(field: &str, p: &str, allow_root: bool) -> Result<(), FieldError> {
    if !p.starts_with('/') {
        return Err(FieldError::new(field, "must be an absolute path starting with '/'"));
    }
    if p.len() > 1024 {
        return Err(FieldError::new(field, "must be at most 1024 bytes"));
    }
    no_control_chars(field, p)?;
    if p == "/" {
        return if allow_root { Ok(()) } else { Err(FieldError::new(field, "must not be '/'")) };
    }
    for comp in p.trim_end_matches('/').split('/').skip(1) {
        if comp == ".." || comp == "." {
            return Err(FieldError::new(field, "must not contain '.' or '..' components"));
        }
        if comp.is_empty() {
            return Err(FieldError::new(field, "must not contain empty components ('//')"));
        }
    }
    Ok(())
}

fn validate_volume(v: &NetworkVolume) -> Result<(), FieldError> {
    let ok_name = !v.name.is_empty()
        && v.name.len() <= 63
        && v.name.as_bytes()[0].is_ascii_alphanumeric()
        && v.name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if !ok_name {
        return Err(FieldError::new(
            "network_volume.name",
            "must be 1-63 characters of lowercase letters, digits, '-' and '_', starting with a letter or digit",
        ));
    }
    validate_abs_path("network_volume.mount_path", &v.mount_path, false)
}

impl EndpointSpec {
    /// Validates a draft against the platform's catalog and fills in defaults. The first rule that
    /// fails is reported, naming its field.
    pub fn validate(d: EndpointDraft, ctx: &ValidationContext) -> Result<EndpointSpec, FieldError> {
        let name = d.name.ok_or_else(|| FieldError::new("name", "is required"))?;
        validate_name(&name)?;

        let image = match d.image {
            Some(i) => {
                if i.trim().is_empty() || i.len() > 512 || i.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(FieldError::new(
                        "image",
                        "must be a non-empty image reference without spaces (at most 512 bytes)",
                    ));
                }
                Some(i)
            }
            None => None,
        };
        let start_command = match d.start_command {
            Some(c) if c.trim().is_empty() => None,
            Some(c) => {
                if c.len() > MAX_COMMAND_BYTES {
                    return Err(FieldError::new("start_command", format!("must be at most {MAX_COMMAND_BYTES} bytes")));
                }
                if c.contains('\0') {
                    return Err(FieldError::new("start_command", "must not contain NUL"));
                }
                Some(c)
            }
            None => None,
        };
        match ctx.runtime {
            RuntimeKind::Docker if image.is_none() => {
                return Err(FieldError::new("image", "is required by the docker runtime"));
            }
            RuntimeKind::Kubernetes if image.is_none() => {
                return Err(FieldError::new("image", "is required by the kubernetes runtime"));
            }
            RuntimeKind::Process if start_command.is_none() => {
                return Err(FieldError::new("start_command", "is required by the process runtime (it is what runs)"));
            }
            _ => {}
        }
        let shell = d.shell.unwrap_or_else(|| DEFAULT_SHELL.to_owned());
        validate_abs_path("shell", &shell, false)?;

        let data_center = match d.data_center {
            Some(dc) => dc,
            None => ctx
                .data_centers
                .first()
                .cloned()
                .ok_or_else(|| FieldError::new("data_center", "no data center is configured"))?,
        };
        if !ctx.data_centers.contains(&data_center) {
            return Err(FieldError::new(
                "data_center",
                format!("unknown data center; configured: {}", ctx.data_centers.join(", ")),
            ));
        }
        let http_port = range("http_port", d.http_port, DEFAULT_HTTP_PORT, 1, 65535)? as u16;
        let env = d.env.unwrap_or_default();
        validate_env(&env)?;
        if let Some(v) = &d.network_volume {
            validate_volume(v)?;
        }
        if let Some(a) = &d.registry_auth {
            validate_registry_auth(a)?;
        }
        let kind = match d.kind.as_deref() {
            None | Some("http") => EndpointKind::Http,
            Some("queue") => EndpointKind::Queue,
            Some(_) => {
                return Err(FieldError::new("type", "must be \"http\" or \"queue\""));
            }
        };
        let delivery = match d.delivery.as_deref() {
            None | Some("pull") => Delivery::Pull,
            Some("push") => Delivery::Push,
            Some(_) => {
                return Err(FieldError::new("delivery", "must be \"pull\" or \"push\""));
            }
        };
        let job_path = d.job_path.clone().unwrap_or_else(default_job_path);
        validate_abs_path("job_path", &job_path, true)?;
        let health_check_path = d.health_check_path.unwrap_or_else(|| DEFAULT_HEALTH_CHECK_PATH.to_owned());
        if !health_check_path.starts_with('/')
            || health_check_path.len() > 1024
            || health_check_path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(FieldError::new(
                "health_check_path",
                "must start with '/' and contain no spaces (at most 1024 bytes)",
            ));
        }
        let idle_timeout_secs =
            range("idle_timeout_secs", d.idle_timeout_secs, DEFAULT_IDLE_TIMEOUT_SECS, 1, 3600)? as u32;
        let execution_timeout_secs =
            range("execution_timeout_secs", d.execution_timeout_secs, DEFAULT_EXECUTION_TIMEOUT_SECS, 1, 86_400)?
                as u32;
        let startup_timeout_secs =
            range("startup_timeout_secs", d.startup_timeout_secs, DEFAULT_STARTUP_TIMEOUT_SECS, 1, 3600)? as u32;

        let quota = i64::from(ctx.max_workers_quota);
        let active_workers = range("active_workers", d.active_workers, DEFAULT_ACTIVE_WORKERS, 0, quota)?;
        let max_default = DEFAULT_MAX_WORKERS.max(active_workers).min(quota.max(1));
        let max_workers = d.max_workers.unwrap_or(max_default);
        let floor = active_workers.max(1);
        if max_workers < floor {
            return Err(FieldError::new("max_workers", format!("must be at least max(1, active_workers) = {floor}")));
        }
        if max_workers > quota {
            return Err(FieldError::new("max_workers", format!("must be at most the account quota of {quota}")));
        }
        let gpus_per_worker = range("gpus_per_worker", d.gpus_per_worker, 1, 1, MAX_GPUS_PER_WORKER)? as u32;
        let gpu_type = match d.gpu_type {
            Some(t) => t,
            None => ctx
                .gpu_types
                .first()
                .cloned()
                .ok_or_else(|| FieldError::new("gpu_type", "no GPU type is configured"))?,
        };
        if !ctx.gpu_types.contains(&gpu_type) {
            return Err(FieldError::new(
                "gpu_type",
                format!("unknown GPU type; catalog: {}", ctx.gpu_types.join(", ")),
            ));
        }
        let load_balancing = match d.load_balancing {
            None => LoadBalancing::default(),
            Some(s) => LoadBalancing::parse(&s).ok_or_else(|| {
                FieldError::new("load_balancing", "must be round_robin or least_outstanding_requests")
            })?,
        };
        let scaling_policy = match d.scaling_policy {
            None => Preset::Default,
            Some(n) => Preset::parse(&n).ok_or_else(|| {
                FieldError::new("scaling_policy", format!("unknown policy; known: {}", Preset::names()))
            })?,
        };
        let scaling_signal = match d.scaling_signal {
            None => Signal::Concurrency,
            Some(n) => Signal::parse(&n).ok_or_else(|| {
                FieldError::new(
                    "scaling_signal",
                    format!("unknown signal; known: {}", Signal::ALL.map(Signal::as_str).join(", ")),
                )
            })?,
        };
        // For the concurrency signal, the target and the per-worker cap default to each other
        // (seed 000's 100 when neither is given).
        // A default derived from another field never fails in that field's name: each submitted
        // value is checked against its own range first, and a derived default is clamped into
        // the range of the field it fills.
        let conc = scaling_signal == Signal::Concurrency;
        let submitted_cpw = d
            .concurrency_per_worker
            .map(|c| range("concurrency_per_worker", Some(c), 0, 1, MAX_CONCURRENCY))
            .transpose()?;
        let target_default = match (conc, submitted_cpw) {
            (true, Some(c)) => c,
            _ => i64::from(scaling_signal.default_target()),
        };
        let scaling_target = range("scaling_target", d.scaling_target, target_default, 1, MAX_SCALING_TARGET)? as u32;
        let cpw_default = if conc { i64::from(scaling_target).min(MAX_CONCURRENCY) } else { 100 };
        let concurrency_per_worker = submitted_cpw.unwrap_or(cpw_default) as u32;
        let scale_up_window_secs = range("scale_up_window_secs", d.scale_up_window_secs, 60, 1, 3600)? as u32;
        let scale_up_max_percent = range("scale_up_max_percent", d.scale_up_max_percent, 200, 1, 100_000)? as u32;
        let scale_down_delay_secs = range("scale_down_delay_secs", d.scale_down_delay_secs, 60, 0, 3600)? as u32;
        let scale_down_max_percent = range("scale_down_max_percent", d.scale_down_max_percent, 100, 1, 100)? as u32;
        let queue_capacity = range("queue_capacity", d.queue_capacity, 1000, 0, 1_000_000)? as u32;
        let queue_timeout_secs =
            range("queue_timeout_secs", d.queue_timeout_secs, i64::from(startup_timeout_secs), 1, 3600)? as u32;
        let max_requests_per_minute =
            match range("max_requests_per_minute", d.max_requests_per_minute, 0, 0, 100_000_000)? {
                0 => None,
                n => Some(n as u32),
            };
        if scaling_signal == Signal::GpuUtilization && scaling_target > 100 {
            return Err(FieldError::new("scaling_target", "a utilization target is a percentage (1-100)"));
        }
        Ok(EndpointSpec {
            name,
            image,
            start_command,
            shell,
            data_center,
            http_port,
            env,
            network_volume: d.network_volume,
            registry_auth: d.registry_auth,
            public: d.public.unwrap_or(false),
            kind,
            delivery,
            job_path,
            health_check_path,
            idle_timeout_secs,
            execution_timeout_secs,
            startup_timeout_secs,
            active_workers: active_workers as u32,
            max_workers: max_workers as u32,
            gpus_per_worker,
            gpu_type,
            load_balancing,
            scaling_policy,
            scaling_signal,
            scaling_target,
            concurrency_per_worker,
            scale_up_window_secs,
            scale_up_max_percent,
            scale_down_delay_secs,
            scale_down_max_percent,
            queue_capacity,
            queue_timeout_secs,
            max_requests_per_minute,
        })
    }

    /// The autoscaling policy this endpoint asks for.
    pub fn scaling(&self) -> ScalingPolicy {
        ScalingPolicy {
            preset: self.scaling_policy,
            signal: self.scaling_signal,
            target: self.scaling_target,
            concurrency_per_worker: self.concurrency_per_worker,
            min_workers: self.active_workers,
            max_workers: self.max_workers,
            idle_timeout_ms: u64::from(self.idle_timeout_secs) * 1000,
            scale_up_window_ms: u64::from(self.scale_up_window_secs) * 1000,
            scale_up_max_percent: self.scale_up_max_percent,
            scale_down_delay_ms: u64::from(self.scale_down_delay_secs) * 1000,
            scale_down_max_percent: self.scale_down_max_percent,
        }
    }

    /// The spec as a draft with every field set, for updates ("old spec + patch").
    pub fn to_draft(&self) -> EndpointDraft {
        EndpointDraft {
            name: Some(self.name.clone()),
            image: self.image.clone(),
            start_command: self.start_command.clone(),
            shell: Some(self.shell.clone()),
            data_center: Some(self.data_center.clone()),
            http_port: Some(self.http_port.into()),
            env: Some(self.env.clone()),
            network_volume: self.network_volume.clone(),
            registry_auth: self.registry_auth.clone(),
            public: Some(self.public),
            kind: Some(match self.kind {
                EndpointKind::Http => "http".into(),
                EndpointKind::Queue => "queue".into(),
            }),
            delivery: Some(self.delivery.as_str().into()),
            job_path: Some(self.job_path.clone()),
            health_check_path: Some(self.health_check_path.clone()),
            idle_timeout_secs: Some(self.idle_timeout_secs.into()),
            execution_timeout_secs: Some(self.execution_timeout_secs.into()),
            startup_timeout_secs: Some(self.startup_timeout_secs.into()),
            active_workers: Some(self.active_workers.into()),
            max_workers: Some(self.max_workers.into()),
            gpus_per_worker: Some(self.gpus_per_worker.into()),
            gpu_type: Some(self.gpu_type.clone()),
            load_balancing: Some(self.load_balancing.as_str().to_owned()),
            scaling_policy: Some(self.scaling_policy.as_str().to_owned()),
            scaling_signal: Some(self.scaling_signal.as_str().to_owned()),
            scaling_target: Some(self.scaling_target.into()),
            concurrency_per_worker: Some(self.concurrency_per_worker.into()),
            scale_up_window_secs: Some(self.scale_up_window_secs.into()),
            scale_up_max_percent: Some(self.scale_up_max_percent.into()),
            scale_down_delay_secs: Some(self.scale_down_delay_secs.into()),
            scale_down_max_percent: Some(self.scale_down_max_percent.into()),
            queue_capacity: Some(self.queue_capacity.into()),
            queue_timeout_secs: Some(self.queue_timeout_secs.into()),
            max_requests_per_minute: Some(self.max_requests_per_minute.map_or(0, i64::from)),
        }
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
            || self.gpu_type != new.gpu_type
            || self.gpus_per_worker != new.gpus_per_worker
            || self.data_center != new.data_center
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ValidationContext {
        ValidationContext {
            gpu_types: vec!["SIM".into(), "A100".into()],
            data_centers: vec!["local".into(), "eu-1".into()],
            max_workers_quota: 10,
            runtime: RuntimeKind::Process,
        }
    }

    fn draft() -> EndpointDraft {
        EndpointDraft { name: Some("demo".into()), start_command: Some("run".into()), ..Default::default() }
    }

    /// One table: a draft change, and the field that must be named (or `None` for valid).
    fn check(edit: impl FnOnce(&mut EndpointDraft), expect_field: Option<&str>) {
        let mut d = draft();
        edit(&mut d);
        match (EndpointSpec::validate(d.clone(), &ctx()), expect_field) {
            (Ok(_), None) => {}
            (Err(e), Some(f)) => assert_eq!(e.field, f, "{d:?} -> {e}"),
            (r, f) => panic!("draft {d:?}: expected {f:?}, got {r:?}"),
        }
    }

    /// Every numeric field, alone, just outside its range and at the widths where integers
    /// overflow: the error names exactly that field (a default derived from it never fails in
    /// another field's name).
    #[test]
    fn out_of_range_numbers_name_their_own_field() {
        type Set = fn(&mut EndpointDraft, i64);
        let fields: [(&str, i64, i64, Set); 16] = [
            ("http_port", 1, 65535, |d, v| d.http_port = Some(v)),
            ("idle_timeout_secs", 1, 3600, |d, v| d.idle_timeout_secs = Some(v)),
            ("execution_timeout_secs", 1, 86_400, |d, v| d.execution_timeout_secs = Some(v)),
            ("startup_timeout_secs", 1, 3600, |d, v| d.startup_timeout_secs = Some(v)),
            ("active_workers", 0, 10, |d, v| d.active_workers = Some(v)),
            ("max_workers", 1, 10, |d, v| d.max_workers = Some(v)),
            ("gpus_per_worker", 1, 8, |d, v| d.gpus_per_worker = Some(v)),
            ("scaling_target", 1, MAX_SCALING_TARGET, |d, v| d.scaling_target = Some(v)),
            ("concurrency_per_worker", 1, MAX_CONCURRENCY, |d, v| d.concurrency_per_worker = Some(v)),
            ("scale_up_window_secs", 1, 3600, |d, v| d.scale_up_window_secs = Some(v)),
            ("scale_up_max_percent", 1, 100_000, |d, v| d.scale_up_max_percent = Some(v)),
            ("scale_down_delay_secs", 0, 3600, |d, v| d.scale_down_delay_secs = Some(v)),
            ("scale_down_max_percent", 1, 100, |d, v| d.scale_down_max_percent = Some(v)),
            ("queue_capacity", 0, 1_000_000, |d, v| d.queue_capacity = Some(v)),
            ("queue_timeout_secs", 1, 3600, |d, v| d.queue_timeout_secs = Some(v)),
            ("max_requests_per_minute", 0, 100_000_000, |d, v| d.max_requests_per_minute = Some(v)),
        ];
        for (field, lo, hi, set) in fields {
            for v in [lo - 1, hi + 1, 1 << 31, 1 << 32, -1] {
                if (lo..=hi).contains(&v) {
                    continue;
                }
                check(|d| set(d, v), Some(field));
            }
            check(|d| set(d, lo), None);
            check(|d| set(d, hi), None);
        }
        // A large submitted target alone fills the per-worker cap with a value it accepts.
        let mut d = draft();
        d.scaling_target = Some(MAX_SCALING_TARGET);
        assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().concurrency_per_worker, MAX_CONCURRENCY as u32);
    }

    #[test]
    fn defaults() {
        let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
        assert_eq!(s.active_workers, 1);
        assert_eq!(s.max_workers, 3);
        assert_eq!(s.gpus_per_worker, 1);
        assert_eq!(s.gpu_type, "SIM");
        assert_eq!(s.data_center, "local");
        assert_eq!(s.shell, "/bin/sh");
        assert_eq!(s.health_check_path, "/health");
        assert_eq!(s.idle_timeout_secs, 10);
        assert_eq!(s.execution_timeout_secs, 600);
        assert_eq!(s.load_balancing, LoadBalancing::RoundRobin);
    }

    #[test]
    fn queue_kinds_and_delivery() {
        let q = |delivery: Option<&str>| {
            let mut d = draft();
            d.kind = Some("queue".into());
            d.delivery = delivery.map(Into::into);
            EndpointSpec::validate(d, &ctx()).map(|s| (s.kind, s.delivery))
        };
        assert_eq!(q(None).unwrap(), (EndpointKind::Queue, Delivery::Pull), "RunPod SDK workers by default");
        assert_eq!(q(Some("pull")).unwrap().1, Delivery::Pull);
        assert_eq!(q(Some("push")).unwrap().1, Delivery::Push);
        assert_eq!(q(Some("Push")).unwrap_err().field, "delivery");
        assert_eq!(q(Some("")).unwrap_err().field, "delivery");
        check(|d| d.kind = Some("batch".into()), Some("type"));
        // The spec round-trips its delivery through a draft.
        let mut d = draft();
        d.kind = Some("queue".into());
        d.delivery = Some("push".into());
        let s = EndpointSpec::validate(d, &ctx()).unwrap();
        assert_eq!(EndpointSpec::validate(s.to_draft(), &ctx()).unwrap().delivery, Delivery::Push);
    }

    #[test]
    fn name_counts_characters_not_bytes() {
        check(|d| d.name = Some("🦀".repeat(128)), None);
        check(|d| d.name = Some("é".repeat(128)), None);
        check(|d| d.name = Some("a".repeat(128)), None);
        check(|d| d.name = Some("a".repeat(129)), Some("name"));
        check(|d| d.name = Some("🦀".repeat(129)), Some("name"));
        check(|d| d.name = Some(String::new()), Some("name"));
        check(|d| d.name = Some("   ".into()), Some("name"));
        check(|d| d.name = Some("a\nb".into()), Some("name"));
        check(|d| d.name = None, Some("name"));
    }

    #[test]
    fn worker_counts() {
        check(|d| d.active_workers = Some(0), None);
        check(|d| d.active_workers = Some(-1), Some("active_workers"));
        check(|d| d.active_workers = Some(11), Some("active_workers"));
        check(
            |d| {
                d.active_workers = Some(5);
                d.max_workers = Some(4)
            },
            Some("max_workers"),
        );
        check(
            |d| {
                d.active_workers = Some(5);
                d.max_workers = Some(5)
            },
            None,
        );
        check(
            |d| {
                d.active_workers = Some(0);
                d.max_workers = Some(0)
            },
            Some("max_workers"),
        );
        check(|d| d.max_workers = Some(10), None);
        check(|d| d.max_workers = Some(11), Some("max_workers"));
        // A default max below a larger active count is raised to active.
        let mut d = draft();
        d.active_workers = Some(7);
        assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().max_workers, 7);
        check(|d| d.gpus_per_worker = Some(0), Some("gpus_per_worker"));
        check(|d| d.gpus_per_worker = Some(8), None);
        check(|d| d.gpus_per_worker = Some(9), Some("gpus_per_worker"));
    }

    #[test]
    fn catalog_fields() {
        check(|d| d.gpu_type = Some("A100".into()), None);
        check(|d| d.gpu_type = Some("H900".into()), Some("gpu_type"));
        check(|d| d.data_center = Some("eu-1".into()), None);
        check(|d| d.data_center = Some("mars".into()), Some("data_center"));
        check(|d| d.load_balancing = Some("least_outstanding_requests".into()), None);
        check(|d| d.load_balancing = Some("random".into()), Some("load_balancing"));
    }

    #[test]
    fn ports_timeouts_paths() {
        check(|d| d.http_port = Some(0), Some("http_port"));
        check(|d| d.http_port = Some(65535), None);
        check(|d| d.http_port = Some(65536), Some("http_port"));
        check(|d| d.idle_timeout_secs = Some(0), Some("idle_timeout_secs"));
        check(|d| d.idle_timeout_secs = Some(3600), None);
        check(|d| d.idle_timeout_secs = Some(3601), Some("idle_timeout_secs"));
        check(|d| d.execution_timeout_secs = Some(86_400), None);
        check(|d| d.execution_timeout_secs = Some(86_401), Some("execution_timeout_secs"));
        check(|d| d.execution_timeout_secs = Some(0), Some("execution_timeout_secs"));
        check(|d| d.startup_timeout_secs = Some(0), Some("startup_timeout_secs"));
        check(|d| d.health_check_path = Some("health".into()), Some("health_check_path"));
        check(|d| d.health_check_path = Some("/ready?x=1".into()), None);
        check(|d| d.health_check_path = Some("/a b".into()), Some("health_check_path"));
        check(|d| d.shell = Some("bash".into()), Some("shell"));
        check(|d| d.shell = Some("/bin/bash".into()), None);
    }

    #[test]
    fn env_rules() {
        let env = |k: &str| Some(BTreeMap::from([(k.to_owned(), "v".to_owned())]));
        check(|d| d.env = env("HF_TOKEN"), None);
        check(|d| d.env = env("_x1"), None);
        check(|d| d.env = env("1X"), Some("env"));
        check(|d| d.env = env("A-B"), Some("env"));
        check(|d| d.env = env(""), Some("env"));
        check(|d| d.env = env("HF_TOKEN=hf_abc"), Some("env"));
        check(|d| d.env = env("PORT"), Some("env.PORT"));
        check(|d| d.env = env("SLUICE_X"), Some("env.SLUICE_X"));
        check(|d| d.env = env("CUDA_VISIBLE_DEVICES"), Some("env.CUDA_VISIBLE_DEVICES"));
        check(|d| d.env = Some(BTreeMap::from([("BIG".into(), "x".repeat(MAX_ENV_VALUE_BYTES + 1))])), Some("env.BIG"));
    }

    #[test]
    fn volume_rules() {
        let vol = |n: &str, p: &str| Some(NetworkVolume { name: n.into(), mount_path: p.into() });
        check(|d| d.network_volume = vol("models", "/runpod-volume"), None);
        check(|d| d.network_volume = vol("models", "/data/models/"), None);
        check(|d| d.network_volume = vol("models", "data"), Some("network_volume.mount_path"));
        check(|d| d.network_volume = vol("models", "/data/../etc"), Some("network_volume.mount_path"));
        check(|d| d.network_volume = vol("models", "/.."), Some("network_volume.mount_path"));
        check(|d| d.network_volume = vol("models", "/"), Some("network_volume.mount_path"));
        check(|d| d.network_volume = vol("models", "/a//b"), Some("network_volume.mount_path"));
        check(|d| d.network_volume = vol("", "/data"), Some("network_volume.name"));
        check(|d| d.network_volume = vol("../x", "/data"), Some("network_volume.name"));
        check(|d| d.network_volume = vol("Big", "/data"), Some("network_volume.name"));
    }

    #[test]
    fn runtime_requirements() {
        check(|d| d.start_command = None, Some("start_command"));
        check(|d| d.start_command = Some("  ".into()), Some("start_command"));
        let mut c = ctx();
        c.runtime = RuntimeKind::Docker;
        let e = EndpointSpec::validate(EndpointDraft { name: Some("x".into()), ..Default::default() }, &c).unwrap_err();
        assert_eq!(e.field, "image");
        check(|d| d.image = Some("has space".into()), Some("image"));
        check(|d| d.image = Some("ghcr.io/x/y:1".into()), None);
    }

    #[test]
    fn scaling_settings() {
        let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
        assert_eq!(
            (s.scaling_target, s.concurrency_per_worker, s.queue_capacity, s.queue_timeout_secs),
            (100, 100, 1000, 600)
        );
        let mut d = draft();
        d.concurrency_per_worker = Some(4);
        let s = EndpointSpec::validate(d, &ctx()).unwrap();
        assert_eq!((s.scaling_target, s.concurrency_per_worker), (4, 4));
        let mut d = draft();
        d.scaling_target = Some(8);
        assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().concurrency_per_worker, 8);
        check(|d| d.scaling_policy = Some("knative".into()), None);
        check(|d| d.scaling_policy = Some("magic".into()), Some("scaling_policy"));
        check(|d| d.scaling_signal = Some("queue_delay".into()), None);
        check(|d| d.scaling_signal = Some("vibes".into()), Some("scaling_signal"));
        check(
            |d| {
                d.scaling_signal = Some("gpu_utilization".into());
                d.scaling_target = Some(101)
            },
            Some("scaling_target"),
        );
        check(|d| d.concurrency_per_worker = Some(0), Some("concurrency_per_worker"));
        check(|d| d.scale_down_max_percent = Some(101), Some("scale_down_max_percent"));
        check(|d| d.queue_timeout_secs = Some(0), Some("queue_timeout_secs"));
        check(|d| d.queue_capacity = Some(-1), Some("queue_capacity"));
    }

    #[test]
    fn overlay_and_roundtrip() {
        let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
        let patched = s.to_draft().overlay(EndpointDraft { max_workers: Some(5), ..Default::default() });
        let s2 = EndpointSpec::validate(patched, &ctx()).unwrap();
        assert_eq!(s2.max_workers, 5);
        assert_eq!(EndpointSpec { max_workers: 3, ..s2.clone() }, s);
        assert!(!s.workers_differ(&s2));
        let s3 = EndpointSpec { start_command: Some("other".into()), ..s.clone() };
        assert!(s.workers_differ(&s3));
        let scaled = s.to_draft().overlay(EndpointDraft {
            scaling_policy: Some("knative".into()),
            queue_capacity: Some(7),
            scale_up_max_percent: Some(50),
            ..Default::default()
        });
        let s4 = EndpointSpec::validate(scaled, &ctx()).unwrap();
        assert_eq!((s4.scaling_policy, s4.queue_capacity, s4.scale_up_max_percent), (Preset::Knative, 7, 50));
    }
}
