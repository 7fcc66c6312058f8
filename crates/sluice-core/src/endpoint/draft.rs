//! The draft: an endpoint as submitted (API body or TOML file), every field optional, and the
//! spec back as a draft for updates ("old spec + patch", validated as a whole).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EndpointKind, EndpointSpec, NetworkVolume, RegistryAuth};

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
    /// Sleeping workers: "" clears a path.
    pub sleep_path: Option<String>,
    pub wake_path: Option<String>,
    pub max_sleeping: Option<i64>,
    pub sleep_ttl_secs: Option<i64>,
    /// Models to stage: `[]` clears them.
    pub models: Option<Vec<crate::models::ModelDraft>>,
    /// Names a client may send as `model` to the account's OpenAI base URL: `[]` clears them.
    pub served_models: Option<Vec<String>>,
    /// The header `session_affinity` keys on: "" for the default (`X-Session-ID`).
    pub session_header: Option<String>,
    /// The workers' Prometheus path, scraped for the engine's load: "" turns it off.
    pub metrics_path: Option<String>,
    /// Whose metric names: `vllm`, `sglang`, `tgi`, or `RUNNING,WAITING[,KV_CACHE]`.
    pub engine: Option<String>,
    /// Recorded traffic: hours kept (0: not recorded) and megabytes at most.
    pub trace_retention_hours: Option<i64>,
    pub trace_max_mb: Option<i64>,
    /// Policies evaluated beside the real one, never acting: `[]` clears them.
    pub shadow_policies: Option<Vec<String>>,
    /// The `slo` policy's p99 target in seconds: 0 clears it.
    pub slo_p99_secs: Option<f64>,
    /// `apply` (default) or `advise`.
    pub slo_mode: Option<String>,
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
            max_requests_per_minute,
            sleep_path,
            wake_path,
            max_sleeping,
            sleep_ttl_secs,
            models,
            served_models,
            session_header,
            metrics_path,
            engine,
            trace_retention_hours,
            trace_max_mb,
            shadow_policies,
            slo_p99_secs,
            slo_mode
        );
        self
    }
}

impl EndpointSpec {
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
            kind: Some(match self.mode.kind() {
                EndpointKind::Http => "http".into(),
                EndpointKind::Queue => "queue".into(),
            }),
            delivery: self.mode.is_queue().then(|| self.mode.delivery().as_str().into()),
            job_path: self.mode.job_path().map(str::to_owned),
            health_check_path: Some(self.health_check_path.clone()),
            idle_timeout_secs: Some(self.timeouts.idle_timeout_secs.into()),
            execution_timeout_secs: Some(self.timeouts.execution_timeout_secs.into()),
            startup_timeout_secs: Some(self.timeouts.startup_timeout_secs.into()),
            active_workers: Some(self.workers.active_workers.into()),
            max_workers: Some(self.workers.max_workers.into()),
            gpus_per_worker: Some(self.workers.gpus_per_worker.into()),
            gpu_type: Some(self.workers.gpu_type.clone()),
            load_balancing: Some(self.limits.load_balancing.as_str().to_owned()),
            scaling_policy: Some(self.autoscale.scaling_policy.as_str().to_owned()),
            scaling_signal: Some(self.autoscale.scaling_signal.as_str().to_owned()),
            scaling_target: Some(self.autoscale.scaling_target.into()),
            concurrency_per_worker: Some(self.limits.concurrency_per_worker.into()),
            scale_up_window_secs: Some(self.autoscale.scale_up_window_secs.into()),
            scale_up_max_percent: Some(self.autoscale.scale_up_max_percent.into()),
            scale_down_delay_secs: Some(self.autoscale.scale_down_delay_secs.into()),
            scale_down_max_percent: Some(self.autoscale.scale_down_max_percent.into()),
            queue_capacity: Some(self.limits.queue_capacity.into()),
            queue_timeout_secs: Some(self.limits.queue_timeout_secs.into()),
            max_requests_per_minute: Some(self.limits.max_requests_per_minute.map_or(0, i64::from)),
            sleep_path: Some(self.sleep.sleep_path.clone().unwrap_or_default()),
            wake_path: Some(self.sleep.wake_path.clone().unwrap_or_default()),
            max_sleeping: Some(self.sleep.max_sleeping.into()),
            sleep_ttl_secs: Some(self.sleep.sleep_ttl_secs.into()),
            models: Some(
                self.models
                    .iter()
                    .map(|m| crate::models::ModelDraft {
                        source: m.source.display(),
                        include: Some(m.include.clone()),
                        exclude: Some(m.exclude.clone()),
                    })
                    .collect(),
            ),
            served_models: Some(self.served_models.clone()),
            session_header: Some(self.session_header.clone().unwrap_or_default()),
            metrics_path: Some(self.metrics_path.clone().unwrap_or_default()),
            engine: Some(self.engine.clone()),
            trace_retention_hours: Some(self.insight.trace_retention_hours.into()),
            trace_max_mb: Some(self.insight.trace_max_mb.into()),
            shadow_policies: Some(self.insight.shadow_policies.iter().map(|p| p.as_str().to_owned()).collect()),
            slo_p99_secs: Some(self.insight.slo_p99_secs.unwrap_or(0.0)),
            slo_mode: Some(self.insight.slo_mode.as_str().to_owned()),
        }
    }
}
