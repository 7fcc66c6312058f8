//! A runtime that reports readiness itself (`WorkerRuntime::reports_readiness`: the Kubernetes
//! runtime, from each Pod's Ready condition) drives the reconciler without any HTTP probe. Here
//! with the simulated runtime, whose workers have made-up addresses that no probe could reach:
//! they become ready, leave rotation and come back only as the runtime says.
use std::{sync::Arc, time::Duration};

use sluice_api::internal::{RouteTable, RoutesDelta};
use sluice_control::DataPlane;
use sluice_core::{
    EndpointDraft, EndpointId, EndpointSpec, EndpointStatus, Millis, RuntimeKind, ValidationContext, WorkerId,
    metrics::GatewayFigures,
    placement::{Gpu, Node},
    routing::EndpointTraffic,
};
use sluice_runtime::sim::SimRuntime;
use tokio::sync::watch;

use crate::support::eventually;

/// The data plane as a watch of the published table.
struct Tables(watch::Sender<RouteTable>);

impl DataPlane for Tables {
    fn publish(&self, table: Arc<RouteTable>, _: &RoutesDelta) {
        self.0.send_replace((*table).clone());
    }
    fn traffic(&self) -> Vec<EndpointTraffic> {
        Vec::new()
    }
    fn figures(&self) -> GatewayFigures {
        GatewayFigures::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reported_by_the_runtime_moves_workers_in_and_out_of_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sluice_store::Store::open_sqlite(&tmp.path().join("s.db")).await.unwrap();
    let ctx = ValidationContext {
        gpu_types: vec!["SIM".into()],
        data_centers: vec!["dc".into()],
        max_workers_quota: 10,
        runtime: RuntimeKind::Process,
    };
    let draft = EndpointDraft {
        name: Some("e".into()),
        start_command: Some("serve".into()),
        active_workers: Some(2),
        ..Default::default()
    };
    let id = EndpointId::parse("ep1").unwrap();
    store
        .create_endpoint(&sluice_store::EndpointRecord {
            id: id.clone(),
            account: "admin".into(),
            spec: EndpointSpec::validate(draft, &ctx).unwrap(),
            status: EndpointStatus::Running,
            generation: 1,
            created_at: Millis(1),
            updated_at: Millis(1),
            version: 0,
        })
        .await
        .unwrap();
    let cfg = sluice_control::ControlConfig {
        domain: "localhost".into(),
        models: Default::default(),
        gateway_addr: "127.0.0.1:8080".into(),
        nodes: vec![Node {
            name: "n1".into(),
            data_center: "dc".into(),
            gpus: (0..4).map(|index| Gpu { index, gpu_type: "SIM".into() }).collect(),
        }],
        gpu_source: "declared".into(),
        gpu_types: vec!["SIM".into()],
        max_workers_quota: 10,
        runtime: RuntimeKind::Process,
        max_body_bytes: 1 << 20,
        metering: sluice_control::metering::MeteringConfig { prices: Vec::new(), interval_ms: 60_000 },
        pull: sluice_control::PullConfig {
            api_url: "http://127.0.0.1:8080".into(),
            token_secret: "test".into(),
            ping_interval_ms: 10_000,
        },
        log_retention: sluice_control::logs::Retention { max_age_ms: 3_600_000, max_bytes_per_endpoint: 1 << 20 },
        tls: sluice_control::certs::TlsConfig::off(),
    };
    let runtime = Arc::new(SimRuntime::new());
    let (tables, mut table) = watch::channel(RouteTable::default());
    let control = sluice_control::Control::with_waker(
        store.clone(),
        runtime.clone(),
        Arc::new(Tables(tables)),
        cfg,
        Arc::new(tokio::sync::Notify::new()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconciler = control.spawn_reconciler(stop_rx);
    let mut routed = async |n: usize| -> Vec<WorkerId> {
        eventually(&format!("{n} workers routed"), Duration::from_secs(10), async || {
            let t = table.borrow_and_update().clone();
            let ws: Vec<WorkerId> = t.endpoints.iter().flat_map(|e| e.workers.iter().map(|w| w.id.clone())).collect();
            if ws.len() == n {
                return Some(ws);
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), table.changed()).await;
            None
        })
        .await
    };

    // Ready as soon as the runtime says so, though no probe could reach these addresses.
    let both = routed(2).await;
    let recs = store.list_workers(&id, 10).await.unwrap();
    assert!(recs.iter().all(|w| w.state == sluice_core::WorkerState::Ready && both.contains(&w.id)), "{recs:?}");
    // Not ready (a failing readiness probe in the cluster): out of rotation, with the reason.
    runtime.set_ready(&both[0], false);
    assert_eq!(routed(1).await, vec![both[1].clone()]);
    let rec = store.list_workers(&id, 10).await.unwrap().into_iter().find(|w| w.id == both[0]).unwrap();
    assert_eq!(rec.state, sluice_core::WorkerState::Starting);
    assert!(rec.reason.unwrap_or_default().contains("out of rotation"));
    // Ready again: back in rotation; the same two workers, none replaced.
    runtime.set_ready(&both[0], true);
    let mut again = routed(2).await;
    let mut before = both.clone();
    again.sort();
    before.sort();
    assert_eq!(again, before);
    assert_eq!(runtime.len(), 2);

    drop(stop_tx);
    reconciler.abort();
    store.close().await;
}
