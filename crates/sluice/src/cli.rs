//! The `sluice` command line: `up` runs the platform; `endpoint …` drives the REST API.
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::Value;
use sluice_api::{EndpointInput, NetworkVolumeDto};

use crate::{client::ApiClient, config::Config, table};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Self-hosted serverless GPU endpoints", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the whole platform in one process (control API, gateway, workers, embedded store).
    #[command(args_override_self = true)]
    Up(UpArgs),
    /// Run the control plane alone (API, reconciler, autoscaler, metering, jobs), for separate
    /// `sluice gateway` processes; takes `up`'s options (`--gateway-addr` is where clients reach
    /// the gateways, for the URLs the API shows).
    #[command(args_override_self = true)]
    Control(UpArgs),
    /// Run a gateway (data plane only) in front of a `sluice control`.
    Gateway {
        /// The control plane's API URL; with several control processes, their URLs separated by
        /// commas (any of them answers; the next is tried when one is down).
        #[arg(long, env = "SLUICE_CONTROL")]
        control: String,
        /// The admin key (gateways read the routing table and report traffic with it).
        #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Where to listen (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        gateway_addr: std::net::SocketAddr,
        /// Domain of host-form endpoint URLs.
        #[arg(long, default_value = "localhost")]
        domain: String,
        /// This gateway's name in its reports [default: gw-PID].
        #[arg(long)]
        id: Option<String>,
        /// Serve this gateway's own Prometheus /metrics here (with whether it reaches the
        /// control plane).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Manage endpoints through the control API.
    #[command(subcommand_required = true)]
    Endpoint {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// Deploy an endpoint from a quick-deploy template: `sluice deploy vllm --set model=Qwen/Qwen2.5-7B-Instruct`.
    Deploy {
        #[command(flatten)]
        conn: Conn,
        /// Template name (`sluice templates` lists them).
        template: String,
        /// Template parameter, KEY=VALUE; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Container images on the nodes: pull ahead of need (prewarm) and show pull states.
    #[command(subcommand_required = true)]
    Image {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Accounts (admin key): create, list, change the quota.
    #[command(subcommand_required = true)]
    Account {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Credit (admin): `sluice credit add ACCOUNT USD`.
    #[command(subcommand_required = true)]
    Credit {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: CreditCmd,
    },
    /// API keys of your account (the admin may name any account).
    #[command(subcommand_required = true)]
    Key {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// GPU-seconds and cost by endpoint and day.
    /// An endpoint's log: worker output and platform events. `-f` follows it live.
    Logs {
        #[command(flatten)]
        conn: Conn,
        endpoint: String,
        /// Keep printing new lines as they come (Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// Only this worker's lines.
        #[arg(long)]
        worker: Option<String>,
        /// stdout, stderr or platform.
        #[arg(long)]
        stream: Option<String>,
        /// From: an age (10m, 2h, 7d), RFC 3339 or Unix ms.
        #[arg(long)]
        since: Option<String>,
        /// Until (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Only lines containing this (case-insensitive; * matches anything).
        #[arg(long)]
        grep: Option<String>,
        /// How many of the newest matching lines (1-5000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    Usage {
        #[command(flatten)]
        conn: Conn,
        /// From (inclusive): YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC.
        #[arg(long)]
        from: Option<String>,
        /// To (exclusive).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        /// Admin only: one account.
        #[arg(long)]
        account: Option<String>,
    },
    /// The GPU inventory: each node's GPUs, their type, and the worker holding each.
    Gpus {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the quick-deploy templates and their parameters.
    Templates {
        #[command(flatten)]
        conn: Conn,
    },
    /// Replay a request trace through autoscaling policies and compare cost, latency, rejections.
    Sim(crate::sim::SimArgs),
    /// Recommend active/max workers from latency and RPM (seed 001), or search a trace for the
    /// cheapest setting that meets a p99 target.
    Plan(crate::sim::PlanArgs),
    /// The demo worker (used by the demo endpoint and the tests).
    #[command(hide = true)]
    DemoWorker {
        /// Port to listen on (default: $PORT).
        #[arg(long, env = "PORT")]
        port: u16,
        /// Address to listen on (0.0.0.0 inside a container).
        #[arg(long, env = "DEMO_HOST", default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Simulated model-loading time before the worker listens.
        #[arg(long, env = "DEMO_STARTUP_DELAY_MS", default_value_t = 0)]
        startup_delay_ms: u64,
    },
}

#[derive(Args)]
struct UpArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (state, logs, volumes, admin.key, addresses.json).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The store: a postgres:// URL shared by several control processes [default: SQLite in
    /// the data directory].
    #[arg(long, env = "SLUICE_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Where other control processes reach this one's API [default: http://API_ADDR].
    #[arg(long)]
    advertise_url: Option<String>,
    /// Control API address (port 0 picks a free port).
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// Gateway address (port 0 picks a free port).
    #[arg(long)]
    gateway_addr: Option<SocketAddr>,
    /// Domain of endpoint URLs: {id}.{data_center}.{domain}.
    #[arg(long)]
    domain: Option<String>,
    /// Do not create the demo endpoint.
    #[arg(long)]
    no_demo: bool,
    /// Log format: pretty or json.
    #[arg(long)]
    log_format: Option<String>,
    /// What runs workers: process, docker, or kubernetes (builds with the k8s feature).
    #[arg(long, value_parser = ["process", "docker", "kubernetes"])]
    runtime: Option<String>,
    /// How often running workers' usage is written to the ledger (1-60 s).
    #[arg(long)]
    metering_interval_secs: Option<u64>,
    /// RUNPOD_PING_INTERVAL for pull workers, ms (500-60000); three missed pings = dead.
    #[arg(long)]
    worker_ping_interval_ms: Option<u64>,
    /// The platform's address as pull workers reach it [default: the gateway's address].
    #[arg(long)]
    worker_api_url: Option<String>,
}

/// Where the API is and how to authenticate.
#[derive(Args)]
struct Conn {
    /// Control API URL [default: from DATA_DIR/addresses.json, else http://127.0.0.1:8081].
    #[arg(long, env = "SLUICE_API", global = true)]
    api: Option<String>,
    /// API key [default: DATA_DIR/admin.key].
    #[arg(long, env = "SLUICE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Data directory of a local platform, to find its address and admin key.
    #[arg(long, env = "SLUICE_DATA_DIR", global = true, default_value = ".sluice")]
    data_dir: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output (it is shown only on a terminal anyway, or with SLUICE_PROGRESS=always).
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum EndpointCmd {
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
struct RegistryArgs {
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
    fn into_dto(self) -> anyhow::Result<Option<sluice_api::RegistryAuthDto>> {
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
enum AccountCmd {
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
enum CreditCmd {
    /// Add dollars to an account's balance.
    Add { account: String, usd: f64 },
}

#[derive(Subcommand)]
enum KeyCmd {
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
enum ImageCmd {
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

#[derive(Args, Default)]
struct SpecArgs {
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
    /// round_robin or least_outstanding_requests
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
    #[command(flatten)]
    registry: RegistryArgs,
}

impl SpecArgs {
    fn into_input(self) -> anyhow::Result<EndpointInput> {
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
            job_path
        );
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Up(a) => up(a, crate::platform::Role::All).await,
        Cmd::Control(a) => up(a, crate::platform::Role::Control).await,
        Cmd::Gateway { control, api_key, gateway_addr, domain, id, metrics_addr } => {
            init_logging("pretty");
            let id = id.unwrap_or_else(|| format!("gw-{}", std::process::id()));
            let cfg = crate::remote_gateway::RemoteGatewayConfig {
                control,
                key: api_key,
                listen: gateway_addr,
                domain,
                id,
                metrics: metrics_addr,
            };
            crate::remote_gateway::run(cfg, crate::platform::signal()).await
        }
        Cmd::Endpoint { conn, cmd } => endpoint(conn, cmd).await,
        Cmd::Deploy { conn, template, set, registry } => deploy(conn, template, set, registry).await,
        Cmd::Templates { conn } => templates(conn).await,
        Cmd::Gpus { conn } => gpus(conn).await,
        Cmd::Usage { conn, from, to, endpoint, account } => usage(conn, from, to, endpoint, account).await,
        Cmd::Logs { conn, endpoint, follow, worker, stream, since, until, grep, limit } => {
            let mut path = format!("/v1/endpoints/{endpoint}/logs?limit={limit}");
            for (k, v) in [("worker", worker), ("stream", stream), ("since", since), ("until", until), ("q", grep)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", sluice_core::pull::query_value(&v)));
                }
            }
            logs(conn, path, follow).await
        }
        Cmd::Account { conn, cmd } => account(conn, cmd).await,
        Cmd::Key { conn, cmd } => key(conn, cmd).await,
        Cmd::Credit { conn, cmd: CreditCmd::Add { account, usd } } => {
            let body = serde_json::json!({ "amount_usd": usd });
            let v = conn.client().call(Method::POST, &format!("/v1/accounts/{account}/credit"), Some(&body)).await?;
            print_json_or(&conn, &v, |v| {
                println!("account {} balance ${:.2}", s(&v["name"]), v["balance_usd"].as_f64().unwrap_or(0.0))
            })
        }
        Cmd::Image { conn, cmd } => image(conn, cmd).await,
        Cmd::Sim(a) => crate::sim::run(a),
        Cmd::Plan(a) => crate::sim::plan(a),
        Cmd::DemoWorker { host, port, startup_delay_ms } => crate::demo::run(host, port, startup_delay_ms).await,
    }
}

fn print_log_line(json: bool, l: &serde_json::Value) {
    if json {
        println!("{l}");
    } else {
        let worker = l["worker"].as_str().unwrap_or("-");
        println!("{}  {worker:<12}  {:<8}  {}", s(&l["time"]), s(&l["stream"]), s(&l["line"]));
    }
}

async fn logs(conn: Conn, path: String, follow: bool) -> anyhow::Result<()> {
    let client = conn.client();
    if !follow {
        let v = client.call(Method::GET, &path, None).await?;
        for l in v["lines"].as_array().into_iter().flatten() {
            print_log_line(conn.json, l);
        }
        if let Some(n) = v["dropped"].as_u64().filter(|n| *n > 0) {
            eprintln!("({n} lines of this endpoint were dropped: the platform could not store them fast enough)");
        }
        return Ok(());
    }
    let mut last = None;
    loop {
        let json = conn.json;
        let followed = client
            .follow_events(&format!("{path}&follow=true"), last.clone(), |_, data| {
                if let Ok(l) = serde_json::from_str::<serde_json::Value>(data) {
                    print_log_line(json, &l);
                }
            })
            .await;
        match followed {
            Ok(id) => last = id.or(last),
            // The API refused (bad query, unknown endpoint): no point in retrying.
            Err(e) if e.downcast_ref::<crate::client::ApiError>().is_some() => return Err(e),
            Err(e) => eprintln!("log stream interrupted ({e:#}); reconnecting"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn up(a: UpArgs, role: crate::platform::Role) -> anyhow::Result<()> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = a.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = a.database {
        cfg.database = Some(v);
    }
    if let Some(v) = a.advertise_url {
        cfg.advertise_url = Some(v);
    }
    if let Some(v) = a.api_addr {
        cfg.api_addr = v;
    }
    if let Some(v) = a.gateway_addr {
        cfg.gateway_addr = v;
    }
    if let Some(v) = a.domain {
        cfg.domain = v;
    }
    if let Some(v) = a.log_format {
        cfg.log_format = v;
    }
    if a.no_demo {
        cfg.demo = false;
    }
    if let Some(v) = a.metering_interval_secs {
        cfg.metering_interval_secs = v;
    }
    if let Some(v) = a.worker_ping_interval_ms {
        cfg.worker_ping_interval_ms = v;
    }
    if let Some(v) = a.worker_api_url {
        cfg.worker_api_url = Some(v);
    }
    match a.runtime.as_deref() {
        Some("docker") => cfg.runtime = sluice_core::RuntimeKind::Docker,
        Some("kubernetes") => cfg.runtime = sluice_core::RuntimeKind::Kubernetes,
        Some(_) => cfg.runtime = sluice_core::RuntimeKind::Process,
        None => {}
    }
    cfg.check()?;
    init_logging(&cfg.log_format);
    crate::platform::run_as(cfg, role, crate::platform::signal()).await
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

impl Conn {
    fn client(&self) -> ApiClient {
        crate::progress::set_quiet(self.quiet);
        let api = self.api.clone().unwrap_or_else(|| {
            std::fs::read(self.data_dir.join("addresses.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<sluice_api::Addresses>(&b).ok())
                .map_or_else(|| "http://127.0.0.1:8081".to_owned(), |a| a.api)
        });
        let key = self
            .api_key
            .clone()
            .or_else(|| std::fs::read_to_string(self.data_dir.join("admin.key")).ok().map(|k| k.trim().to_owned()));
        ApiClient::new(&api, key)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_endpoint(v: &Value) {
    let w = &v["workers"];
    let lines = [
        ("id", s(&v["id"])),
        ("name", s(&v["name"])),
        ("status", s(&v["status"])),
        ("url", s(&v["url"])),
        ("path url", s(&v["path_url"])),
        (
            "workers",
            format!(
                "{} ready, {} starting, {} pending, {} draining (desired {}; active {}, max {})",
                s(&w["ready"]),
                s(&w["starting"]),
                s(&w["pending"]),
                s(&w["draining"]),
                s(&w["desired"]),
                s(&v["active_workers"]),
                s(&v["max_workers"])
            ),
        ),
        ("gpus", format!("{} x {}", s(&v["gpus_per_worker"]), s(&v["gpu_type"]))),
        ("data center", s(&v["data_center"])),
        ("image", s(&v["image"])),
        ("start command", s(&v["start_command"])),
        ("health check", s(&v["health_check_path"])),
        (
            "timeouts",
            format!(
                "idle {} s, execution {} s, startup {} s",
                s(&v["idle_timeout_secs"]),
                s(&v["execution_timeout_secs"]),
                s(&v["startup_timeout_secs"])
            ),
        ),
        ("load balancing", s(&v["load_balancing"])),
        (
            "autoscaling",
            format!(
                "{} on {} (target {}, cap {} per worker; up +{}%/{} s, down after {} s; queue {} for {} s)",
                s(&v["scaling_policy"]),
                s(&v["scaling_signal"]),
                s(&v["scaling_target"]),
                s(&v["concurrency_per_worker"]),
                s(&v["scale_up_max_percent"]),
                s(&v["scale_up_window_secs"]),
                s(&v["scale_down_delay_secs"]),
                s(&v["queue_capacity"]),
                s(&v["queue_timeout_secs"])
            ),
        ),
    ];
    for (k, val) in lines {
        println!("{k:<15} {val}");
    }
    if let Some(env) = v["env"].as_object().filter(|e| !e.is_empty()) {
        println!("env");
        for (k, val) in env {
            println!("  {k}={}", s(val));
        }
    }
}

async fn deploy(conn: Conn, template: String, set: Vec<String>, registry: RegistryArgs) -> anyhow::Result<()> {
    let mut values = BTreeMap::new();
    for kv in &set {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set: expected KEY=VALUE (an argument without '=')") };
        values.insert(k.to_owned(), v.to_owned());
    }
    let input = sluice_api::DeployInput { set: values, registry_auth: registry.into_dto()? };
    let v = conn
        .client()
        .call(Method::POST, &format!("/v1/templates/{template}/deploy"), Some(&serde_json::to_value(input)?))
        .await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_endpoint(&v);
    }
    Ok(())
}

async fn image(conn: Conn, cmd: ImageCmd) -> anyhow::Result<()> {
    let c = conn.client();
    match cmd {
        ImageCmd::Prewarm { image, data_center, no_wait, registry } => {
            let input = sluice_api::PrewarmInput {
                image: image.clone(),
                data_center: data_center.clone(),
                registry_auth: registry.into_dto()?,
            };
            let v = c.call(Method::POST, "/v1/images/prewarm", Some(&serde_json::to_value(input)?)).await?;
            if !no_wait {
                // Poll the list, keeping only this image's rows for the data center asked.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
                let mut display = crate::progress::PullDisplay::default();
                loop {
                    let all = c.call(Method::GET, "/v1/images", None).await?;
                    let mine: Vec<Value> = all["images"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["image"] == image.as_str())
                        .filter(|p| data_center.as_ref().is_none_or(|dc| p["data_center"] == dc.as_str()))
                        .cloned()
                        .collect();
                    if mine.is_empty() {
                        bail!("no node (of data center {}) takes images", data_center.as_deref().unwrap_or("any"));
                    }
                    if display.update(&mine)? {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!("timed out waiting for {image}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            } else if conn.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
        ImageCmd::List => {
            let v = c.call(Method::GET, "/v1/images", None).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["images"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["image"]),
                        s(&p["node"]),
                        s(&p["data_center"]),
                        s(&p["state"]),
                        format!("{}/{}", s(&p["bytes_done"]), s(&p["bytes_total"])),
                        s(&p["error"]),
                    ]
                })
                .collect();
            print!("{}", table::render(&["IMAGE", "NODE", "DC", "STATE", "BYTES", "ERROR"], &rows));
        }
    }
    Ok(())
}

fn print_json_or(conn: &Conn, v: &Value, text: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        text(v);
    }
    Ok(())
}

async fn account(conn: Conn, cmd: AccountCmd) -> anyhow::Result<()> {
    let c = conn.client();
    match cmd {
        AccountCmd::Create { name, quota } => {
            let body = serde_json::json!({ "name": name, "max_workers_quota": quota });
            let v = c.call(Method::POST, "/v1/accounts", Some(&body)).await?;
            print_json_or(&conn, &v, |v| {
                println!(
                    "account {} (max_workers quota {})",
                    s(&v["account"]["name"]),
                    s(&v["account"]["max_workers_quota"])
                );
                println!("key     {}   (shown once; id {})", s(&v["key"]["key"]), s(&v["key"]["id"]));
            })
        }
        AccountCmd::List => {
            let v = c.call(Method::GET, "/v1/accounts", None).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v["accounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let balance = match a["balance_usd"].as_f64() {
                            Some(b) => format!("{b:.2}"),
                            None => "unlimited".into(),
                        };
                        let warn = if a["low_credit_warning"] == true { "LOW CREDIT" } else { "" };
                        vec![s(&a["name"]), s(&a["max_workers_quota"]), balance, warn.into(), s(&a["created_at"])]
                    })
                    .collect();
                print!("{}", table::render(&["NAME", "QUOTA", "BALANCE $", "WARNING", "CREATED"], &rows));
            })
        }
        AccountCmd::Events { name } => {
            let v = c.call(Method::GET, &format!("/v1/accounts/{name}/events"), None).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| vec![s(&e["at"]), s(&e["kind"]), s(&e["message"])])
                    .collect();
                print!("{}", table::render(&["AT", "KIND", "MESSAGE"], &rows));
            })
        }
        AccountCmd::Update { name, quota, webhook_url } => {
            let body = serde_json::json!({ "max_workers_quota": quota, "webhook_url": webhook_url });
            let v = c.call(Method::PATCH, &format!("/v1/accounts/{name}"), Some(&body)).await?;
            print_json_or(&conn, &v, |v| println!("account {} quota {}", s(&v["name"]), s(&v["max_workers_quota"])))
        }
    }
}

async fn key(conn: Conn, cmd: KeyCmd) -> anyhow::Result<()> {
    let c = conn.client();
    let q = |account: &Option<String>| account.as_ref().map_or_else(String::new, |a| format!("?account={a}"));
    match cmd {
        KeyCmd::Create { label, account } => {
            let body = serde_json::json!({ "label": label, "account": account });
            let v = c.call(Method::POST, "/v1/keys", Some(&body)).await?;
            print_json_or(&conn, &v, |v| {
                println!("{}   (shown once; id {}, account {})", s(&v["key"]), s(&v["id"]), s(&v["account"]))
            })
        }
        KeyCmd::List { account } => {
            let v = c.call(Method::GET, &format!("/v1/keys{}", q(&account)), None).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![s(&k["id"]), s(&k["prefix"]), s(&k["label"]), s(&k["created_at"]), s(&k["revoked_at"])]
                    })
                    .collect();
                print!("{}", table::render(&["ID", "PREFIX", "LABEL", "CREATED", "REVOKED"], &rows));
            })
        }
        KeyCmd::Revoke { id, account } => {
            c.call(Method::DELETE, &format!("/v1/keys/{id}{}", q(&account)), None).await?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

async fn usage(
    conn: Conn,
    from: Option<String>,
    to: Option<String>,
    endpoint: Option<String>,
    account: Option<String>,
) -> anyhow::Result<()> {
    let params: Vec<String> = [("from", from), ("to", to), ("endpoint", endpoint), ("account", account)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
    let q = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
    let v = conn.client().call(Method::GET, &format!("/v1/usage{q}"), None).await?;
    print_json_or(&conn, &v, |v| {
        let rows: Vec<Vec<String>> = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                vec![
                    s(&r["day"]),
                    s(&r["account"]),
                    s(&r["endpoint"]),
                    s(&r["gpu_seconds"]),
                    format!("{:.4}", r["cost_usd"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect();
        print!("{}", table::render(&["DAY", "ACCOUNT", "ENDPOINT", "GPU-SECONDS", "COST $"], &rows));
        println!(
            "total: {} GPU-seconds, ${:.4}",
            s(&v["total_gpu_seconds"]),
            v["total_cost_usd"].as_f64().unwrap_or(0.0)
        );
    })
}

async fn gpus(conn: Conn) -> anyhow::Result<()> {
    let v = conn.client().call(Method::GET, "/v1/gpus", None).await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let source = match v["source"].as_str() {
        Some("nvml") => "real GPUs found through NVML",
        _ => "simulated GPUs declared in the config",
    };
    println!("{source}");
    let mut rows = Vec::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        for g in n["gpus"].as_array().into_iter().flatten() {
            rows.push(vec![
                s(&n["name"]),
                s(&n["data_center"]),
                s(&g["index"]),
                s(&g["type"]),
                // Another account's worker shows as in use, without its ids.
                if g["worker"].is_null() && g["in_use"] == true { "(in use)".into() } else { s(&g["worker"]) },
                s(&g["endpoint"]),
            ]);
        }
    }
    print!("{}", table::render(&["NODE", "DC", "GPU", "TYPE", "WORKER", "ENDPOINT"], &rows));
    Ok(())
}

async fn templates(conn: Conn) -> anyhow::Result<()> {
    let v = conn.client().call(Method::GET, "/v1/templates", None).await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for t in v["templates"].as_array().into_iter().flatten() {
        println!("{:<16} {}  [{}]", s(&t["name"]), s(&t["title"]), s(&t["image"]));
        for p in t["params"].as_array().into_iter().flatten() {
            let d = match &p["default"] {
                Value::Null => "required".to_owned(),
                Value::String(d) if d.is_empty() => "optional".to_owned(),
                d => format!("default {}", s(d)),
            };
            println!("  --set {}=...  {} ({d})", s(&p["name"]), s(&p["description"]));
        }
    }
    Ok(())
}

async fn endpoint(conn: Conn, cmd: EndpointCmd) -> anyhow::Result<()> {
    let c = conn.client();
    let json_out = conn.json;
    let show = |v: &Value| {
        if json_out {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print_endpoint(v);
        }
    };
    match cmd {
        EndpointCmd::Create { spec, wait, wait_timeout } => {
            let input = spec.into_input()?;
            let v = c.call(Method::POST, "/v1/endpoints", Some(&serde_json::to_value(input)?)).await?;
            if wait {
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                let timeout = std::time::Duration::from_secs(wait_timeout);
                crate::progress::wait_pulls(&c, &format!("/v1/endpoints/{id}"), "image_pulls", timeout).await?;
                let want = v["active_workers"].as_u64().unwrap_or(0).min(1);
                crate::progress::wait_ready(&c, &id, want, timeout).await?;
                show(&c.call(Method::GET, &format!("/v1/endpoints/{id}"), None).await?);
            } else {
                show(&v);
            }
        }
        EndpointCmd::Update { id, spec, wait, wait_timeout } => {
            let input = spec.into_input()?;
            let v = c.call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(&serde_json::to_value(input)?)).await?;
            if wait {
                let timeout = std::time::Duration::from_secs(wait_timeout);
                crate::progress::wait_pulls(&c, &format!("/v1/endpoints/{id}"), "image_pulls", timeout).await?;
                crate::progress::wait_rollout(&c, &id, timeout).await?;
                show(&c.call(Method::GET, &format!("/v1/endpoints/{id}"), None).await?);
            } else {
                show(&v);
            }
        }
        EndpointCmd::Get { id } => show(&c.call(Method::GET, &format!("/v1/endpoints/{id}"), None).await?),
        EndpointCmd::Stop { id } => show(&c.call(Method::POST, &format!("/v1/endpoints/{id}/stop"), None).await?),
        EndpointCmd::Start { id } => show(&c.call(Method::POST, &format!("/v1/endpoints/{id}/start"), None).await?),
        EndpointCmd::Delete { id } => {
            c.call(Method::DELETE, &format!("/v1/endpoints/{id}"), None).await?;
            if json_out {
                println!("{}", serde_json::json!({ "deleted": id }));
            } else {
                println!("deleted endpoint {id}");
            }
        }
        EndpointCmd::List => {
            let v = c.call(Method::GET, "/v1/endpoints", None).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["endpoints"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![
                        s(&e["id"]),
                        s(&e["name"]),
                        s(&e["status"]),
                        format!("{}/{}", s(&e["workers"]["ready"]), s(&e["workers"]["desired"])),
                        format!("{}x{}", s(&e["gpus_per_worker"]), s(&e["gpu_type"])),
                        s(&e["url"]),
                    ]
                })
                .collect();
            println!("{}", table::render(&["ID", "NAME", "STATUS", "READY/DESIRED", "GPUS", "URL"], &rows));
        }
        EndpointCmd::Events { id, limit, before } => {
            let mut path = format!("/v1/endpoints/{id}/events?limit={limit}");
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let v = c.call(Method::GET, &path, None).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![s(&e["id"]), s(&e["at"]), format!("{} -> {}", s(&e["from"]), s(&e["to"])), s(&e["reason"])]
                })
                .collect();
            println!("{}", table::render(&["ID", "AT", "WORKERS", "REASON"], &rows));
        }
        EndpointCmd::Status { id } => {
            let v = c.call(Method::GET, &format!("/v1/endpoints/{id}/status"), None).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let w = &v["workers"];
                println!("status                              {}", s(&v["status"]));
                println!("current concurrency limit           {}", s(&v["current_concurrency_limit"]));
                println!("fully autoscaled concurrency limit  {}", s(&v["fully_autoscaled_concurrency_limit"]));
                let rpm = match &v["max_requests_per_minute"] {
                    Value::Null => "unlimited".to_owned(),
                    x => s(x),
                };
                println!("max requests per minute             {rpm}");
                println!("running requests                    {}", s(&v["running_requests"]));
                println!("queued requests                     {}", s(&v["queued_requests"]));
                println!(
                    "workers                             {} ready, {} starting, {} pending, {} draining (desired {})",
                    s(&w["ready"]),
                    s(&w["starting"]),
                    s(&w["pending"]),
                    s(&w["draining"]),
                    s(&w["desired"])
                );
            }
        }
        EndpointCmd::Workers { id } => {
            let v = c.call(Method::GET, &format!("/v1/endpoints/{id}/workers"), None).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["workers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|w| {
                    let gpus: Vec<String> =
                        w["gpus"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(s).collect();
                    vec![
                        s(&w["id"]),
                        s(&w["state"]),
                        if gpus.is_empty() { "-".into() } else { gpus.join(",") },
                        s(&w["address"]),
                        s(&w["pid"]),
                        s(&w["created_at"]),
                        s(&w["reason"]),
                    ]
                })
                .collect();
            println!("{}", table::render(&["ID", "STATE", "GPUS", "ADDRESS", "PID", "CREATED", "REASON"], &rows));
        }
    }
    Ok(())
}
