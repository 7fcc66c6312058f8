//! `sluice up`: the whole platform in one process — store, process runtime, control API,
//! reconciler, gateway — and a demo endpoint.
use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use sluice_api::Addresses;
use sluice_api::internal::{RouteTable, RoutesDelta, TlsBundle};
use sluice_control::{Control, ControlConfig, DataPlane, auth, demand_fn, now};
use sluice_core::billing::Price;
use sluice_core::{EndpointDraft, EndpointId, EndpointSpec, EndpointStatus, RuntimeKind, routing::EndpointTraffic};
use sluice_gateway::{Gateway, GatewayConfig};
use sluice_runtime::{
    WorkerRuntime,
    docker::{DockerRuntime, DockerRuntimeConfig},
    process::{ProcessRuntime, ProcessRuntimeConfig},
};
use sluice_store::{EndpointRecord, Store};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    tls_listener::{ApiListener, TlsListener},
};

/// The in-process gateway as the control plane's data plane.
struct LocalPlane(Gateway);

impl DataPlane for LocalPlane {
    /// The changes since the installed table when they fit it, else the whole table.
    fn publish(&self, table: std::sync::Arc<RouteTable>, delta: &RoutesDelta) {
        if !self.0.apply(delta.clone()) {
            self.0.publish((*table).clone());
        }
    }
    fn traffic(&self) -> Vec<EndpointTraffic> {
        self.0.traffic()
    }
    fn take_records(&self) -> Vec<sluice_api::internal::EndpointRecords> {
        self.0.take_records()
    }
    fn figures(&self) -> sluice_core::metrics::GatewayFigures {
        self.0.figures()
    }
    fn publish_tls(&self, bundle: Arc<TlsBundle>) {
        if let Some(tls) = self.0.tls() {
            tls.apply(&bundle, now());
        }
    }
}

/// An axum router as a gateway side service (the queue API, the API on its host name).
fn side_service(router: axum::Router) -> sluice_gateway::SideService {
    Arc::new(move |req| {
        let router = router.clone();
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            use tower::ServiceExt as _;
            let resp = match router.oneshot(req.map(axum::body::Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            resp.map(|b| b.map_err(sluice_gateway::body::BoxError::from).boxed_unsync())
        })
    })
}

pub const DEMO_NAME: &str = "demo";

/// The admin key, and whether this start created it (then, and only then, it is printed in full).
struct AdminKey {
    key: String,
    created: bool,
}

/// Reads the admin key from `DIR/admin.key`, creating it (0600) on first start, and makes it the
/// only valid admin key.
async fn ensure_admin_key(store: &Store, dir: &Path) -> anyhow::Result<AdminKey> {
    let path = dir.join("admin.key");
    let mut created = false;
    let key = match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            created = true;
            let k = auth::generate_key();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(f, "{k}")?;
            k
        }
    };
    // A key mounted read-only (a Kubernetes secret) cannot be changed: say so, and go on.
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "could not make the admin key file 0600");
    }
    let digest = auth::digest(&key);
    store
        .put_key(
            &digest,
            &auth::prefix(&key),
            auth::ADMIN_ACCOUNT,
            "admin",
            Some("admin key from the data directory"),
            now(),
        )
        .await?;
    store.revoke_other_admin_keys(&digest, now()).await?;
    Ok(AdminKey { key, created })
}

/// How the banner shows the admin key: in full once, on the start that created it; masked with
/// the file's path on every later start (so it is not copied into every log collector).
fn admin_key_line(k: &AdminKey, path: &Path) -> String {
    if k.created {
        format!("{}   (new; saved in {}; shown in full only this once)", k.key, path.display())
    } else {
        format!("{}…   (in {})", auth::prefix(&k.key), path.display())
    }
}

/// The demo worker as a container image: this binary, the libraries it links and a shell,
/// imported into the local Engine (no registry involved). Tagged by the binary's size and
/// modification time, so a rebuilt binary gets a new image and an unchanged one is reused.
pub async fn ensure_demo_image(rt: &DockerRuntime) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating the sluice binary for the demo image")?;
    let meta = std::fs::metadata(&exe)?;
    let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let image = format!("sluice-demo-worker:{:x}-{:x}", meta.len(), mtime);
    if rt.has_image(&image).await? {
        return Ok(image);
    }
    // Concurrent platforms (the tests) build it once: the others wait on the lock, then find it.
    let lock = std::fs::File::create(std::env::temp_dir().join("sluice-demo-image.lock"))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock)).await??;
    if !rt.has_image(&image).await? {
        let mut files = vec![("/sluice".to_owned(), exe.clone()), ("/bin/sh".to_owned(), "/bin/sh".into())];
        for bin in [exe.as_path(), std::path::Path::new("/bin/sh")] {
            for lib in linked_libraries(bin)? {
                files.push((lib.display().to_string(), lib));
            }
        }
        files.sort();
        files.dedup();
        rt.import_rootfs(&image, files, &["/sluice", "demo-worker", "--host", "0.0.0.0"], &[]).await?;
        // Older builds' images are dead weight (about 200 MB each for a debug build).
        if let Err(e) = rt.remove_other_tags("sluice-demo-worker", &image).await {
            tracing::warn!(error = %e, "could not remove older demo images");
        }
    }
    drop(lock);
    Ok(image)
}

/// The shared libraries a dynamically linked binary loads (from `ldd`).
fn linked_libraries(bin: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let out = std::process::Command::new("ldd").arg(bin).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(std::path::PathBuf::from)
        .filter(|p| p.exists())
        .collect())
}

/// Creates the demo endpoint, or points it at this binary (or its image) if it changed.
async fn ensure_demo(store: &Store, cfg: &ControlConfig, image: Option<String>) -> anyhow::Result<EndpointRecord> {
    let exe = std::env::current_exe().context("locating the sluice binary for the demo worker")?;
    let command = match image {
        // Explicit rather than the image's entrypoint: Podman's compatible import does not keep
        // the entrypoint that Docker's does.
        Some(_) => Some("exec /sluice demo-worker --host 0.0.0.0".to_owned()),
        None => Some(format!("exec '{}' demo-worker", exe.display().to_string().replace('\'', r"'\''"))),
    };
    if let Some(mut e) = store.find_endpoint_by_name(auth::ADMIN_ACCOUNT, DEMO_NAME).await? {
        if e.spec.start_command != command || e.spec.image != image {
            e.spec.start_command = command;
            e.spec.image = image;
            e.generation += 1;
            e.updated_at = now();
            store.update_endpoint_spec(&e).await?;
            e.version += 1;
        }
        return Ok(e);
    }
    let draft = EndpointDraft {
        name: Some(DEMO_NAME.into()),
        // The demo answers anyone on this machine: `curl` it without a key.
        public: Some(true),
        start_command: command,
        image,
        active_workers: Some(1),
        max_workers: Some(3),
        ..Default::default()
    };
    let spec = EndpointSpec::validate(draft, &cfg.validation()).map_err(|e| anyhow::anyhow!("demo endpoint: {e}"))?;
    let t = now();
    let rec = EndpointRecord {
        id: EndpointId::generate(sluice_control::new_id()),
        account: auth::ADMIN_ACCOUNT.into(),
        spec,
        status: EndpointStatus::Running,
        generation: 1,
        created_at: t,
        updated_at: t,
        version: 0,
    };
    store.create_endpoint(&rec).await?;
    Ok(rec)
}

/// `https://{host}[:port]/` (443 left out).
fn control_url(host: &str, port: u16) -> String {
    if port == 443 { format!("https://{host}/") } else { format!("https://{host}:{port}/") }
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding the {what} to {addr} (use --{what}-addr to pick another; port 0 picks a free one)")
    })
}

/// Runs the platform until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    run_as(cfg, Role::All, shutdown).await
}

/// What a process runs: everything (`sluice up`), or the control plane alone (`sluice
/// control`), with separate `sluice gateway` processes in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Control,
}

pub async fn run_as(
    mut cfg: Config,
    role: Role,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut real_gpus = false;
    if cfg.gpu_discovery {
        match crate::gpus::discover() {
            Ok(found) => {
                let types = crate::gpus::apply(&mut cfg, &found);
                tracing::info!(gpus = ?types, "using the GPUs NVML found");
                real_gpus = true;
            }
            Err(why) => tracing::info!("using the declared (simulated) GPU inventory: {why}"),
        }
    }
    // Certificate files and CA bundles are checked before anything starts.
    let https = crate::https::setup(&cfg)?;
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let store = match &cfg.database {
        Some(url) => Store::open(url).await.context("opening the PostgreSQL store")?,
        None => Store::open_sqlite(&dir.join("sluice.db")).await.context("opening the store")?,
    };
    let instance = store.instance_id(&EndpointId::generate(sluice_control::new_id()).to_string()).await?;
    let admin_key = ensure_admin_key(&store, dir).await?;
    let fresh_secret: String =
        sluice_control::new_id().iter().chain(&sluice_control::new_id()).map(|b| format!("{b:02x}")).collect();
    let token_secret = store.meta_or_init("worker_token_secret", &fresh_secret).await?;
    store.ensure_account(auth::ADMIN_ACCOUNT, cfg.max_workers_quota, now()).await?;

    let api_listener = bind(cfg.api_addr, "api").await?;
    let api_listener = match (&https.serving, cfg.api_tls()) {
        (Some(certs), true) => ApiListener::Tls(TlsListener::new(api_listener, certs.clone())?),
        _ => ApiListener::Plain(api_listener),
    };
    // In the control role, gateways are other processes: `gateway_addr` is only where clients
    // reach them (their load balancer), for the URLs the API shows.
    let gw_listener = match role {
        Role::All => Some(sluice_gateway::Listeners {
            main: bind(cfg.gateway_addr, "gateway").await?,
            plain: match cfg.gateway_http_addr {
                Some(a) if https.serving.is_some() => Some(bind(a, "gateway-http").await?),
                _ => None,
            },
        }),
        Role::Control => None,
    };
    let api_addr = api_listener.local_addr()?;
    let gw_addr = match &gw_listener {
        Some(l) => l.main.local_addr()?,
        None => cfg.gateway_addr,
    };
    let gw_http_addr = gw_listener.as_ref().and_then(|l| l.plain.as_ref()).map(|p| p.local_addr()).transpose()?;
    let api_scheme = api_listener.scheme();
    // With HTTPS, pull workers (local processes, or containers on the host's network) take jobs
    // over a loopback listener that serves only `/v2`, in plain HTTP: the gateway's own port
    // speaks TLS for a name they cannot verify by address.
    let worker_listener = match (role, &https.serving, &cfg.worker_api_url) {
        (Role::All, Some(_), None) => Some(bind("127.0.0.1:0".parse()?, "worker API").await?),
        _ => None,
    };
    let gw_scheme = if https.serving.is_some() { "https" } else { "http" };
    let (front_tx, front_rx) = watch::channel(false);
    let wait_front = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // Several control processes on one PostgreSQL: serve the API address at once (forwarding to
    // the leader), and go on only once this process holds the lease.
    let shared = role == Role::Control && cfg.database.is_some();
    let (api_listener, leading) = if shared {
        let me = cfg.advertise_url.clone().unwrap_or_else(|| format!("{api_scheme}://{api_addr}"));
        let holder = sluice_control::leader::holder_id();
        let front = sluice_control::leader::Front::new(store.clone(), me.clone(), https.client.clone());
        let (router, rx) = (front.router(), front_rx.clone());
        let server = api_listener.serve(router, wait_front(rx));
        println!(
            "Sluice control on {api_scheme}://{api_addr}: asking to lead (standbys forward the API to the leader)"
        );
        let _ = std::io::stdout().flush();
        let renewed = tokio::select! {
            t = sluice_control::leader::acquire(&store, &holder, &me) => t,
            () = &mut shutdown => {
                let _ = front_tx.send(true);
                let _ = server.await;
                return Ok(());
            }
        };
        tracing::info!(%holder, "this control process leads");
        let keeper = sluice_control::leader::keep(store.clone(), holder.clone(), me, renewed);
        (None, Some((front, holder, server, keeper)))
    } else {
        (Some(api_listener), None)
    };
    let mut demo_image = None;
    let runtime: Arc<dyn WorkerRuntime> = match cfg.runtime {
        RuntimeKind::Process => Arc::new(ProcessRuntime::new(ProcessRuntimeConfig {
            instance_id: instance,
            logs_dir: dir.join("logs"),
            volumes_dir: dir.join("volumes"),
        })),
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(DockerRuntimeConfig {
                instance_id: instance,
                logs_dir: dir.join("logs"),
                account: auth::ADMIN_ACCOUNT.into(),
                real_gpus,
            })
            .await?;
            if cfg.demo {
                // (It may wait for another process building it: Ctrl-C meanwhile stops here.)
                demo_image = Some(tokio::select! {
                    r = ensure_demo_image(&rt) => r.context("building the demo worker's image")?,
                    () = &mut shutdown => {
                        tracing::info!("stopped during startup");
                        return Ok(());
                    }
                });
            }
            Arc::new(rt)
        }
        RuntimeKind::Kubernetes => kubernetes_runtime(&cfg, instance, dir.join("logs")).await?,
    };
    let ccfg = ControlConfig {
        domain: cfg.domain.clone(),
        gateway_addr: gw_addr.to_string(),
        nodes: cfg.inventory(),
        gpu_source: if real_gpus { "nvml" } else { "declared" }.into(),
        metering: sluice_control::metering::MeteringConfig {
            prices: cfg
                .gpu_prices
                .iter()
                .map(|p| Price {
                    gpu_type: p.gpu_type.clone(),
                    per_hour: p.per_hour,
                    per_second: p.per_second,
                    sleeping_per_second: p.sleeping_per_second,
                })
                .collect(),
            interval_ms: cfg.metering_interval_secs * 1000,
        },
        tls: https.control(&cfg),
        models: sluice_control::models::ModelsConfig {
            // On Kubernetes each worker Pod stages its models itself (an init container).
            cache_dir: match cfg.runtime {
                RuntimeKind::Kubernetes => None,
                _ => Some(cfg.model_cache_dir.clone().unwrap_or_else(|| dir.join("models"))),
            },
            hf_endpoint: cfg.hf_endpoint(),
            max_bytes: (cfg.model_cache_max_gb * 1e9) as u64,
        },
        gpu_types: cfg.gpu_types.clone(),
        max_workers_quota: cfg.max_workers_quota,
        runtime: cfg.runtime,
        max_body_bytes: cfg.max_body_bytes,
        log_retention: sluice_control::logs::Retention {
            max_age_ms: cfg.log_retention_hours * 3_600_000,
            max_bytes_per_endpoint: cfg.log_retention_mb * 1024 * 1024,
        },
        pull: sluice_control::PullConfig {
            // Workers call /v2, served by the gateway (and, in the control role, by the API).
            // Workers reach the platform by address, never by a name only clients resolve: with
            // HTTPS, a loopback listener of the worker protocol's own (below).
            api_url: cfg.worker_api_url.clone().unwrap_or_else(|| match (role, &worker_listener) {
                (Role::All, Some(l)) => format!("http://{}", l.local_addr().map_or(gw_addr, |a| a)),
                (Role::All, None) => format!("http://{gw_addr}"),
                (Role::Control, _) => format!("{api_scheme}://{api_addr}"),
            }),
            token_secret,
            ping_interval_ms: cfg.worker_ping_interval_ms,
        },
    };
    // On Kubernetes the demo would need an image in a registry the cluster can pull from.
    let demo_here = cfg.demo && cfg.runtime != RuntimeKind::Kubernetes;
    if cfg.demo && !demo_here {
        tracing::info!("no demo endpoint on the kubernetes runtime (it needs an image the cluster can pull)");
    }
    let demo = if demo_here { Some(ensure_demo(&store, &ccfg, demo_image).await?) } else { None };

    // The gateway's demand callback needs the control plane's waker, and the control plane needs
    // the gateway: create the waker first.
    let wake = Arc::new(tokio::sync::Notify::new());
    let (gateway, remote): (Option<Gateway>, Option<Arc<sluice_control::plane::RemotePlane>>) = match role {
        Role::All => (
            Some(Gateway::new(
                GatewayConfig {
                    domain: cfg.domain.clone(),
                    shutdown_grace: Duration::from_secs(cfg.shutdown_grace_secs),
                    tls: https.gateway(gw_addr.port(), &cfg),
                    ..GatewayConfig::default()
                },
                Arc::new(demand_fn(wake.clone())),
            )),
            None,
        ),
        Role::Control => (None, Some(sluice_control::plane::RemotePlane::new(wake.clone()))),
    };
    let plane: Arc<dyn sluice_control::DataPlane> = match (&gateway, &remote) {
        (Some(g), _) => Arc::new(LocalPlane(g.clone())),
        (None, Some(r)) => r.clone(),
        (None, None) => unreachable!("one of the two"),
    };
    let control = Control::with_waker(store.clone(), runtime, plane, ccfg, wake);
    if real_gpus && let Some(node) = cfg.nodes.first() {
        // This machine is the first node: its GPUs' utilization feeds the gpu_utilization signal.
        crate::gpus::sample_utilization(node.name.clone(), control.gpu_util());
    }
    // What earlier runs issued is served at once; every process keeps reading it (a standby's
    // API serves it too).
    let certs = control.certs();
    certs.sync().await?;
    https.watch_files();
    let cert_sync = tokio::spawn({
        let certs = certs.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if let Err(e) = certs.sync().await {
                    tracing::warn!(error = %e, "could not read the certificates from the store");
                }
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let reconciler = control.spawn_reconciler(stop_rx.clone());
    // Stopped after the reconciler, so the last lines of the workers it stops are stored.
    let (logs_stop_tx, logs_stop_rx) = watch::channel(false);
    let log_writer = control.spawn_log_writer(logs_stop_rx);
    let cert_manager = control.spawn_cert_manager(stop_rx.clone());
    let dispatcher = control.spawn_dispatcher(stop_rx);
    // The queue API (/v2/…) is served on the gateway's address by the control plane's router.
    // In the control role, the API address serves it too (gateways forward /v2 there), beside
    // the internal routes gateways follow.
    let worker_api = worker_listener.map(|l| {
        let router = control.v2_router();
        let rx = front_rx.clone();
        tokio::spawn(async move { axum::serve(l, router).with_graceful_shutdown(wait_front(rx)).await })
    });
    if let Some(gateway) = &gateway {
        gateway.set_side_service(side_service(control.v2_router()));
        // The API on its own host name through the gateway (`https://api.example.com/`).
        if let Some(host) = cfg.api_host() {
            gateway.set_api_service(host, side_service(control.router()));
        }
    }
    // Serve only once the first pass has adopted what a previous run left and published the
    // routing table: before that, the gateway would answer 404 for endpoints that exist. A
    // signal meanwhile (the first pass may pull images) is the same clean stop, without serving.
    let up = tokio::select! {
        r = async {
            control.first_pass().await;
            control.prewarm_endpoints().await
        } => {
            r?;
            true
        }
        () = &mut shutdown => false,
    };
    let (api, gw) = if up {
        let addresses = Addresses {
            api: format!("{api_scheme}://{api_addr}"),
            gateway: format!("{gw_scheme}://{gw_addr}"),
            domain: cfg.domain.clone(),
        };
        std::fs::write(dir.join("addresses.json"), serde_json::to_vec_pretty(&addresses)?)?;

        println!(
            "Sluice is up{}.",
            if role == Role::Control { " (control plane; gateways run as `sluice gateway`)" } else { "" }
        );
        println!("  API:       {api_scheme}://{api_addr}/v1   (OpenAPI: /v1/openapi.json)");
        if let (Some(host), Some(_)) = (cfg.api_host(), &https.serving) {
            println!("             {}v1   (through the gateway)", control_url(&host, gw_addr.port()));
        }
        println!("  Admin key: {}", admin_key_line(&admin_key, &dir.join("admin.key")));
        println!("  Gateway:   {gw_scheme}://{gw_addr}");
        if let Some(p) = gw_http_addr {
            println!("             http://{p}   (ACME HTTP-01; everything else is redirected to https)");
        }
        if let Some(d) = &demo {
            let host = sluice_core::tls::endpoint_host(d.id.as_str(), &d.spec.data_center, &cfg.domain);
            let url = if https.serving.is_some() {
                control_url(&host, gw_addr.port())
            } else {
                format!("http://{host}:{}/", gw_addr.port())
            };
            println!("  Demo endpoint {}: {url}   or   {gw_scheme}://{gw_addr}/e/{}/", d.id, d.id);
        }
        println!("Data directory: {}. Ctrl-C stops the platform and every worker.", dir.display());
        let _ = std::io::stdout().flush();

        let mut router = control.router();
        if let Some(r) = &remote {
            router = router.merge(control.internal_router(r.clone())).merge(control.v2_routes());
        }
        // Leading one of several control processes, the front already serves the API address.
        let api = match (&leading, api_listener) {
            (Some((front, ..)), _) => {
                front.lead(router);
                None
            }
            (None, listener) => listener.map(|l| l.serve(router, wait_front(front_rx.clone()))),
        };
        let gw = match (gateway, gw_listener) {
            (Some(g), Some(l)) => Some(tokio::spawn(g.serve(l, wait_front(front_rx)))),
            _ => None,
        };
        shutdown.await;
        (api, gw)
    } else {
        tracing::info!("stopped during startup");
        (None, None)
    };
    // A second signal while stopping: exit now; the workers still running are left for the next
    // run to adopt or stop (as after a crash).
    let second = signal();
    tokio::spawn(async move {
        second.await;
        eprintln!("second signal: exiting now; the next `sluice up` adopts or stops the workers left running");
        std::process::exit(130);
    });
    if let Some((front, holder, server, keeper)) = leading {
        // One of several control processes: hand over instead of stopping the workers, which the
        // next leader adopts (as after a restart). Nothing acts once the lease is given up.
        tracing::info!("shutting down: giving up the lease; workers stay for the next leader");
        reconciler.abort();
        dispatcher.abort();
        cert_manager.abort();
        cert_sync.abort();
        drop(keeper);
        // Released first, so a standby takes over at once; requests still arriving here are
        // forwarded to it meanwhile.
        store.release_lease(sluice_control::leader::LEASE, &holder).await?;
        front.stand_by();
        control.close_polls();
        let _ = front_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        let _ = logs_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), log_writer).await;
        store.close().await;
        tracing::info!("stopped");
        return Ok(());
    }
    tracing::info!("shutting down: closing the gateway and API, then stopping workers");
    control.close_polls();
    let _ = front_tx.send(true);
    if let Some(gw) = gw {
        let _ = gw.await;
    }
    if let Some(api) = api {
        let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    }
    if let Some(w) = worker_api {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    let _ = stop_tx.send(true);
    reconciler.await.context("reconciler task")?;
    let _ = dispatcher.await;
    cert_sync.abort();
    let _ = cert_manager.await;
    let _ = logs_stop_tx.send(true);
    let _ = log_writer.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "k8s")]
async fn kubernetes_runtime(
    cfg: &Config,
    instance: String,
    logs: std::path::PathBuf,
) -> anyhow::Result<Arc<dyn WorkerRuntime>> {
    use sluice_runtime::kubernetes::{KubeRuntime, KubeRuntimeConfig};
    let k = &cfg.kubernetes;
    let mut kc = KubeRuntimeConfig::new(instance, k.namespace.clone(), logs);
    kc.gpu_type_label = (!k.gpu_type_label.is_empty()).then(|| k.gpu_type_label.clone());
    kc.data_center_label = (!k.data_center_label.is_empty()).then(|| k.data_center_label.clone());
    kc.gpu_resource = k.gpu_resource.clone();
    kc.models = sluice_runtime::kubernetes_models::ModelCacheConfig {
        image: k.models_image.clone(),
        host_path: k.models_host_path.clone(),
    };
    Ok(Arc::new(KubeRuntime::connect(kc).await?))
}

#[cfg(not(feature = "k8s"))]
async fn kubernetes_runtime(_: &Config, _: String, _: std::path::PathBuf) -> anyhow::Result<Arc<dyn WorkerRuntime>> {
    anyhow::bail!("runtime \"kubernetes\" needs a build with the k8s feature: cargo build --release --features k8s")
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: `run_as` polls it only once everything is up, and a signal
/// before that would otherwise kill the process by default and leave the workers its first pass
/// started running with no one to stop them.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
