//! Metering and credit (R5.3, R5.4), apart from the reconciler: it is told which workers run
//! and which ended, accrues their GPU-seconds into the usage ledger, and applies the credit
//! rules after each accrual. The arithmetic (classes, seconds due, costs, the credit verdict)
//! is `sluice_core::billing`'s; this module holds what it needs between passes and does the I/O.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sluice_core::{
    EndpointId, Millis, WorkerId,
    billing::{Class, Price, classify, cost_nanos, credit_verdict, hourly_cost_nanos, seconds_due, usd},
    keys::Scope,
};
use sluice_store::{EndpointRecord, Store, UsageEntry, WorkerRecord};
use tokio::sync::Notify;

use crate::logs::Logs;

/// How usage is metered.
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    pub prices: Vec<Price>,
    /// Running workers are accrued at least this often (R5.3: at least once a minute).
    pub interval_ms: u64,
}

/// What an endpoint is billed as: its account, GPU type and active workers.
#[derive(Debug, Clone)]
struct Billing {
    account: String,
    gpu_type: String,
    active: u32,
}

pub struct Meter {
    store: Store,
    prices: Vec<Price>,
    interval_ms: u64,
    last: Millis,
    /// Seconds already billed per worker, with its class and endpoint.
    billed: HashMap<WorkerId, (u64, Class, EndpointId)>,
    billed_loaded: bool,
    /// Workers that ended since the last accrual (metered at once, to their confirmed stop).
    finished: Vec<WorkerRecord>,
    /// Workers that fell asleep or were woken since the last accrual: (the record as it was
    /// before, when), metered at once up to then at the rate they had.
    transitions: Vec<(WorkerRecord, Millis)>,
    billing_of: HashMap<EndpointId, Billing>,
    logs: Arc<Logs>,
    webhooks: Arc<crate::v2::webhook::Webhooks>,
    /// Woken when endpoints are turned off (the reconciler drains them).
    wake: Arc<Notify>,
}

impl Meter {
    pub fn new(
        store: Store,
        cfg: MeteringConfig,
        logs: Arc<Logs>,
        webhooks: Arc<crate::v2::webhook::Webhooks>,
        wake: Arc<Notify>,
    ) -> Meter {
        Meter {
            store,
            prices: cfg.prices,
            interval_ms: cfg.interval_ms,
            last: Millis(0),
            billed: HashMap::new(),
            billed_loaded: false,
            finished: Vec::new(),
            transitions: Vec::new(),
            billing_of: HashMap::new(),
            logs,
            webhooks,
            wake,
        }
    }

    /// A launched worker ended (its record carries the confirmed stop): metered at the next
    /// [`Meter::accrue`].
    pub fn ended(&mut self, rec: WorkerRecord) {
        self.finished.push(rec);
    }

    /// A running worker fell asleep or is being woken at `at` (`rec` as it was before): what
    /// it ran until then is metered at the next [`Meter::accrue`] at the rate it had.
    pub fn transition(&mut self, rec: WorkerRecord, at: Millis) {
        self.transitions.push((rec, at));
    }

    /// Accrues usage: every `interval_ms` for the running workers `live` (whole seconds so far),
    /// and for every worker that ended since (its lifetime rounded up). Entries are written in
    /// one transaction and the billed seconds advance only once it committed, so a crash loses
    /// at most one interval and nothing is counted twice. Then the credit rules.
    pub async fn accrue(&mut self, endpoints: &[EndpointRecord], live: &[&WorkerRecord], t: Millis) {
        for e in endpoints {
            let b = Billing {
                account: e.account.clone(),
                gpu_type: e.spec.workers.gpu_type.clone(),
                active: e.spec.workers.active_workers,
            };
            self.billing_of.insert(e.id.clone(), b);
        }
        let periodic = t.saturating_sub(self.last) >= self.interval_ms;
        if !periodic && self.finished.is_empty() && self.transitions.is_empty() {
            return;
        }
        let launched: Vec<&WorkerRecord> = live.iter().copied().filter(|w| w.launched_at.is_some()).collect();
        let live_ids: HashSet<&WorkerId> = live.iter().map(|w| &w.id).collect();
        if !self.billed_loaded && !self.load_billed(&launched).await {
            return;
        }
        // (record, end of interval, stopped)
        let mut due: Vec<(WorkerRecord, Millis, bool)> =
            self.transitions.iter().map(|(r, at)| (r.clone(), *at, false)).collect();
        due.extend(self.finished.iter().filter_map(|r| Some((r.clone(), r.stopped_at?, true))));
        if periodic {
            let mut running = launched.clone();
            running.sort_by_key(|w| (w.created_at, w.id.clone()));
            due.extend(running.into_iter().map(|w| (w.clone(), t, false)));
        }
        let mut updates: HashMap<WorkerId, (u64, Class, EndpointId)> = HashMap::new();
        let mut entries = Vec::new();
        for (rec, end, stopped) in &due {
            let Some(start) = rec.launched_at else { continue };
            let Some(b) = self.billing_of.get(&rec.endpoint_id).cloned() else { continue };
            let (billed, class) = match updates.get(&rec.id).or(self.billed.get(&rec.id)) {
                Some((b, c, _)) => (*b, *c),
                None => {
                    // Its class is fixed at its first accrual: baseline while the endpoint's
                    // live baseline workers are fewer than its active workers.
                    let baseline = self
                        .billed
                        .iter()
                        .chain(updates.iter())
                        .filter(|(id, (_, c, ep))| {
                            *c == Class::Baseline && *ep == rec.endpoint_id && live_ids.contains(id)
                        })
                        .count() as u32;
                    (0, classify(baseline, b.active))
                }
            };
            let secs = seconds_due(start, *end, *stopped, billed);
            updates.insert(rec.id.clone(), (billed + secs, class, rec.endpoint_id.clone()));
            if secs == 0 {
                continue;
            }
            let gpus = rec.gpus.len() as u32;
            // Seconds asleep are their own class; the worker keeps its class for when it wakes.
            let class = if sluice_core::worker::is_asleep(&rec.phases) { Class::Sleeping } else { class };
            let rate =
                self.prices.iter().find(|p| p.gpu_type == b.gpu_type).map_or(0, |p| p.nanos_per_gpu_second(class));
            entries.push(UsageEntry {
                account: b.account,
                endpoint_id: rec.endpoint_id.clone(),
                worker_id: rec.id.clone(),
                class,
                gpu_type: b.gpu_type,
                gpus,
                seconds: secs,
                cost_nanos: cost_nanos(secs, gpus, rate),
                at: *end,
            });
        }
        if let Err(e) = self.store.add_usage(&entries).await {
            tracing::warn!(error = %e, "could not write usage; will retry at the next accrual");
            return;
        }
        self.billed.extend(updates);
        self.transitions.clear();
        for r in std::mem::take(&mut self.finished) {
            self.billed.remove(&r.id);
        }
        if periodic {
            self.last = t;
        }
        self.check_credit(&launched, t).await;
    }

    /// After a restart (or a change of leader): the seconds already billed to the workers this
    /// process now meters. False when the ledger cannot be read (metering waits).
    async fn load_billed(&mut self, launched: &[&WorkerRecord]) -> bool {
        let ids: Vec<WorkerId> =
            launched.iter().map(|w| w.id.clone()).chain(self.finished.iter().map(|r| r.id.clone())).collect();
        match self.store.billed(&ids).await {
            Ok(b) => {
                for (id, (secs, class)) in b {
                    let ep = launched
                        .iter()
                        .find(|w| w.id == id)
                        .map(|w| w.endpoint_id.clone())
                        .or_else(|| self.finished.iter().find(|r| r.id == id).map(|r| r.endpoint_id.clone()));
                    if let Some(ep) = ep {
                        self.billed.insert(id, (secs, class, ep));
                    }
                }
                self.billed_loaded = true;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the usage ledger; metering later");
                false
            }
        }
    }

    /// Credit rules (R5.4) after each accrual: warn once per crossing below 10 hours of the
    /// account's current runtime cost (event, and the webhook if set), and turn every endpoint
    /// off below $10. The warning is sent only once its "warned" mark is stored, so a failed
    /// write never sends it twice.
    async fn check_credit(&mut self, launched: &[&WorkerRecord], t: Millis) {
        let accounts = match self.store.list_accounts(&Scope::All).await {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "could not read accounts for the credit check"),
        };
        for a in accounts {
            let Some(balance) = a.balance_nanos else { continue };
            let hourly: i64 = launched
                .iter()
                .filter_map(|w| {
                    let b = self.billing_of.get(&w.endpoint_id)?;
                    (b.account == a.name).then_some(())?;
                    let class = self.billed.get(&w.id).map_or(Class::Autoscaled, |x| x.1);
                    let class = if sluice_core::worker::is_asleep(&w.phases) { Class::Sleeping } else { class };
                    let price = self.prices.iter().find(|p| p.gpu_type == b.gpu_type);
                    Some(hourly_cost_nanos(&[(w.gpus.len() as u32, class)], price))
                })
                .sum();
            let v = credit_verdict(balance, hourly, a.low_credit_warned);
            if v.warn {
                self.warn(&a, balance, hourly, t).await;
            } else if v.rearm
                && let Err(e) = self.store.set_low_credit_warned(&a.name, false).await
            {
                tracing::warn!(account = %a.name, error = %e, "could not re-arm the low-credit warning; trying again later");
            }
            if v.turn_off {
                self.turn_off(&a.name, balance, t).await;
            }
        }
    }

    async fn warn(&self, a: &sluice_store::AccountRecord, balance: i64, hourly: i64, t: Millis) {
        if let Err(e) = self.store.set_low_credit_warned(&a.name, true).await {
            return tracing::warn!(account = %a.name, error = %e, "could not record the low-credit warning; warning later");
        }
        let msg = format!(
            "low credit: the balance of ${:.2} covers less than 10 hours of the current runtime cost (${:.2} per hour)",
            usd(balance),
            usd(hourly)
        );
        tracing::warn!(account = %a.name, "{msg}");
        for (ep, b) in &self.billing_of {
            if b.account == a.name {
                self.logs.event(ep, None, msg.clone());
            }
        }
        if let Err(e) = self.store.add_account_event(&a.name, t, "low_credit", &msg).await {
            tracing::warn!(account = %a.name, error = %e, "could not record the low-credit event");
        }
        if let Some(url) = &a.webhook_url {
            let body = sluice_api::LowCreditNotice {
                event: "low_credit".into(),
                account: a.name.clone(),
                balance_usd: usd(balance),
                cost_per_hour_usd: usd(hourly),
                message: msg,
            };
            self.webhooks.low_credit(url, &body);
        }
    }

    async fn turn_off(&self, account: &str, balance: i64, t: Millis) {
        match self.store.turn_off_account(account, t).await {
            Ok(ids) if !ids.is_empty() => {
                let msg = format!(
                    "credit below $10 (${:.2}): turned off {}; add credit, then start them again",
                    usd(balance),
                    ids.join(", ")
                );
                tracing::warn!(%account, "{msg}");
                for id in ids.iter().filter_map(|i| EndpointId::parse(i).ok()) {
                    self.logs.event(&id, None, format!("endpoint turned off: {msg}"));
                }
                if let Err(e) = self.store.add_account_event(account, t, "turned_off", &msg).await {
                    tracing::warn!(%account, error = %e, "could not record the turn-off event");
                }
                self.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%account, error = %e, "could not turn endpoints off"),
        }
    }
}
