//! `GET /metrics` (R7.3): Prometheus text (OpenMetrics) on the control API's address. Gathered
//! at scrape time from what the platform already keeps (the gateway's figures, worker counts,
//! cold starts, the usage ledger, job counts, dropped log lines) and encoded with
//! prometheus-client. Labels are endpoint ids and small fixed sets; nothing per request.
use sluice_core::keys::Scope;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use sluice_core::{
    EndpointId,
    metrics::{COLD_START_BOUNDS, GatewayFigures, Histogram},
};

use crate::AppState;

/// Timings for `/metrics`: cold starts per endpoint (from a worker's creation, when capacity was
/// asked for, to ready), and how long the reconciler's passes take.
#[derive(Debug, Default)]
pub struct Timings {
    cold_starts: Mutex<HashMap<EndpointId, Histogram>>,
    passes: Mutex<Option<Histogram>>,
    /// The parts of starts (placement, image, start, load) and wakes, by part.
    phases: Mutex<std::collections::BTreeMap<&'static str, Histogram>>,
}

impl Timings {
    pub fn pass_took(&self, secs: f64) {
        self.passes
            .lock()
            .unwrap()
            .get_or_insert_with(|| Histogram::new(&sluice_core::metrics::LATENCY_BOUNDS))
            .observe(secs);
    }

    fn passes(&self) -> Option<Histogram> {
        self.passes.lock().unwrap().clone()
    }

    pub fn observe(&self, e: &EndpointId, secs: f64) {
        self.cold_starts
            .lock()
            .unwrap()
            .entry(e.clone())
            .or_insert_with(|| Histogram::new(&COLD_START_BOUNDS))
            .observe(secs);
    }

    /// One part of a start's anatomy (`sluice_core::worker::start_anatomy`).
    pub fn phase(&self, part: &'static str, secs: f64) {
        self.phases.lock().unwrap().entry(part).or_insert_with(|| Histogram::new(&COLD_START_BOUNDS)).observe(secs);
    }

    fn phases(&self) -> Vec<(&'static str, Histogram)> {
        self.phases.lock().unwrap().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn snapshot(&self) -> Vec<(EndpointId, Histogram)> {
        self.cold_starts.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family as read at scrape time.
#[derive(Debug)]
enum Values {
    Counter(Vec<(Labels, u64)>),
    CounterF(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, i64)>),
    GaugeF(Vec<(Labels, f64)>),
    Histogram(Vec<(Labels, Histogram)>),
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    values: Values,
}

#[derive(Debug, Default)]
struct Snapshot(Vec<Family>);

impl Snapshot {
    fn add(&mut self, name: &'static str, help: &'static str, values: Values) {
        self.0.push(Family { name, help, values });
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.values {
                Values::Counter(_) | Values::CounterF(_) => MetricType::Counter,
                Values::Gauge(_) | Values::GaugeF(_) => MetricType::Gauge,
                Values::Histogram(_) => MetricType::Histogram,
            };
            let mut m = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            match &f.values {
                Values::Counter(rows) => {
                    for (l, v) in rows {
                        m.encode_family(l)?.encode_counter::<NoLabelSet, _, u64>(v, None)?;
                    }
                }
                Values::CounterF(rows) => {
                    for (l, v) in rows {
                        m.encode_family(l)?.encode_counter::<NoLabelSet, _, f64>(v, None)?;
                    }
                }
                Values::Gauge(rows) => {
                    for (l, v) in rows {
                        m.encode_family(l)?.encode_gauge(v)?;
                    }
                }
                Values::GaugeF(rows) => {
                    for (l, v) in rows {
                        m.encode_family(l)?.encode_gauge(v)?;
                    }
                }
                Values::Histogram(rows) => {
                    for (l, h) in rows {
                        m.encode_family(l)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn ep(e: &EndpointId) -> Labels {
    vec![("endpoint", e.to_string())]
}

/// Everything `/metrics` shows, read now.
async fn gather(st: &AppState, gw: &GatewayFigures) -> Result<Snapshot, sluice_store::Error> {
    let mut s = Snapshot::default();
    gateway_families(&mut s, gw);
    control_families(&mut s, st).await?;
    Ok(s)
}

/// A gateway process's own `/metrics` (`sluice gateway --metrics-addr`): its figures, whether it
/// reaches the control plane, and how old its routing table is.
pub fn encode_gateway(gw: &GatewayFigures, control_plane_up: bool, table_age_secs: f64) -> String {
    let mut s = Snapshot::default();
    gateway_families(&mut s, gw);
    s.add(
        "sluice_gateway_control_plane_up",
        "1 while the gateway reaches the control plane; 0 while it serves from its last routing table.",
        Values::Gauge(vec![(vec![], i64::from(control_plane_up))]),
    );
    s.add(
        "sluice_gateway_routing_table_age_seconds",
        "Time since the gateway last heard from the control plane.",
        Values::GaugeF(vec![(vec![], table_age_secs)]),
    );
    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    let mut body = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut body, &reg);
    body
}

fn gateway_families(s: &mut Snapshot, gw: &GatewayFigures) {
    let (mut codes, mut total, mut added, mut rejected, mut errors, mut in_flight, mut queued) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ttft, mut itl, mut tokens, mut streams) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut phases = Vec::new();
    for f in &gw.endpoints {
        let Some(id) = &f.endpoint else { continue };
        for (code, n) in &f.codes {
            codes.push((vec![("endpoint", id.to_string()), ("code", code.to_string())], *n));
        }
        total.push((ep(id), f.total.clone()));
        added.push((ep(id), f.added.clone()));
        for (limit, n) in &f.rejected {
            rejected.push((vec![("endpoint", id.to_string()), ("limit", limit.clone())], *n));
        }
        for (fault, n) in &f.errors {
            errors.push((vec![("endpoint", id.to_string()), ("fault", fault.clone())], *n));
        }
        in_flight.push((ep(id), f.in_flight as i64));
        queued.push((ep(id), f.queued as i64));
        for (phase, h) in &f.phases {
            if h.count > 0 {
                phases.push((vec![("endpoint", id.to_string()), ("phase", phase.clone())], h.clone()));
            }
        }
        if f.llm.streams > 0 {
            ttft.push((ep(id), f.llm.ttft.clone()));
            itl.push((ep(id), f.llm.itl.clone()));
            tokens.push((ep(id), f.llm.output_tokens));
            streams.push((ep(id), f.llm.streams));
        }
    }
    s.add(
        "sluice_llm_time_to_first_token_seconds",
        "Streamed OpenAI answers: from the request's arrival at the gateway to the first token.",
        Values::Histogram(ttft),
    );
    s.add(
        "sluice_llm_inter_token_latency_seconds",
        "Streamed OpenAI answers: time between tokens.",
        Values::Histogram(itl),
    );
    s.add(
        "sluice_llm_output_tokens",
        "Tokens streamed (the final usage chunk's completion_tokens when present, else the chunks).",
        Values::Counter(tokens),
    );
    s.add("sluice_llm_streams", "Streamed OpenAI answers that ended.", Values::Counter(streams));
    s.add(
        "sluice_gateway_request_phase_seconds",
        "Where requests' time to their response head went: queue (a busy worker's slot), start (a start or wake), upstream (the worker), gateway (its own part); the Server-Timing header's figures.",
        Values::Histogram(phases),
    );
    s.add(
        "sluice_gateway_requests",
        "Responses the gateway sent, by endpoint and status code.",
        Values::Counter(codes),
    );
    s.add(
        "sluice_gateway_request_duration_seconds",
        "Time from a request's arrival to its response head.",
        Values::Histogram(total),
    );
    s.add(
        "sluice_gateway_added_latency_seconds",
        "The part of the request duration the platform added (the worker's own time excluded; queueing for a worker included).",
        Values::Histogram(added),
    );
    s.add(
        "sluice_gateway_rejected_requests",
        "Requests refused with 429, by the limit that refused them.",
        Values::Counter(rejected),
    );
    s.add(
        "sluice_gateway_errors",
        "Requests the gateway answered with an error of its own, by who was at fault (client, worker, platform).",
        Values::Counter(errors),
    );
    s.add("sluice_gateway_in_flight_requests", "Requests being served by a worker now.", Values::Gauge(in_flight));
    s.add("sluice_gateway_queued_requests", "Requests waiting for a worker slot now.", Values::Gauge(queued));
    s.add(
        "sluice_gateway_open_connections",
        "Client connections open at the gateway.",
        Values::Gauge(vec![(vec![], gw.open_connections as i64)]),
    );
    s.add(
        "sluice_gateway_connections",
        "Client connections the gateway accepted.",
        Values::Counter(vec![(vec![], gw.connections_total)]),
    );
    s.add(
        "sluice_gateway_routing_table_version",
        "Version of the routing table the gateway serves from.",
        Values::Gauge(vec![(vec![], gw.table_version as i64)]),
    );
}

async fn control_families(s: &mut Snapshot, st: &AppState) -> Result<(), sluice_store::Error> {
    let endpoints = st.store.list_endpoints(&Scope::All).await?;
    let counts = st.counts.load();
    let (mut by_state, mut desired, mut jobs, mut dropped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in &endpoints {
        let c = counts.get(&e.id).cloned().unwrap_or_default();
        for (state, n) in
            [("pending", c.pending), ("starting", c.starting), ("ready", c.ready), ("draining", c.draining)]
        {
            by_state.push((vec![("endpoint", e.id.to_string()), ("state", state.to_owned())], i64::from(n)));
        }
        desired.push((ep(&e.id), i64::from(c.desired)));
        if e.spec.mode.is_queue() {
            let j = st.store.job_counts(&e.id).await?;
            for (state, n) in [
                ("IN_QUEUE", j.in_queue),
                ("IN_PROGRESS", j.in_progress),
                ("COMPLETED", j.completed),
                ("FAILED", j.failed),
                ("CANCELLED", j.cancelled),
                ("TIMED_OUT", j.timed_out),
            ] {
                jobs.push((vec![("endpoint", e.id.to_string()), ("state", state.to_owned())], n as i64));
            }
        }
        dropped.push((ep(&e.id), st.logs.dropped(&e.id)));
    }
    s.add("sluice_workers", "Workers by state.", Values::Gauge(by_state));
    s.add("sluice_workers_desired", "Workers the autoscaler wants.", Values::Gauge(desired));
    s.add("sluice_jobs", "Jobs of queue endpoints by state (kept ones: results expire).", Values::Gauge(jobs));
    s.add(
        "sluice_log_lines_dropped",
        "Worker log lines dropped because they could not be stored fast enough.",
        Values::Counter(dropped),
    );
    let cold: Vec<(Labels, Histogram)> = st.timings.snapshot().into_iter().map(|(e, h)| (ep(&e), h)).collect();
    s.add(
        "sluice_cold_start_duration_seconds",
        "Cold starts: from a worker's creation to ready (placement, image, boot, first health check).",
        Values::Histogram(cold),
    );
    s.add(
        "sluice_worker_start_phase_seconds",
        "The parts of worker starts: placement, image, start (process or container), load (to the first health 200), and wake (wake call to ready).",
        Values::Histogram(st.timings.phases().into_iter().map(|(p, h)| (vec![("phase", p.to_owned())], h)).collect()),
    );
    let util = st.gpu_util.load();
    if !util.is_empty() {
        let mut gauges: Vec<(Labels, i64)> = util
            .iter()
            .map(|((node, gpu), pct)| (vec![("node", node.clone()), ("gpu", gpu.to_string())], i64::from(*pct)))
            .collect();
        gauges.sort();
        s.add(
            "sluice_gpu_utilization_percent",
            "GPU utilization as the driver reports it (NVML), percent, by node and GPU index.",
            Values::Gauge(gauges),
        );
    }
    let (mut gpu_s, mut cost) = (Vec::new(), Vec::new());
    for (e, secs, nanos) in st.store.usage_totals().await? {
        gpu_s.push((vec![("endpoint", e.clone())], secs.max(0) as u64));
        cost.push((vec![("endpoint", e)], nanos as f64 / 1e9));
    }
    s.add("sluice_gpu_seconds", "GPU-seconds metered.", Values::Counter(gpu_s));
    s.add("sluice_cost_usd", "Cost metered, US dollars.", Values::CounterF(cost));
    s.add(
        "sluice_reconcile_pass_duration_seconds",
        "How long one pass of the reconciler takes (observe, scale, start and stop, publish, meter).",
        Values::Histogram(st.timings.passes().into_iter().map(|h| (vec![], h)).collect()),
    );
    Ok(())
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let gw = st.plane.figures();
    let snapshot = match gather(&st, &gw).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not gather metrics");
            return (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable: the store did not answer").into_response();
        }
    };
    let mut reg = Registry::default();
    reg.register_collector(Box::new(snapshot));
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &reg).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "could not encode metrics").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
