//! A simulated runtime for scale tests (`bench/scale.sh`): workers are entries in memory with
//! made-up loopback addresses, ready as soon as they start, and reported ready by `list` (as a
//! cluster's readiness probes would be), so the reconciler's own work can be measured at
//! 100,000 workers without starting 100,000 processes. Not selectable in the product.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Mutex, atomic::AtomicU32},
    time::Duration,
};

use futures_util::future::BoxFuture;
use sluice_core::{EndpointId, RuntimeKind, WorkerId};

use crate::{LaunchSpec, Launched, Observed, Result, WorkerRuntime};

#[derive(Default)]
pub struct SimRuntime {
    /// Running workers: endpoint, address, and whether the "cluster" says it is ready.
    workers: Mutex<HashMap<WorkerId, (EndpointId, SocketAddr, bool)>>,
    next: AtomicU32,
}

impl SimRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Workers running now.
    pub fn len(&self) -> usize {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes `list` report the worker ready or not (as a failing readiness probe would).
    pub fn set_ready(&self, worker: &WorkerId, ready: bool) {
        if let Some(w) = self.workers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(worker) {
            w.2 = ready;
        }
    }
}

impl WorkerRuntime for SimRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let addr = SocketAddr::from(([127, 1 + (n / 60_000) as u8, 0, 1], 1024 + (n % 60_000) as u16));
            self.workers.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.worker, (spec.endpoint, addr, true));
            Ok(Launched { addr, pid: None, image_at: None })
        })
    }

    fn stop(&self, worker: &WorkerId, _grace: Duration) -> BoxFuture<'_, Result<()>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).remove(worker);
        Box::pin(async { Ok(()) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Observed>>> {
        let out = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(w, (e, addr, ready))| Observed {
                worker: w.clone(),
                endpoint: Some(e.clone()),
                addr: Some(*addr),
                pid: None,
                exited: None,
                ready: Some(*ready),
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn reports_readiness(&self) -> bool {
        true
    }

    fn log_paths(&self, _endpoint: &EndpointId, _worker: &WorkerId) -> Vec<PathBuf> {
        Vec::new()
    }
}
