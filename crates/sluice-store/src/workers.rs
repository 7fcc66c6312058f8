//! Workers: the reconciler's records of what it launched.

use sluice_core::{EndpointId, Millis, WorkerId, WorkerState, worker::PhaseAt};
use sqlx::{Row, any::AnyRow};

use crate::{Result, Store, corrupt, ms};

/// A worker as stored by the reconciler.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub endpoint_id: EndpointId,
    pub generation: u64,
    pub state: WorkerState,
    pub reason: Option<String>,
    pub node: Option<String>,
    pub gpus: Vec<u32>,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub created_at: Millis,
    pub launched_at: Option<Millis>,
    pub ready_at: Option<Millis>,
    pub stopped_at: Option<Millis>,
    /// Its starts' (and wakes') phases, oldest first (the last [`MAX_PHASES`]).
    pub phases: Vec<PhaseAt>,
}

/// Phases kept per worker.
pub const MAX_PHASES: usize = 32;

impl WorkerRecord {
    /// Records a phase now reached (keeping the last [`MAX_PHASES`]).
    pub fn phase(&mut self, phase: sluice_core::worker::Phase, at: Millis) {
        self.phases.push(PhaseAt { phase, at });
        if self.phases.len() > MAX_PHASES {
            self.phases.drain(..self.phases.len() - MAX_PHASES);
        }
    }
}

fn worker_from_row(r: &AnyRow) -> Result<WorkerRecord> {
    let id: String = r.try_get("id")?;
    let ep: String = r.try_get("endpoint_id")?;
    let state: String = r.try_get("state")?;
    let gpus: String = r.try_get("gpus")?;
    let phases: String = r.try_get("phases")?;
    Ok(WorkerRecord {
        id: WorkerId::parse(&id).map_err(|e| corrupt("workers", e))?,
        endpoint_id: EndpointId::parse(&ep).map_err(|e| corrupt("workers", e))?,
        generation: r.try_get::<i64, _>("generation")? as u64,
        state: WorkerState::parse(&state).ok_or_else(|| corrupt("workers", format!("state {state}")))?,
        reason: r.try_get("reason")?,
        node: r.try_get("node")?,
        gpus: serde_json::from_str(&gpus).map_err(|e| corrupt("workers", e))?,
        port: r.try_get::<Option<i64>, _>("port")?.map(|p| p as u16),
        pid: r.try_get::<Option<i64>, _>("pid")?.map(|p| p as u32),
        created_at: Millis(r.try_get::<i64, _>("created_at")? as u64),
        launched_at: ms(r.try_get("launched_at")?),
        ready_at: ms(r.try_get("ready_at")?),
        stopped_at: ms(r.try_get("stopped_at")?),
        phases: serde_json::from_str(&phases).map_err(|e| corrupt("workers", e))?,
    })
}

impl Store {
    pub async fn upsert_worker(&self, w: &WorkerRecord) -> Result<()> {
        let gpus = serde_json::to_string(&w.gpus).map_err(|x| corrupt("workers", x))?;
        let phases = serde_json::to_string(&w.phases).map_err(|x| corrupt("workers", x))?;
        sqlx::query(
            "INSERT INTO workers (id, endpoint_id, generation, state, reason, node, gpus, port, pid, created_at, launched_at, ready_at, stopped_at, phases)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET state = $4, reason = $5, node = $6, gpus = $7, port = $8, pid = $9,
                 launched_at = $11, ready_at = $12, stopped_at = $13, phases = $14",
        )
        .bind(w.id.as_str())
        .bind(w.endpoint_id.as_str())
        .bind(w.generation as i64)
        .bind(w.state.as_str())
        .bind(&w.reason)
        .bind(&w.node)
        .bind(gpus)
        .bind(w.port.map(i64::from))
        .bind(w.pid.map(i64::from))
        .bind(w.created_at.0 as i64)
        .bind(w.launched_at.map(|m| m.0 as i64))
        .bind(w.ready_at.map(|m| m.0 as i64))
        .bind(w.stopped_at.map(|m| m.0 as i64))
        .bind(phases)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Workers of one endpoint, newest first, at most `limit`.
    pub async fn list_workers(&self, endpoint: &EndpointId, limit: u32) -> Result<Vec<WorkerRecord>> {
        let rows = sqlx::query("SELECT * FROM workers WHERE endpoint_id = $1 ORDER BY created_at DESC, id LIMIT $2")
            .bind(endpoint.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(worker_from_row).collect()
    }

    /// When a worker last became ready (a start or a wake), if it did.
    pub async fn worker_ready_at(&self, id: &str) -> Result<Option<Millis>> {
        let row =
            sqlx::query("SELECT ready_at FROM workers WHERE id = $1").bind(id).fetch_optional(&self.reader).await?;
        Ok(row.and_then(|r| r.try_get::<Option<i64>, _>("ready_at").ok().flatten()).map(|v| Millis(v as u64)))
    }

    /// Workers not yet stopped or failed, of every endpoint (what a restarted reconciler resumes).
    pub async fn list_unfinished_workers(&self) -> Result<Vec<WorkerRecord>> {
        let rows =
            sqlx::query("SELECT * FROM workers WHERE state NOT IN ('stopped', 'failed') ORDER BY created_at, id")
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(worker_from_row).collect()
    }

    /// Deletes finished workers: those of endpoints that no longer exist, and all but the newest
    /// `keep` finished ones of each endpoint.
    pub async fn prune_workers(&self, keep: u32) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM workers WHERE state IN ('stopped', 'failed') AND (
                endpoint_id NOT IN (SELECT id FROM endpoints)
                OR id NOT IN (SELECT id FROM workers w2 WHERE w2.endpoint_id = workers.endpoint_id
                              AND w2.state IN ('stopped', 'failed') ORDER BY created_at DESC LIMIT $1))",
        )
        .bind(i64::from(keep))
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected())
    }
}
