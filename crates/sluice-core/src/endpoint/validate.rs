//! Validation: a draft becomes an [`EndpointSpec`] only if every rule holds, and the first rule
//! that fails is reported naming its field (never repeating the submitted value).
use std::collections::BTreeMap;

use super::*;
use crate::FieldError;

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
/// The sleeping-worker settings: both paths when sleep is on, a count within `max_workers`, and
/// never for pull workers (RunPod's SDK has no sleep call; they are stopped as before).
fn validate_sleep(
    sleep_path: &Option<String>,
    wake_path: &Option<String>,
    max_sleeping: Option<i64>,
    ttl: Option<i64>,
    max_workers: i64,
    mode: &Mode,
) -> Result<Sleep, FieldError> {
    let path = |field: &str, p: &Option<String>| -> Result<Option<String>, FieldError> {
        match p.as_deref() {
            None | Some("") => Ok(None),
            Some(p) => {
                if p.chars().any(char::is_whitespace) {
                    return Err(FieldError::new(field, "must not contain whitespace"));
                }
                let only_path = p.split_once('?').map_or(p, |(path, _)| path);
                validate_abs_path(field, only_path, true)?;
                if p.len() > 1024 {
                    return Err(FieldError::new(field, "must be at most 1024 bytes"));
                }
                Ok(Some(p.to_owned()))
            }
        }
    };
    let sleep_path = path("sleep_path", sleep_path)?;
    let wake_path = path("wake_path", wake_path)?;
    let max_sleeping = range("max_sleeping", max_sleeping, 0, 0, 100)? as u32;
    let sleep_ttl_secs = range("sleep_ttl_secs", ttl, i64::from(DEFAULT_SLEEP_TTL_SECS), 10, 7 * 86_400)? as u32;
    if max_sleeping > 0 {
        if i64::from(max_sleeping) > max_workers {
            return Err(FieldError::new("max_sleeping", "must not exceed max_workers (sleepers count against it)"));
        }
        if mode.is_pull() {
            return Err(FieldError::new(
                "max_sleeping",
                "workers that take jobs with RunPod's worker protocol (delivery pull) cannot sleep; use delivery push or an HTTP endpoint",
            ));
        }
        if sleep_path.is_none() {
            return Err(FieldError::new("sleep_path", "is required when max_sleeping is above 0"));
        }
        if wake_path.is_none() {
            return Err(FieldError::new("wake_path", "is required when max_sleeping is above 0"));
        }
    }
    Ok(Sleep { sleep_path, wake_path, max_sleeping, sleep_ttl_secs })
}

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
                FieldError::new(
                    "load_balancing",
                    "must be round_robin, least_outstanding_requests, least_engine_load, session_affinity or prefix_aware",
                )
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
        if matches!(scaling_signal, Signal::GpuUtilization | Signal::KvCache) && scaling_target > 100 {
            return Err(FieldError::new("scaling_target", "a utilization target is a percentage (1-100)"));
        }
        let mode = match (kind, delivery) {
            (EndpointKind::Http, _) => Mode::Http,
            (EndpointKind::Queue, Delivery::Pull) => Mode::QueuePull,
            (EndpointKind::Queue, Delivery::Push) => Mode::QueuePush { job_path },
        };
        let models = crate::models::validate_models(d.models.as_deref().unwrap_or_default())?;
        let served_models = validate_served_models(d.served_models.as_deref().unwrap_or_default())?;
        let metrics_path = match d.metrics_path.as_deref() {
            None | Some("") => None,
            Some(p)
                if p.starts_with('/') && p.len() <= 256 && !p.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Some(p.to_owned())
            }
            Some(_) => return Err(FieldError::new("metrics_path", "must be a path starting with '/', without spaces")),
        };
        let engine = d.engine.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "vllm".into());
        crate::engine::validate(&engine).map_err(|m| FieldError::new("engine", m))?;
        if metrics_path.is_none()
            && (matches!(scaling_signal, Signal::EngineQueue | Signal::KvCache)
                || load_balancing == LoadBalancing::LeastEngineLoad)
        {
            return Err(FieldError::new(
                if load_balancing == LoadBalancing::LeastEngineLoad { "load_balancing" } else { "scaling_signal" },
                "reads the engine's own metrics: set metrics_path (e.g. /metrics)",
            ));
        }
        let session_header = match d.session_header.as_deref() {
            None | Some("") => None,
            Some(h)
                if (1..=64).contains(&h.len())
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(FieldError::new(
                    "session_header",
                    "must be a header name: 1-64 letters, digits, '-' or '_'",
                ));
            }
        };
        let sleep = validate_sleep(&d.sleep_path, &d.wake_path, d.max_sleeping, d.sleep_ttl_secs, max_workers, &mode)?;
        let insight = validate_insight(
            d.trace_retention_hours,
            d.trace_max_mb,
            d.shadow_policies.as_deref().unwrap_or_default(),
            d.slo_p99_secs,
            d.slo_mode.as_deref(),
            scaling_policy,
        )?;
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
            health_check_path,
            mode,
            workers: WorkerSettings {
                active_workers: active_workers as u32,
                max_workers: max_workers as u32,
                gpus_per_worker,
                gpu_type,
            },
            timeouts: Timeouts { idle_timeout_secs, execution_timeout_secs, startup_timeout_secs },
            autoscale: Autoscale {
                scaling_policy,
                scaling_signal,
                scaling_target,
                scale_up_window_secs,
                scale_up_max_percent,
                scale_down_delay_secs,
                scale_down_max_percent,
            },
            limits: Limits {
                load_balancing,
                concurrency_per_worker,
                queue_capacity,
                queue_timeout_secs,
                max_requests_per_minute,
            },
            sleep,
            insight,
            models,
            served_models,
            session_header,
            metrics_path,
            engine,
        })
    }
}

/// At most this many shadow policies per endpoint (each is one more decision per tick).
pub const MAX_SHADOWS: usize = 4;

/// Recording, shadows and the SLO target.
fn validate_insight(
    retention: Option<i64>,
    max_mb: Option<i64>,
    names: &[String],
    slo: Option<f64>,
    mode: Option<&str>,
    policy: Preset,
) -> Result<super::Insight, FieldError> {
    let trace_retention_hours =
        range("trace_retention_hours", retention, i64::from(super::DEFAULT_TRACE_RETENTION_HOURS), 0, 24 * 366)? as u32;
    let trace_max_mb = range("trace_max_mb", max_mb, i64::from(super::DEFAULT_TRACE_MAX_MB), 1, 100_000)? as u32;
    let slo_p99_secs = match slo {
        None => None,
        Some(0.0) => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Some(s),
        Some(_) => {
            return Err(FieldError::new(
                "slo_p99_secs",
                "must be a number of seconds above 0 and at most 3600 (0 clears it)",
            ));
        }
    };
    let slo_mode = match mode {
        None | Some("apply") => super::SloMode::Apply,
        Some("advise") => super::SloMode::Advise,
        Some(_) => return Err(FieldError::new("slo_mode", "must be apply or advise")),
    };
    if names.len() > MAX_SHADOWS {
        return Err(FieldError::new("shadow_policies", format!("at most {MAX_SHADOWS} policies")));
    }
    let mut shadow_policies = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let p = Preset::parse(n).ok_or_else(|| {
            FieldError::new(format!("shadow_policies[{i}]"), format!("unknown policy; known: {}", Preset::names()))
        })?;
        if shadow_policies.contains(&p) {
            return Err(FieldError::new(format!("shadow_policies[{i}]"), "is listed twice"));
        }
        shadow_policies.push(p);
    }
    if slo_p99_secs.is_none() {
        if policy == Preset::Slo {
            return Err(FieldError::new("scaling_policy", "slo needs slo_p99_secs (the p99 target, seconds)"));
        }
        if let Some(i) = shadow_policies.iter().position(|p| *p == Preset::Slo) {
            return Err(FieldError::new(
                format!("shadow_policies[{i}]"),
                "slo needs slo_p99_secs (the p99 target, seconds)",
            ));
        }
    }
    Ok(super::Insight { trace_retention_hours, trace_max_mb, shadow_policies, slo_p99_secs, slo_mode })
}

/// At most this many served model names per endpoint.
pub const MAX_SERVED_MODELS: usize = 16;

/// `served_models`: names as OpenAI clients send them (`Qwen/Qwen2.5-7B-Instruct`, `gpt-4o`,
/// `llama3:8b`), 1-256 of letters, digits and `._:/@+-`, no name twice.
fn validate_served_models(names: &[String]) -> Result<Vec<String>, FieldError> {
    if names.len() > MAX_SERVED_MODELS {
        return Err(FieldError::new("served_models", format!("at most {MAX_SERVED_MODELS} names")));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let ok =
            (1..=256).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@+-".contains(&b));
        if !ok {
            return Err(FieldError::new(
                format!("served_models[{i}]"),
                "must be 1-256 letters, digits or any of . _ : / @ + -",
            ));
        }
        if out.contains(n) {
            return Err(FieldError::new(format!("served_models[{i}]"), "is listed twice"));
        }
        out.push(n.clone());
    }
    Ok(out)
}
