//! Recorded traffic, shadow points and the SLO policy's re-tunes (issue 20). The reconciler
//! keeps, each pass, the requests the gateways recorded, the starts and wakes that ended and
//! the workers that stopped ([`Recorder`]), and asks the [`Tuner`] which endpoints are due for
//! a re-tune; [`load`] reads an endpoint's records back for the API.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use sluice_api::internal::EndpointRecords;
use sluice_core::{
    EndpointId, Millis,
    autoscale::{
        Preset,
        sim::{ColdStart, SimConfig},
        tune::{self, Setting, Tuned},
    },
    endpoint::{EndpointSpec, SloMode},
    recording::{self, RequestRecord, SpanRecord, StartRecord},
};
use sluice_store::{RecordChunk, RecordKind, ScalingEvent, Store, WorkerRecord};

/// Starts and spans noted during a pass, stored with the gateway's records at its end.
#[derive(Default)]
pub struct Recorder {
    starts: HashMap<EndpointId, Vec<StartRecord>>,
    spans: HashMap<EndpointId, Vec<SpanRecord>>,
}

impl Recorder {
    /// A start or wake that just ended (the worker became ready at `t`).
    pub fn ready(&mut self, rec: &WorkerRecord, t: Millis) {
        self.starts.entry(rec.endpoint_id.clone()).or_default().push(recording::start_of(
            rec.created_at.0,
            &rec.phases,
            t.0,
        ));
    }

    /// A worker that stopped at `end`: its life on its GPUs, sleep included.
    pub fn stopped(&mut self, rec: &WorkerRecord, end: Millis) {
        if let Some(span) = span(rec, end) {
            self.spans.entry(rec.endpoint_id.clone()).or_default().push(span);
        }
    }

    /// Everything to store for the endpoints that `record` says are recorded.
    pub fn chunks(&mut self, requests: Vec<EndpointRecords>, record: impl Fn(&EndpointId) -> bool) -> Vec<RecordChunk> {
        let mut out = Vec::new();
        let mut push = |id: &EndpointId, kind, first: u64, last: u64, n: usize, data: String| {
            if record(id) && n > 0 {
                out.push(RecordChunk {
                    endpoint_id: id.clone(),
                    kind,
                    first_at: Millis(first),
                    last_at: Millis(last),
                    n: n as u64,
                    data,
                });
            }
        };
        // A remote gateway's records may arrive in several reports: one chunk per endpoint.
        let mut by_ep: HashMap<EndpointId, Vec<RequestRecord>> = HashMap::new();
        for r in requests {
            if r.dropped > 0 {
                tracing::warn!(endpoint = %r.endpoint, dropped = r.dropped, "a gateway dropped recorded requests");
            }
            by_ep.entry(r.endpoint).or_default().extend(r.requests);
        }
        for (id, mut v) in by_ep {
            v.sort_by_key(|r| r.at);
            let (first, last) = (v.first().map_or(0, |r| r.at), v.last().map_or(0, |r| r.at));
            push(&id, RecordKind::Requests, first, last, v.len(), serde_json::to_string(&v).unwrap_or_default());
        }
        for (id, v) in std::mem::take(&mut self.starts) {
            let (first, last) = (v.iter().map(|s| s.at).min().unwrap_or(0), v.iter().map(|s| s.at).max().unwrap_or(0));
            push(&id, RecordKind::Starts, first, last, v.len(), serde_json::to_string(&v).unwrap_or_default());
        }
        for (id, v) in std::mem::take(&mut self.spans) {
            let (first, last) =
                (v.iter().map(|s| s.from).min().unwrap_or(0), v.iter().map(|s| s.to).max().unwrap_or(0));
            push(&id, RecordKind::Spans, first, last, v.len(), serde_json::to_string(&v).unwrap_or_default());
        }
        out
    }
}

/// A worker's life from its launch to `end` (none if it never launched).
pub fn span(rec: &WorkerRecord, end: Millis) -> Option<SpanRecord> {
    let from = rec.launched_at?;
    Some(SpanRecord {
        from: from.0,
        to: end.0.max(from.0),
        gpus: rec.gpus.len().max(1) as u32,
        asleep_ms: recording::asleep_ms(&rec.phases, end.0),
    })
}

/// An endpoint's records over a window.
#[derive(Debug, Default)]
pub struct Recorded {
    pub requests: Vec<RequestRecord>,
    pub starts: Vec<StartRecord>,
    /// Finished workers' spans and, with `live`, the running ones' up to `until`.
    pub spans: Vec<SpanRecord>,
}

fn parse<T: serde::de::DeserializeOwned>(id: &EndpointId, chunks: Vec<String>) -> Vec<T> {
    chunks
        .into_iter()
        .flat_map(|c| match serde_json::from_str::<Vec<T>>(&c) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(endpoint = %id, error = %e, "an unreadable chunk of recorded traffic was skipped");
                Vec::new()
            }
        })
        .collect()
}

/// Reads an endpoint's records within `[since, until)`; the workers running now count up to
/// `until`. The chunks are parsed on a blocking thread: a busy endpoint's hours are millions of
/// records.
pub async fn load(store: &Store, id: &EndpointId, since: Millis, until: Millis) -> sluice_store::Result<Recorded> {
    let requests = store.recorded(id, RecordKind::Requests, since, until).await?;
    let starts = store.recorded(id, RecordKind::Starts, since, until).await?;
    let spans = spans(store, id, since, until).await?;
    let id = id.clone();
    blocking(move || {
        let mut requests: Vec<RequestRecord> = parse(&id, requests);
        requests.retain(|r| r.at >= since.0 && r.at < until.0);
        requests.sort_by_key(|r| r.at);
        let mut starts: Vec<StartRecord> = parse(&id, starts);
        starts.retain(|s| s.at >= since.0 && s.at < until.0);
        Recorded { requests, starts, spans }
    })
    .await
}

/// Only the workers' spans within `[since, until)` (the running ones up to `until`): what the
/// shadow view needs, without the requests.
pub async fn spans(
    store: &Store,
    id: &EndpointId,
    since: Millis,
    until: Millis,
) -> sluice_store::Result<Vec<SpanRecord>> {
    let chunks = store.recorded(id, RecordKind::Spans, since, until).await?;
    let live: Vec<SpanRecord> = store
        .list_workers(id, 1000)
        .await?
        .iter()
        .filter(|w| w.stopped_at.is_none())
        .filter_map(|w| span(w, until))
        .collect();
    let id = id.clone();
    blocking(move || {
        let mut spans: Vec<SpanRecord> = parse(&id, chunks);
        spans.retain(|s| s.to > since.0 && s.from < until.0);
        spans.extend(live);
        spans
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> sluice_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sluice_store::Error::Corrupt { table: "recorded", message: e.to_string() })
}

/// The simulator's configuration for an endpoint: its policy and limits, its recorded cold
/// starts (30 s when none were recorded), its GPUs' price.
pub fn sim_config(spec: &EndpointSpec, preset: Preset, starts: &[StartRecord]) -> SimConfig {
    let cold: Vec<u64> = starts.iter().filter(|s| !s.wake).map(|s| s.duration_ms).collect();
    let mut policy = spec.scaling();
    policy.preset = preset;
    let price = sluice_core::catalog::per_second(&spec.workers.gpu_type).unwrap_or(0.0);
    let wakes: Vec<u64> = starts.iter().filter(|s| s.wake).map(|s| s.duration_ms).collect();
    SimConfig {
        policy,
        cold_start: if cold.is_empty() {
            ColdStart::Fixed { ms: 30_000 }
        } else {
            ColdStart::Empirical { samples_ms: cold }
        },
        sleep: spec.sleep.enabled().then(|| sluice_core::autoscale::sim::SimSleep {
            max_sleeping: spec.sleep.max_sleeping,
            wake: if wakes.is_empty() {
                ColdStart::Fixed { ms: 1_000 }
            } else {
                ColdStart::Empirical { samples_ms: wakes }
            },
            ttl_ms: u64::from(spec.sleep.sleep_ttl_secs) * 1000,
            usd_per_gpu_second: price * sluice_core::billing::DEFAULT_SLEEPING_SHARE,
        }),
        queue_capacity: spec.limits.queue_capacity as usize,
        queue_timeout_ms: u64::from(spec.limits.queue_timeout_secs) * 1000,
        gpus_per_worker: spec.workers.gpus_per_worker,
        usd_per_gpu_second: price,
        seed: 1,
    }
}

/// Re-tunes simulate one at a time, whatever the number of endpoints: on a busy endpoint one
/// is ~30 s of a core (BENCHMARKS.md), and the gateway may share this process's cores.
static RETUNES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The SLO policy's latest settings per endpoint, and which re-tunes are under way.
#[derive(Default)]
pub struct Tuner {
    state: Mutex<TunerState>,
}

#[derive(Default)]
struct TunerState {
    /// Endpoint → (its latest setting, when the next re-tune is due, the last wait).
    tuned: HashMap<EndpointId, (Option<Setting>, Millis, u64)>,
    busy: HashSet<EndpointId>,
}

/// Takes an endpoint off the busy list when dropped.
struct Done(Arc<Tuner>, EndpointId);

impl Drop for Done {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.busy.remove(&self.1);
        }
    }
}

/// Whether an endpoint runs or shadows the SLO policy.
pub fn wants_slo(spec: &EndpointSpec) -> bool {
    spec.insight.slo_p99_secs.is_some()
        && (spec.autoscale.scaling_policy == Preset::Slo || spec.insight.shadow_policies.contains(&Preset::Slo))
}

impl Tuner {
    /// The latest setting found for an endpoint.
    pub fn setting(&self, id: &EndpointId) -> Option<Setting> {
        self.state.lock().unwrap().tuned.get(id).and_then(|t| t.0)
    }

    /// Re-tunes, in the background, the endpoints that run or shadow the SLO policy and are due
    /// (never tuned; else [`tune::RETUNE_EVERY_MS`] after the last re-tune, backing off to
    /// [`tune::RETUNE_MAX_MS`] while the setting holds). They wait their turn ([`RETUNES`]) and
    /// then read the window that ends at that moment.
    pub fn due(
        self: &Arc<Self>,
        store: &Store,
        logs: &Arc<crate::logs::Logs>,
        specs: &[(EndpointId, EndpointSpec)],
        t: Millis,
    ) {
        let mut st = self.state.lock().unwrap();
        st.tuned.retain(|id, _| specs.iter().any(|(i, s)| i == id && wants_slo(s)));
        for (id, spec) in specs.iter().filter(|(_, s)| wants_slo(s)) {
            let fresh = st.tuned.get(id).is_some_and(|(_, due, _)| t < *due);
            if fresh || st.busy.contains(id) {
                continue;
            }
            st.busy.insert(id.clone());
            let (me, store, logs, id, spec) = (self.clone(), store.clone(), logs.clone(), id.clone(), spec.clone());
            tokio::spawn(async move {
                // Not busy any more however the re-tune ends (even by a panic).
                let _done = Done(me.clone(), id.clone());
                let Ok(_turn) = RETUNES.acquire().await else { return };
                // The endpoint as it is now: it may have changed (or gone) during the wait.
                let spec = match store.get_endpoint(&id).await {
                    Ok(Some(e)) if wants_slo(&e.spec) => e.spec,
                    Ok(_) => {
                        me.state.lock().unwrap().tuned.remove(&id);
                        return;
                    }
                    Err(_) => spec,
                };
                let t = crate::now();
                let found = me.retune(&store, &logs, &id, &spec, t).await;
                let mut st = me.state.lock().unwrap();
                let (keep, wait) = st.tuned.get(&id).map_or((None, 0), |x| (x.0, x.2));
                let next = match found {
                    // Nothing to tune on yet (no traffic): look again in ten seconds, not minutes.
                    None if keep.is_none() => (None, Millis(t.0 + 10_000), 0),
                    None => (keep, Millis(t.0 + tune::RETUNE_EVERY_MS), tune::RETUNE_EVERY_MS),
                    Some(s) => {
                        let wait = tune::next_retune_ms(wait, keep != Some(s));
                        (Some(s), Millis(t.0 + wait), wait)
                    }
                };
                st.tuned.insert(id, next);
            });
        }
    }

    async fn retune(
        &self,
        store: &Store,
        logs: &crate::logs::Logs,
        id: &EndpointId,
        spec: &EndpointSpec,
        t: Millis,
    ) -> Option<Setting> {
        let target = spec.insight.slo_p99_secs?;
        // The last 3 hours; a day only when they hold too few requests (a busy endpoint's day
        // is a lot to read for nothing).
        let mut rec = None;
        for back in [tune::WINDOW_MS, tune::WINDOW_MAX_MS] {
            match load(store, id, Millis(t.0.saturating_sub(back)), t).await {
                Ok(r) => {
                    let enough = recording::demand(&r.requests).len() >= tune::WINDOW_MIN_REQUESTS;
                    rec = Some(r);
                    if enough {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %id, error = %e, "could not read recorded traffic for the SLO policy");
                    return None;
                }
            }
        }
        let rec = rec?;
        let cfg = sim_config(spec, Preset::Default, &rec.starts);
        // All of it off the async threads: the window may be millions of requests.
        let tuned: Tuned = tokio::task::spawn_blocking(move || {
            let trace = recording::to_trace(&rec.requests);
            let first = recording::demand(&rec.requests).first().map(|r| r.at)?;
            tune::tune(&cfg, tune::window_of(&trace, t.0.saturating_sub(first)), target)
        })
        .await
        .ok()??;
        let applied = spec.autoscale.scaling_policy == Preset::Slo && spec.insight.slo_mode == SloMode::Apply;
        let previous = self.setting(id);
        let how = if applied { "applied" } else { "advice, not applied" };
        let reason = format!("SLO re-tune ({how}): {}", tuned.describe());
        logs.event(id, None, reason.clone());
        let ev = ScalingEvent {
            id: 0,
            endpoint_id: id.clone(),
            at: t,
            from: previous.map_or(spec.workers.active_workers, |s| s.active_workers),
            to: tuned.setting.active_workers,
            reason,
            inputs: serde_json::to_string(&tuned).unwrap_or_default(),
            kind: sluice_store::EVENT_RETUNE.into(),
            replay: String::new(),
        };
        if let Err(e) = store.add_scaling_event(&ev).await {
            tracing::warn!(endpoint = %id, error = %e, "could not record an SLO re-tune");
        }
        Some(tuned.setting)
    }
}
