//! The `sluice` command line: `up` runs the platform (`control` and `gateway` run it in parts);
//! the other commands drive the REST API, one module per family (`endpoint`, `account`,
//! `platform`), reading the API's own view types (`sluice_api`).
mod account;
mod args;
mod endpoint;
mod insight;
mod models;
mod platform;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use self::args::{AccountCmd, CreditCmd, EndpointCmd, ImageCmd, KeyCmd, ModelsCmd, RegistryArgs};
use crate::{client::ApiClient, config::Config};

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
        /// HTTPS from a PEM certificate chain (repeatable; paired with --tls-key in order).
        #[arg(long = "tls-cert", value_name = "FILE")]
        tls_cert: Vec<PathBuf>,
        /// The private key of each --tls-cert.
        #[arg(long = "tls-key", value_name = "FILE")]
        tls_key: Vec<PathBuf>,
        /// Serve HTTPS with the certificates the control plane issues over ACME (implied by
        /// --tls-cert).
        #[arg(long)]
        https: bool,
        /// With HTTPS: the plain listener (ACME HTTP-01; everything else redirected to https://).
        #[arg(long)]
        gateway_http_addr: Option<std::net::SocketAddr>,
        /// With HTTPS: send Strict-Transport-Security with this max-age.
        #[arg(long)]
        hsts_max_age_secs: Option<u64>,
        /// CAs (PEM) to trust, beside the system's, for an https:// --control URL.
        #[arg(long, env = "SLUICE_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Serve the API's host name (forwarded to the control plane).
        #[arg(long)]
        api_host: Option<String>,
        /// Follow a plain http:// control URL that is not loopback (a network you trust).
        #[arg(long)]
        allow_plain_control: bool,
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
    /// Cached models: where your endpoints' models stand (`sluice models`), or stage models into
    /// a cache directory (`sluice models fetch`).
    Models {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: Option<ModelsCmd>,
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
    /// HTTPS certificates: host, source (file or acme), state, expiry, issuer, last error.
    Certs {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the quick-deploy templates and their parameters.
    Templates {
        #[command(flatten)]
        conn: Conn,
    },
    /// Replay a request trace (or an endpoint's recorded traffic) through autoscaling policies
    /// and compare cost, latency, rejections.
    Sim {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: crate::sim::SimArgs,
    },
    /// Export an endpoint's recorded traffic.
    Trace {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: insight::TraceCmd,
    },
    /// Run each recorded scaling decision of an endpoint again and check it comes out the same.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// The endpoint.
        id: String,
        /// From: an age (1h, 24h, 7d), RFC 3339 or Unix ms.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Until (default now).
        #[arg(long)]
        until: Option<String>,
    },
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
        #[command(flatten)]
        engine: crate::demo_engine::EngineArgs,
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
    /// HTTPS from a PEM certificate chain (repeatable; paired with --tls-key in order).
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Vec<PathBuf>,
    /// The private key of each --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Vec<PathBuf>,
    /// CAs (PEM) trusted beside the system's roots by every outbound TLS connection.
    #[arg(long, value_name = "FILE")]
    tls_extra_ca: Option<PathBuf>,
    /// Issue certificates over ACME with this contact e-mail. With --domain and no addresses
    /// given, the gateway serves HTTPS on 0.0.0.0:443 and plain HTTP on 0.0.0.0:80.
    #[arg(long)]
    acme_email: Option<String>,
    /// The ACME directory URL [default: Let's Encrypt].
    #[arg(long)]
    acme_directory: Option<String>,
    /// http-01 or tls-alpn-01.
    #[arg(long, value_parser = ["http-01", "tls-alpn-01"])]
    acme_challenge: Option<String>,
    /// With HTTPS: the plain listener (ACME HTTP-01, redirects to https://).
    #[arg(long)]
    gateway_http_addr: Option<SocketAddr>,
    /// The API's host name on the gateway [default with HTTPS: api.DOMAIN].
    #[arg(long)]
    api_host: Option<String>,
    /// Serve the API's own address over TLS (default: with HTTPS, unless it is loopback).
    #[arg(long)]
    api_tls: bool,
    /// With HTTPS: send Strict-Transport-Security with this max-age.
    #[arg(long)]
    hsts_max_age_secs: Option<u64>,
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
    /// CAs (PEM) to trust, beside the system's, for an https:// API (a private CA).
    #[arg(long, env = "SLUICE_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
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
        Cmd::Gateway {
            control,
            api_key,
            gateway_addr,
            domain,
            id,
            metrics_addr,
            tls_cert,
            tls_key,
            https,
            gateway_http_addr,
            hsts_max_age_secs,
            ca_cert,
            api_host,
            allow_plain_control,
        } => {
            init_logging("pretty");
            let id = id.unwrap_or_else(|| format!("gw-{}", std::process::id()));
            let cfg = crate::remote_gateway::RemoteGatewayConfig {
                control,
                key: api_key,
                listen: gateway_addr,
                domain,
                id,
                metrics: metrics_addr,
                tls_cert,
                tls_key,
                http_listen: gateway_http_addr,
                hsts_max_age_secs,
                ca_cert,
                api_host,
                https,
                allow_plain_control,
            };
            crate::remote_gateway::run(cfg, crate::platform::signal()).await
        }
        Cmd::Endpoint { conn, cmd } => endpoint::endpoint(conn, cmd).await,
        Cmd::Deploy { conn, template, set, registry } => endpoint::deploy(conn, template, set, registry).await,
        Cmd::Templates { conn } => platform::templates(conn).await,
        Cmd::Gpus { conn } => platform::gpus(conn).await,
        Cmd::Certs { conn } => platform::certs(conn).await,
        Cmd::Usage { conn, from, to, endpoint, account } => account::usage(conn, from, to, endpoint, account).await,
        Cmd::Logs { conn, endpoint, follow, worker, stream, since, until, grep, limit } => {
            let mut path = format!("/v1/endpoints/{endpoint}/logs?limit={limit}");
            for (k, v) in [("worker", worker), ("stream", stream), ("since", since), ("until", until), ("q", grep)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", sluice_core::pull::query_value(&v)));
                }
            }
            platform::logs(conn, path, follow).await
        }
        Cmd::Account { conn, cmd } => account::account(conn, cmd).await,
        Cmd::Key { conn, cmd } => account::key(conn, cmd).await,
        Cmd::Credit { conn, cmd } => account::credit(conn, cmd).await,
        Cmd::Image { conn, cmd } => platform::image(conn, cmd).await,
        Cmd::Models { conn, cmd } => models::models(conn, cmd.unwrap_or(ModelsCmd::List)).await,
        Cmd::Sim { conn, args } => match args.endpoint.clone() {
            Some(id) => insight::sim_endpoint(&conn, &id, &args).await,
            None => crate::sim::run(args, conn.json, conn.quiet),
        },
        Cmd::Trace { conn, cmd } => insight::trace(&conn, cmd).await,
        Cmd::Audit { conn, id, since, until } => insight::audit(&conn, &id, &since, until.as_deref()).await,
        Cmd::Plan(a) => crate::sim::plan(a),
        Cmd::DemoWorker { host, port, startup_delay_ms, engine } => {
            crate::demo::run(host, port, startup_delay_ms, engine).await
        }
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
    let explicit_gateway = a.gateway_addr.is_some() || cfg.gateway_addr != Config::default().gateway_addr;
    if !a.tls_cert.is_empty() || !a.tls_key.is_empty() {
        cfg.tls_cert = a.tls_cert;
        cfg.tls_key = a.tls_key;
    }
    if let Some(v) = a.tls_extra_ca {
        cfg.tls_extra_ca = Some(v);
    }
    if let Some(v) = a.acme_directory {
        cfg.acme_directory = v;
    }
    if let Some(v) = a.acme_challenge {
        cfg.acme_challenge = v;
    }
    if let Some(v) = a.gateway_http_addr {
        cfg.gateway_http_addr = Some(v);
    }
    if let Some(v) = a.api_host {
        cfg.api_host = Some(v);
    }
    if a.api_tls {
        cfg.api_tls = Some(true);
    }
    if let Some(v) = a.hsts_max_age_secs {
        cfg.hsts_max_age_secs = Some(v);
    }
    if let Some(v) = a.acme_email {
        cfg.acme_email = Some(v);
        // `--domain D --acme-email E` on a machine D points at: HTTPS on 443, HTTP-01 on 80.
        if !explicit_gateway {
            cfg.gateway_addr = "0.0.0.0:443".parse().expect("static");
            if cfg.gateway_http_addr.is_none() {
                cfg.gateway_http_addr = Some("0.0.0.0:80".parse().expect("static"));
            }
        }
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
        ApiClient::with_ca(&api, key, self.ca_cert.as_deref())
    }
}

/// A value as a table cell: `-` when absent.
fn cell<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// `--json`: the answer as the API gave it (the same view type, serialized again); else `text`.
fn print_json_or<T: Serialize>(conn: &Conn, v: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        text(v);
    }
    Ok(())
}
