//! Scale simulation (issue 8, part): the control plane's routing and autoscaling state for
//! 10,000 endpoints and 100,000 workers, and how a routing update reaches 4 gateways.
//!
//! What is real: the control plane (`Control`: store on SQLite, reconciler, autoscaler, placement,
//! metering) driving 100,000 workers; `RemotePlane` and its long-poll served by axum on loopback;
//! 4 followers that do what `sluice gateway` does (long-poll with the version they hold, parse the
//! changes since or the whole table, `Gateway::apply` / `Gateway::publish` into a real gateway's
//! lookup structures); the autoscaler's `decide` for every endpoint. What is
//! simulated: the workers (`sluice_runtime::sim::SimRuntime`: no processes, ready at once and
//! reported ready by the runtime, as a cluster's readiness probes would be), the GPUs (a declared
//! inventory) and the traffic (none for the passes; a synthetic snapshot per endpoint for the
//! autoscaler ticks).
//!
//! `cargo bench -p sluice --bench scale` (env `SCALE_ENDPOINTS`, `SCALE_WORKERS`, `SCALE_GATEWAYS`,
//! `SCALE_UPDATES` change the sizes).
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sluice_api::internal::{EndpointRoute, RouteTable, RoutesDelta, RoutesUpdate, WorkerRoute};
use sluice_control::DataPlane;
use sluice_core::{
    EndpointId, EndpointStatus, Millis, WorkerId,
    autoscale::{MetricsSnapshot, Preset, ScalerState, ScalingPolicy, decide},
    endpoint::LoadBalancing,
};
use sluice_gateway::{Gateway, GatewayConfig};
use tokio::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn route(i: usize, workers: usize, first_worker: usize) -> EndpointRoute {
    EndpointRoute {
        id: EndpointId::parse(&format!("e{i:07}")).expect("valid id"),
        status: EndpointStatus::Running,
        account: format!("acct{}", i % 500),
        public: i.is_multiple_of(3),
        load_balancing: LoadBalancing::default(),
        execution_timeout_ms: 600_000,
        queue_timeout_ms: 30_000,
        queue_capacity: 1_000,
        concurrency_per_worker: 8,
        at_max: false,
        max_workers: 20,
        max_requests_per_minute: None,
        workers: (0..workers)
            .map(|k| WorkerRoute {
                id: WorkerId::parse(&format!("w{:08}", first_worker + k)).expect("valid id"),
                addr: format!("127.0.0.{}:{}", 1 + (first_worker + k) / 60_000, 1024 + (first_worker + k) % 60_000),
                woken: false,
                engine_load: None,
            })
            .collect(),
        served_models: vec![],
        session_header: None,
        record: false,
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (n_ep, n_w, n_gw, updates) = (
        env("SCALE_ENDPOINTS", 10_000),
        env("SCALE_WORKERS", 100_000),
        env("SCALE_GATEWAYS", 4),
        env("SCALE_UPDATES", 20),
    );
    let per = n_w / n_ep.max(1);
    println!("# Scale simulation: {n_ep} endpoints, {n_w} workers ({per} each), {n_gw} gateways");
    let rss0 = rss_mib();
    reconcile(n_ep, per, rss0).await;

    // The routing table and the autoscaler's state, as the control plane holds them.
    let t = Instant::now();
    let mut endpoints: Vec<EndpointRoute> = (0..n_ep).map(|i| route(i, per, i * per)).collect();
    let keys: Vec<(String, String)> = (0..500).map(|a| (format!("{a:064x}"), format!("acct{a}"))).collect();
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let policies: Vec<ScalingPolicy> = (0..n_ep).map(|_| ScalingPolicy::new(Preset::Default, 0, 20, 8)).collect();
    let mut states: Vec<ScalerState> = (0..n_ep).map(|_| ScalerState::default()).collect();
    let table = RouteTable { version: 1, endpoints: endpoints.clone(), keys: keys.clone() };
    let json = serde_json::to_vec(&table).expect("serializable");
    println!(
        "- routing table built in {build_ms:.0} ms; one update (the whole table, JSON) is {:.1} MiB",
        json.len() as f64 / 1048576.0
    );

    // Autoscaler ticks: `decide` for every endpoint, with per-endpoint history, 30 ticks a second apart.
    let mut tick_ms = Vec::new();
    for tick in 0..30u64 {
        let now = Millis(1_000_000 + tick * 1_000);
        let t = Instant::now();
        for (i, (p, s)) in policies.iter().zip(states.iter_mut()).enumerate() {
            let load = (i as u64 * 7 + tick * 13) % 40;
            let snap = MetricsSnapshot {
                in_flight: load,
                waiting: u64::from(i % 17 == 0),
                arrivals: load / 2,
                oldest_wait_ms: 0,
                ready: per as u32,
                provisioned: per as u32,
                sleeping: 0,
                gpu_util_percent: None,
                engine_running: None,
                engine_waiting: None,
                kv_cache_percent: None,
            };
            std::hint::black_box(decide(p, s, &snap, now));
        }
        tick_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let tick_p50 = percentile(&mut tick_ms.clone(), 0.5);
    let tick_max = percentile(&mut tick_ms, 1.0);
    println!("- autoscaler tick ({n_ep} decisions): p50 {tick_p50:.1} ms, max {tick_max:.1} ms");

    // The control plane's long-poll on loopback, and gateways following it.
    let plane = sluice_control::plane::RemotePlane::new(Arc::new(tokio::sync::Notify::new()));
    let mut last = Arc::new(table);
    plane.publish(last.clone(), &RoutesDelta::between(&RouteTable::default(), &last));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = plane.clone();
    tokio::spawn(async move { axum::serve(listener, sluice_control::plane::router(served)).await });

    // (gateway, version, when, parse + apply ms, bytes received)
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, Instant, f64, usize)>();
    let mut gateways = Vec::new();
    for g in 0..n_gw {
        let gateway = Gateway::new(GatewayConfig::default(), Arc::new(|_: &EndpointId| {}));
        gateways.push(gateway.clone());
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build(hyper_util::client::legacy::connect::HttpConnector::new());
            let mut version = 0;
            loop {
                let uri = format!("http://{addr}/v1/internal/routes?after={version}");
                let Ok(resp) = client.get(uri.parse().expect("uri")).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(body) = resp.into_body().collect().await else { continue };
                let body = body.to_bytes();
                let t = Instant::now();
                let Ok(update) = serde_json::from_slice::<RoutesUpdate>(&body) else { continue };
                let now = match update {
                    RoutesUpdate::Full(table) => {
                        let v = table.version;
                        gateway.publish(table);
                        v
                    }
                    RoutesUpdate::Deltas(ds) => {
                        if ds.into_iter().all(|d| gateway.apply(d)) {
                            gateway.version()
                        } else {
                            0
                        }
                    }
                };
                if now != version {
                    version = now;
                    let _ = seen.send((g, version, Instant::now(), t.elapsed().as_secs_f64() * 1e3, body.len()));
                }
            }
        });
    }
    // Wait for every gateway to have the first table.
    let mut have = 0;
    while have < n_gw {
        if let Some((_, 1, _, _, _)) = seen_rx.recv().await {
            have += 1;
        }
    }
    println!(
        "- memory: {:.0} MiB resident after building the state and 1 + {n_gw} copies of the table (start {rss0:.0} MiB)",
        rss_mib()
    );

    // Updates: one worker added to one endpoint, as a scale-up does; time until all gateways serve it.
    let mut propagation = Vec::new();
    let mut apply_ms = Vec::new();
    let mut publish_ms = Vec::new();
    let mut sizes = Vec::new();
    for u in 0..updates {
        let i = (u * 7_919) % n_ep;
        endpoints[i].workers.push(WorkerRoute {
            id: WorkerId::parse(&format!("x{u:08}")).expect("valid id"),
            addr: format!("127.0.0.250:{}", 2000 + u),
            woken: false,
            engine_load: None,
        });
        let version = 2 + u as u64;
        let t = Instant::now();
        // What the reconciler does: the new table, and the changes from the last one.
        let table = Arc::new(RouteTable { version, endpoints: endpoints.clone(), keys: keys.clone() });
        let delta = RoutesDelta::between(&last, &table);
        plane.publish(table.clone(), &delta);
        last = table;
        publish_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let mut got = 0;
        let mut done = t;
        while got < n_gw {
            let (_, v, at, parse_ms, bytes) = seen_rx.recv().await.expect("followers run");
            if v == version {
                got += 1;
                done = done.max(at);
                apply_ms.push(parse_ms);
                sizes.push(bytes as f64);
            }
        }
        propagation.push((done - t).as_secs_f64() * 1e3);
    }
    let (p50, max) = (percentile(&mut propagation.clone(), 0.5), percentile(&mut propagation, 1.0));
    println!(
        "- routing update (one worker added) to all {n_gw} gateways ({updates} updates): p50 {p50:.1} ms, max {max:.1} ms, \
         {:.0} bytes each (of which parse + apply at a gateway: p50 {:.2} ms; diff + publish at the control plane: p50 {:.0} ms)",
        percentile(&mut sizes, 0.5),
        percentile(&mut apply_ms, 0.5),
        percentile(&mut publish_ms, 0.5)
    );
    println!("- memory at the end: {:.0} MiB resident", rss_mib());
    drop(gateways);
}

/// The control plane with `n_ep` endpoints of `per` active workers each on the simulated runtime:
/// time to bring them all up, then the time of a full reconcile pass in the steady state.
async fn reconcile(n_ep: usize, per: usize, rss0: f64) {
    use sluice_core::{
        EndpointDraft, EndpointSpec, RuntimeKind, ValidationContext,
        placement::{Gpu, Node},
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = sluice_store::Store::open_sqlite(&tmp.path().join("s.db")).await.expect("store");
    let ctx = ValidationContext {
        gpu_types: vec!["SIM".into()],
        data_centers: vec!["dc".into()],
        max_workers_quota: 1_000,
        runtime: RuntimeKind::Process,
    };
    let t = Instant::now();
    for i in 0..n_ep {
        let spec = EndpointSpec::validate(
            EndpointDraft {
                name: Some(format!("e{i}")),
                start_command: Some("serve".into()),
                active_workers: Some(per as i64),
                max_workers: Some(per as i64 * 2),
                ..Default::default()
            },
            &ctx,
        )
        .expect("valid spec");
        store
            .create_endpoint(&sluice_store::EndpointRecord {
                id: EndpointId::parse(&format!("e{i:07}")).expect("id"),
                account: "admin".into(),
                spec,
                status: EndpointStatus::Running,
                generation: 1,
                created_at: Millis(1),
                updated_at: Millis(1),
                version: 0,
            })
            .await
            .expect("stored");
    }
    println!("- {n_ep} endpoints stored in {:.1} s", t.elapsed().as_secs_f64());
    // One GPU per worker: 80 per node.
    let gpus_needed = n_ep * per;
    let nodes: Vec<Node> = (0..gpus_needed.div_ceil(80))
        .map(|n| Node {
            name: format!("node{n}"),
            data_center: "dc".into(),
            gpus: (0..80).map(|index| Gpu { index, gpu_type: "SIM".into() }).collect(),
        })
        .collect();
    let n_nodes = nodes.len();
    let cfg = sluice_control::ControlConfig {
        domain: "localhost".into(),
        models: Default::default(),
        gateway_addr: "127.0.0.1:8080".into(),
        nodes,
        gpu_source: "declared".into(),
        gpu_types: vec!["SIM".into()],
        max_workers_quota: 1_000,
        runtime: RuntimeKind::Process,
        max_body_bytes: 1 << 20,
        metering: sluice_control::metering::MeteringConfig { prices: Vec::new(), interval_ms: 60_000 },
        pull: sluice_control::PullConfig {
            api_url: "http://127.0.0.1:8080".into(),
            token_secret: "bench".into(),
            ping_interval_ms: 10_000,
        },
        log_retention: sluice_control::logs::Retention { max_age_ms: 3_600_000, max_bytes_per_endpoint: 1 << 20 },
        tls: sluice_control::certs::TlsConfig::off(),
    };
    let runtime = Arc::new(sluice_runtime::sim::SimRuntime::new());
    let wake = Arc::new(tokio::sync::Notify::new());
    let plane = sluice_control::plane::RemotePlane::new(wake.clone());
    let control = sluice_control::Control::with_waker(store.clone(), runtime.clone(), plane, cfg, wake.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut passes = control.passes();
    let t = Instant::now();
    let reconciler = control.spawn_reconciler(stop_rx);
    let (mut ready_at, mut n_passes) = (None, 0);
    while ready_at.is_none() {
        let _ = passes.changed().await;
        n_passes += 1;
        let ready = store.list_unfinished_workers().await.expect("workers");
        if runtime.len() == n_ep * per && ready.iter().all(|w| w.state == sluice_core::WorkerState::Ready) {
            ready_at = Some(t.elapsed());
        }
        wake.notify_one();
    }
    println!(
        "- from nothing to {} ready workers on {n_nodes} nodes: {:.1} s, {n_passes} passes",
        n_ep * per,
        ready_at.unwrap_or_default().as_secs_f64()
    );
    // Steady state: full passes over everything, back to back.
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        wake.notify_one();
        let _ = passes.changed().await;
        took.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "- full reconcile pass, steady state ({} endpoints, {} workers): p50 {:.0} ms, max {:.0} ms",
        n_ep,
        n_ep * per,
        percentile(&mut took.clone(), 0.5),
        percentile(&mut took, 1.0)
    );
    println!("- memory: {:.0} MiB resident with the control plane's state (start {rss0:.0} MiB)", rss_mib());
    // Stop without stopping 100,000 simulated workers one by one: the runtime is dropped.
    drop(stop_tx);
    reconciler.abort();
    store.close().await;
}
