//! Logs (R2.6, R7.2): every line a worker writes, and the platform's events about endpoints and
//! workers, stored per endpoint with a retention by age and size.
//!
//! Workers write to their log files (the runtimes put them there; a worker never waits on the
//! platform). One tail task per worker reads new bytes every 250 ms, cuts lines and hands them
//! to a bounded channel; when the channel is full the line is dropped and counted per endpoint
//! (the log API reports the count). One writer task stores lines in batches and publishes them,
//! with their ids, to followers (`?follow=true`, server-sent events).
use std::{
    collections::HashMap,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use sluice_core::{EndpointId, Millis, WorkerId};
use sluice_store::{LogLine, NewLogLine, Store};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::now;

/// Lines waiting for the writer; beyond, lines are dropped and counted.
pub const BUFFER: usize = 20_000;

/// How long lines are kept, and how much text per endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age_ms: u64,
    pub max_bytes_per_endpoint: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: 7 * 86_400_000, max_bytes_per_endpoint: 64 * 1024 * 1024 }
    }
}

pub struct Logs {
    tx: mpsc::Sender<NewLogLine>,
    rx: Mutex<Option<mpsc::Receiver<NewLogLine>>>,
    live: broadcast::Sender<Arc<LogLine>>,
    dropped: Mutex<HashMap<EndpointId, u64>>,
    tails: Mutex<HashMap<WorkerId, Arc<Notify>>>,
    retention: Retention,
}

impl Logs {
    pub fn new(retention: Retention) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(BUFFER);
        Arc::new(Logs {
            tx,
            rx: Mutex::new(Some(rx)),
            live: broadcast::channel(4096).0,
            dropped: Mutex::default(),
            tails: Mutex::default(),
            retention,
        })
    }

    /// Queues a line for storage without waiting: a full buffer drops it (counted).
    pub fn push(&self, line: NewLogLine) {
        if let Err(mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l)) = self.tx.try_send(line) {
            *self.dropped.lock().unwrap().entry(l.endpoint_id).or_default() += 1;
        }
    }

    /// A platform event about an endpoint (and one of its workers), stored beside worker output.
    pub fn event(&self, endpoint: &EndpointId, worker: Option<&WorkerId>, message: impl Into<String>) {
        self.push(NewLogLine {
            endpoint_id: endpoint.clone(),
            worker_id: worker.map(|w| w.to_string()),
            stream: "platform",
            ts: now(),
            line: message.into(),
        });
    }

    /// Lines of the endpoint dropped because the buffer was full.
    pub fn dropped(&self, endpoint: &EndpointId) -> u64 {
        self.dropped.lock().unwrap().get(endpoint).copied().unwrap_or(0)
    }

    /// Lines dropped, all endpoints.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.lock().unwrap().values().sum()
    }

    /// New lines as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.live.subscribe()
    }

    /// Starts copying a worker's output files into the log (`from_end`: only what is written
    /// from now on, for a worker adopted after a restart, whose earlier output is stored).
    pub fn follow(self: &Arc<Self>, endpoint: &EndpointId, worker: &WorkerId, files: Vec<PathBuf>, from_end: bool) {
        let stop = Arc::new(Notify::new());
        if self.tails.lock().unwrap().insert(worker.clone(), stop.clone()).is_some() {
            tracing::debug!(%worker, "log tail restarted");
        }
        // `WorkerRuntime::log_paths` lists stdout's file, then stderr's.
        let streams: Vec<(PathBuf, &'static str)> = files.into_iter().zip(["stdout", "stderr"]).collect();
        tokio::spawn(tail(self.clone(), endpoint.clone(), worker.clone(), streams, from_end, stop));
    }

    /// The worker has stopped: its tail reads what is left and ends.
    pub fn unfollow(&self, worker: &WorkerId) {
        if let Some(stop) = self.tails.lock().unwrap().remove(worker) {
            stop.notify_one();
        }
    }

    /// Stores queued lines in batches and publishes them; applies retention once a minute. Runs
    /// until `shutdown`, then stores what is still queued.
    pub async fn run_writer(self: Arc<Self>, store: Store, mut shutdown: watch::Receiver<bool>) {
        let Some(mut rx) = self.rx.lock().unwrap().take() else { return };
        let mut last_prune = Millis(0);
        let mut batch = Vec::with_capacity(512);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, 512) => n,
                _ = shutdown.changed() => 0,
            };
            if n > 0 {
                self.store_batch(&store, &mut batch).await;
            }
            if *shutdown.borrow() {
                // Whatever the tails read last.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(l) = rx.try_recv() {
                    batch.push(l);
                    if batch.len() >= 512 {
                        self.store_batch(&store, &mut batch).await;
                    }
                }
                if !batch.is_empty() {
                    self.store_batch(&store, &mut batch).await;
                }
                return;
            }
            let t = now();
            if t.saturating_sub(last_prune) >= 60_000 {
                last_prune = t;
                let before = Millis(t.0.saturating_sub(self.retention.max_age_ms));
                if let Err(e) = store.prune_logs(before, self.retention.max_bytes_per_endpoint).await {
                    tracing::warn!(error = %e, "could not apply log retention");
                }
            }
        }
    }

    async fn store_batch(&self, store: &Store, batch: &mut Vec<NewLogLine>) {
        // Per endpoint, for the count if the batch cannot be stored (a batch holds few).
        let mut per: Vec<(EndpointId, u64)> = Vec::new();
        for l in batch.iter() {
            match per.iter_mut().find(|(e, _)| *e == l.endpoint_id) {
                Some((_, n)) => *n += 1,
                None => per.push((l.endpoint_id.clone(), 1)),
            }
        }
        match store.add_log_lines(std::mem::take(batch)).await {
            // Followers get them; with none, nothing is published.
            Ok(stored) if self.live.receiver_count() > 0 => {
                for l in stored {
                    let _ = self.live.send(Arc::new(l));
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not store log lines; dropped");
                let mut d = self.dropped.lock().unwrap();
                for (ep, n) in per {
                    *d.entry(ep).or_default() += n;
                }
            }
        }
    }
}

/// Copies new bytes of the worker's files into the log every 250 ms until told to stop, then
/// once more.
async fn tail(
    logs: Arc<Logs>,
    endpoint: EndpointId,
    worker: WorkerId,
    streams: Vec<(PathBuf, &'static str)>,
    from_end: bool,
    stop: Arc<Notify>,
) {
    let mut offsets: Vec<u64> =
        streams.iter().map(|(p, _)| if from_end { std::fs::metadata(p).map_or(0, |m| m.len()) } else { 0 }).collect();
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
    loop {
        let stopping = tokio::select! {
            () = stop.notified() => true,
            () = tokio::time::sleep(Duration::from_millis(250)) => false,
        };
        for (i, (path, stream)) in streams.iter().enumerate() {
            let (path, start) = (path.clone(), offsets[i]);
            let read = tokio::task::spawn_blocking(move || read_from(&path, start)).await.unwrap_or_default();
            let Some((bytes, end)) = read else { continue };
            offsets[i] = end;
            partial[i].extend_from_slice(&bytes);
            let mut lines = sluice_core::logs::split_lines(&mut partial[i]);
            if stopping && !partial[i].is_empty() {
                lines.push(String::from_utf8_lossy(&std::mem::take(&mut partial[i])).into_owned());
            }
            let t = now();
            for line in lines {
                logs.push(NewLogLine {
                    endpoint_id: endpoint.clone(),
                    worker_id: Some(worker.to_string()),
                    stream,
                    ts: t,
                    line,
                });
            }
        }
        if stopping {
            return;
        }
    }
}

/// New bytes of `path` from `start` (at most 1 MiB at a time) and the offset after them. A file
/// that shrank (rotated) is read again from its start.
fn read_from(path: &std::path::Path, start: u64) -> Option<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = if len < start { 0 } else { start };
    if len == start {
        return None;
    }
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(1024 * 1024).read_to_end(&mut buf).ok()?;
    let end = start + buf.len() as u64;
    Some((buf, end))
}
