//! The arguments of the API commands: endpoints, accounts, keys, credit, images, and the
//! endpoint spec they are built from (flags over a TOML file).
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sluice_api::{EndpointInput, NetworkVolumeDto};

#[derive(Subcommand)]
pub(super) enum EndpointCmd {
    /// Create an endpoint from flags and/or a TOML file.
    Create {
        #[command(flatten)]
        spec: SpecArgs,
        /// Show the image pull as a progress bar, then wait for the first ready worker.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, seconds.
        #[arg(long, default_value_t = 1800)]
        wait_timeout: u64,
    },
    /// List endpoints.
    List,
    /// Show one endpoint.
    Get { id: String },
    /// Change an endpoint; only the given fields change.
    Update {
        id: String,
        #[command(flatten)]
        spec: SpecArgs,
        /// Wait for the rolling replacement of the workers to finish, showing its progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, seconds.
        #[arg(long, default_value_t = 1800)]
        wait_timeout: u64,
    },
    /// Stop an endpoint: its workers drain and stop; requests get 503.
    Stop { id: String },
    /// Start a stopped endpoint.
    Start { id: String },
    /// Delete an endpoint and its workers.
    Delete { id: String },
    /// List an endpoint's workers.
    Workers { id: String },
    /// The status page figures: concurrency limits, requests per minute, running and queued.
    Status { id: String },
    /// Scaling decisions of an endpoint, newest first, with their reasons.
    Events {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only events older than this event id (the previous page's next_before).
        #[arg(long)]
        before: Option<i64>,
    },
}

/// Credentials for a private registry. The password is read from an environment variable so
/// that it never appears in a process list or shell history.
#[derive(Args, Default)]
pub(super) struct RegistryArgs {
    /// Registry host of a private image, e.g. ghcr.io.
    #[arg(long, requires_all = ["registry_username", "registry_password_env"])]
    registry_server: Option<String>,
    #[arg(long)]
    registry_username: Option<String>,
    /// Name of the environment variable holding the registry password.
    #[arg(long, value_name = "VAR")]
    registry_password_env: Option<String>,
}

impl RegistryArgs {
    pub(super) fn into_dto(self) -> anyhow::Result<Option<sluice_api::RegistryAuthDto>> {
        let (Some(server), Some(username), Some(var)) =
            (self.registry_server, self.registry_username, self.registry_password_env)
        else {
            return Ok(None);
        };
        let password = std::env::var(&var).with_context(|| format!("--registry-password-env: ${var} is not set"))?;
        Ok(Some(sluice_api::RegistryAuthDto { server, username, password }))
    }
}

#[derive(Subcommand)]
pub(super) enum AccountCmd {
    /// Create an account; prints its first key (shown only once).
    Create {
        name: String,
        /// Cap on max_workers of any of its endpoints (default: the platform's).
        #[arg(long)]
        quota: Option<i64>,
    },
    List,
    /// Change an account's quota or webhook.
    Update {
        name: String,
        #[arg(long)]
        quota: Option<i64>,
        /// http:// URL that low-credit warnings are POSTed to ("" clears it).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Warnings, turn-offs and top-ups of an account, newest first.
    Events {
        name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum CreditCmd {
    /// Add dollars to an account's balance.
    Add { account: String, usd: f64 },
}

#[derive(Subcommand)]
pub(super) enum KeyCmd {
    /// Create a key; prints it (shown only once).
    Create {
        #[arg(long)]
        label: Option<String>,
        /// Admin only: another account.
        #[arg(long)]
        account: Option<String>,
    },
    /// List keys: id, prefix and label, never the key.
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a key by its id (from `key list`).
    Revoke {
        id: String,
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
pub(super) enum ImageCmd {
    /// Pull an image on every node (of a data center) now, so no worker start waits for it.
    Prewarm {
        image: String,
        #[arg(long)]
        data_center: Option<String>,
        /// Return at once instead of showing progress until the pull ends.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull states of the images the platform knows.
    List,
}

#[derive(Subcommand)]
pub(super) enum ModelsCmd {
    /// The models of your endpoints and where they stand on each node (the default).
    List,
    /// Stage models into a cache directory now, as the platform does (Kubernetes runs this in
    /// each worker Pod's init container). A gated or private repository's token is read from
    /// $HF_TOKEN.
    Fetch {
        /// hf://org/name[@revision] or an https:// file URL; repeatable.
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<String>,
        /// The cache's root (HF_HUB_CACHE is its `hub/` folder).
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// Only files matching this glob (repeatable; applies to every source given).
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Never files matching this glob (repeatable).
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// The hub or a mirror (default $HF_ENDPOINT, else https://huggingface.co).
        #[arg(long, env = "HF_ENDPOINT")]
        hf_endpoint: Option<String>,
    },
}

#[derive(Args, Default)]
pub(super) struct SpecArgs {
    /// TOML file with endpoint fields (the same fields as the API body); flags override it.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    start_command: Option<String>,
    #[arg(long)]
    shell: Option<String>,
    #[arg(long)]
    data_center: Option<String>,
    #[arg(long)]
    http_port: Option<i64>,
    /// KEY=VALUE, repeatable. Replaces the whole environment on update.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// NAME:/mount/path
    #[arg(long)]
    volume: Option<String>,
    #[arg(long)]
    health_check_path: Option<String>,
    #[arg(long)]
    idle_timeout_secs: Option<i64>,
    #[arg(long)]
    execution_timeout_secs: Option<i64>,
    #[arg(long)]
    startup_timeout_secs: Option<i64>,
    #[arg(long)]
    active_workers: Option<i64>,
    #[arg(long)]
    max_workers: Option<i64>,
    #[arg(long)]
    gpus_per_worker: Option<i64>,
    #[arg(long)]
    gpu_type: Option<String>,
    /// round_robin, least_outstanding_requests, session_affinity or prefix_aware
    #[arg(long)]
    load_balancing: Option<String>,
    /// Autoscaling policy: default, seed-atlas, seed-damped, seed-hf, fixed-keepalive, knative, hpa, ray-serve, beta9
    #[arg(long)]
    scaling_policy: Option<String>,
    /// concurrency, request_count, queue_delay, rpm or gpu_utilization
    #[arg(long)]
    scaling_signal: Option<String>,
    #[arg(long)]
    scaling_target: Option<i64>,
    #[arg(long)]
    concurrency_per_worker: Option<i64>,
    #[arg(long)]
    scale_up_window_secs: Option<i64>,
    #[arg(long)]
    scale_up_max_percent: Option<i64>,
    #[arg(long)]
    scale_down_delay_secs: Option<i64>,
    #[arg(long)]
    scale_down_max_percent: Option<i64>,
    #[arg(long)]
    queue_capacity: Option<i64>,
    #[arg(long)]
    queue_timeout_secs: Option<i64>,
    /// Requests per minute through the gateway (0: unlimited).
    #[arg(long)]
    max_requests_per_minute: Option<i64>,
    /// Reachable through the gateway without a key.
    #[arg(long)]
    public: Option<bool>,
    /// http (default) or queue (RunPod-style jobs under /v2/{id}/).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Queue endpoints: pull (default; workers built on runpod.serverless.start() take jobs) or
    /// push (the platform POSTs {"id", "input"} to the worker's --job-path).
    #[arg(long)]
    delivery: Option<String>,
    /// Queue endpoints: the worker path jobs are POSTed to (default /).
    #[arg(long)]
    job_path: Option<String>,
    /// Sleeping workers: POSTed to put a scaled-down worker to sleep (e.g. vLLM's
    /// "/sleep?level=1"; "" clears it).
    #[arg(long)]
    sleep_path: Option<String>,
    /// POSTed to wake a sleeper (e.g. vLLM's "/wake_up"; "" clears it).
    #[arg(long)]
    wake_path: Option<String>,
    /// How many workers may sleep at once (0: none).
    #[arg(long)]
    max_sleeping: Option<i64>,
    /// A sleeper stops this long after it went to sleep (default 3600).
    #[arg(long)]
    sleep_ttl_secs: Option<i64>,
    /// A model staged on the nodes before a worker starts and mounted read-only with
    /// HF_HUB_CACHE: hf://org/name[@revision] or an https:// file URL. Repeatable; replaces the
    /// list on update ("" clears it). File patterns go in the TOML file (`models`).
    #[arg(long = "model", value_name = "SOURCE")]
    models: Vec<String>,
    /// A name OpenAI clients may send as `model` to the account's base URL (the gateway's
    /// /openai/v1); repeatable; replaces the list on update ("" clears it).
    #[arg(long = "served-model", value_name = "NAME")]
    served_models: Vec<String>,
    /// With --load-balancing session_affinity: the header holding the session key (default
    /// X-Session-ID).
    #[arg(long)]
    session_header: Option<String>,
    /// Hours of recorded traffic kept (default 168; 0: nothing recorded).
    #[arg(long)]
    trace_retention_hours: Option<i64>,
    /// Megabytes of recorded traffic kept at most (default 64).
    #[arg(long)]
    trace_max_mb: Option<i64>,
    /// A policy evaluated beside the real one, never acting (e.g. knative, slo); repeatable;
    /// replaces the list on update ("" clears it).
    #[arg(long = "shadow-policy", value_name = "POLICY")]
    shadow_policies: Vec<String>,
    /// The slo policy's p99 target, end to end, in seconds (0 clears it).
    #[arg(long)]
    slo_p99_secs: Option<f64>,
    /// apply (default) or advise: the slo policy records what it would set without setting it.
    #[arg(long)]
    slo_mode: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl SpecArgs {
    pub(super) fn into_input(self) -> anyhow::Result<EndpointInput> {
        let mut input = match &self.file {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                // toml's own report quotes the offending line, which may hold a secret: say where
                // and what was wrong instead, as the API does.
                toml::from_str::<EndpointInput>(&text).map_err(|e| {
                    let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                    anyhow::anyhow!("in endpoint file {}, line {line}: {}", p.display(), sluice_api::scrub(e.message()))
                })?
            }
            None => EndpointInput::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if self.$f.is_some() { input.$f = self.$f; } )* };
        }
        set!(
            name,
            image,
            start_command,
            shell,
            data_center,
            http_port,
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
            public,
            kind,
            delivery,
            job_path,
            sleep_path,
            wake_path,
            max_sleeping,
            sleep_ttl_secs,
            session_header,
            trace_retention_hours,
            trace_max_mb,
            slo_p99_secs,
            slo_mode
        );
        if !self.shadow_policies.is_empty() {
            input.shadow_policies = Some(self.shadow_policies.iter().filter(|m| !m.is_empty()).cloned().collect());
        }
        if !self.served_models.is_empty() {
            input.served_models = Some(self.served_models.iter().filter(|m| !m.is_empty()).cloned().collect());
        }
        if !self.env.is_empty() {
            let mut env = BTreeMap::new();
            for kv in &self.env {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--env: expected KEY=VALUE (an argument without '=')")
                };
                env.insert(k.to_owned(), v.to_owned());
            }
            input.env = Some(env);
        }
        if !self.models.is_empty() {
            input.models = Some(
                self.models
                    .iter()
                    .filter(|m| !m.is_empty())
                    .map(|m| sluice_api::ModelInput { source: m.clone(), include: None, exclude: None })
                    .collect(),
            );
        }
        if let Some(a) = self.registry.into_dto()? {
            input.registry_auth = Some(a);
        }
        if let Some(v) = &self.volume {
            let Some((name, path)) = v.split_once(':') else { bail!("--volume {v:?}: expected NAME:/mount/path") };
            input.network_volume = Some(NetworkVolumeDto { name: name.into(), mount_path: path.into() });
        }
        Ok(input)
    }
}
