//! Sleep and wake calls (issue 17): `POST {sleep_path}` puts a drained worker's engine to sleep,
//! `POST {wake_path}` wakes it. Each call runs in its own task, so a slow sleep (offloading a
//! model's weights) never holds a reconcile pass; calls to one worker run one after the other
//! (a wake decided while the sleep call is still out waits for it). The reconciler reads their
//! progress each pass: a wake not yet answered keeps the worker out of rotation, a failed call
//! is the plan's to act on, an answered one is a phase of the worker's record.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use sluice_core::{Millis, WorkerId, reconcile::Call, worker::Phase};
use tokio::sync::Notify;

use crate::health::ProbeClient;

/// How long a sleep call may take (an engine offloading its weights to host memory).
pub const SLEEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sleep,
    Wake,
}

#[derive(Debug, Clone)]
enum State {
    InFlight(Kind),
    Failed(String),
}

struct Entry {
    /// Calls to one worker, one at a time.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The latest call's state (a call made after another replaces what the first would say).
    state: Option<State>,
    /// Phases reached (calls answered 2xx) not yet taken by the reconciler.
    reached: Vec<(Phase, Millis)>,
}

/// Phases reached by calls that answered: (worker, phase, when).
pub type Reached = Vec<(WorkerId, Phase, Millis)>;

pub struct Calls {
    client: ProbeClient,
    wake: Arc<Notify>,
    entries: Mutex<HashMap<WorkerId, Entry>>,
}

impl Calls {
    pub fn new(client: ProbeClient, wake: Arc<Notify>) -> Arc<Calls> {
        Arc::new(Calls { client, wake, entries: Mutex::default() })
    }

    /// Makes a call on a worker at `addr` (`path` may carry a query string), bounded by
    /// `timeout`; the reconciler is woken when it ends.
    pub fn start(self: &Arc<Self>, worker: &WorkerId, addr: SocketAddr, path: &str, kind: Kind, timeout: Duration) {
        let lock = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let e = entries.entry(worker.clone()).or_insert_with(|| Entry {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                state: None,
                reached: Vec::new(),
            });
            e.state = Some(State::InFlight(kind));
            e.lock.clone()
        };
        let me = self.clone();
        let (worker, uri) = (worker.clone(), format!("http://{addr}{path}"));
        let what = match kind {
            Kind::Sleep => "sleep",
            Kind::Wake => "wake",
        };
        let path = path.to_owned();
        tokio::spawn(async move {
            let _one_at_a_time = lock.lock().await;
            let outcome = match uri.parse::<hyper::Uri>() {
                Err(e) => Err(format!("{path} is not a usable path: {e}")),
                Ok(uri) => {
                    let req = hyper::Request::post(uri).body(Empty::<Bytes>::new()).expect("a request");
                    match tokio::time::timeout(timeout, async {
                        let r = me.client.request(req).await?;
                        let status = r.status();
                        let _ = r.into_body().collect().await;
                        Ok::<_, hyper_util::client::legacy::Error>(status)
                    })
                    .await
                    {
                        Err(_) => Err(format!("POST {path} did not answer within {} s", timeout.as_secs())),
                        Ok(Err(e)) => Err(format!("POST {path} failed: {e}")),
                        Ok(Ok(s)) if s.is_success() => Ok(()),
                        Ok(Ok(s)) => Err(format!("POST {path} answered {s}")),
                    }
                }
            };
            if let Err(why) = &outcome {
                tracing::warn!(%worker, call = what, error = %why, "worker call failed");
            }
            if let Some(e) = me.entries.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&worker) {
                let latest = matches!(e.state, Some(State::InFlight(k)) if k == kind);
                match outcome {
                    Ok(()) => {
                        e.reached.push((if kind == Kind::Sleep { Phase::Slept } else { Phase::Woke }, crate::now()));
                        if latest {
                            e.state = None;
                        }
                    }
                    Err(why) if latest => e.state = Some(State::Failed(why)),
                    Err(_) => {}
                }
            }
            me.wake.notify_one();
        });
    }

    /// What the plan needs to know (wakes not answered yet, failed calls), and the phases
    /// reached since the last look (taken: each is returned once).
    pub fn observe(&self) -> (HashMap<WorkerId, Call>, Reached) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut calls = HashMap::new();
        let mut reached = Vec::new();
        for (id, e) in entries.iter_mut() {
            match &e.state {
                Some(State::InFlight(Kind::Wake)) => {
                    calls.insert(id.clone(), Call::Waking);
                }
                Some(State::Failed(why)) => {
                    calls.insert(id.clone(), Call::Failed(why.clone()));
                }
                Some(State::InFlight(Kind::Sleep)) | None => {}
            }
            reached.extend(e.reached.drain(..).map(|(p, at)| (id.clone(), p, at)));
        }
        (calls, reached)
    }

    /// Forgets a worker (it ended).
    pub fn forget(&self, worker: &WorkerId) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(worker);
    }
}
