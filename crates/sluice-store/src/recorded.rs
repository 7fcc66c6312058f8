//! Recorded traffic (issue 20): per endpoint, chunks of requests, worker starts and worker
//! spans (`sluice_core::recording`), one chunk per kind per reconcile pass, kept by age and
//! size; and the shadow policies' would-be counts.
use sluice_core::{EndpointId, Millis};
use sqlx::Row;

use crate::{Result, Store};

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Requests,
    Starts,
    Spans,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Requests => "requests",
            RecordKind::Starts => "starts",
            RecordKind::Spans => "spans",
        }
    }
}

/// A chunk to store: `data` is a JSON array of records of `kind`, from `first_at` to `last_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordChunk {
    pub endpoint_id: EndpointId,
    pub kind: RecordKind,
    pub first_at: Millis,
    pub last_at: Millis,
    pub n: u64,
    pub data: String,
}

/// A shadow policy's would-be worker count from `at` on.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPoint {
    pub endpoint_id: EndpointId,
    pub policy: String,
    pub at: Millis,
    pub count: u32,
}

impl Store {
    /// Stores chunks and shadow points in one transaction.
    pub async fn add_recorded(&self, chunks: &[RecordChunk], shadows: &[ShadowPoint]) -> Result<()> {
        if chunks.is_empty() && shadows.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for c in chunks {
            sqlx::query(
                "INSERT INTO recorded (endpoint_id, kind, first_at, last_at, n, bytes, data) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(c.endpoint_id.as_str())
            .bind(c.kind.as_str())
            .bind(c.first_at.0 as i64)
            .bind(c.last_at.0 as i64)
            .bind(c.n as i64)
            .bind(c.data.len() as i64)
            .bind(&c.data)
            .execute(&mut *tx)
            .await?;
        }
        for p in shadows {
            sqlx::query("INSERT INTO shadow_points (endpoint_id, policy, at, n) VALUES ($1, $2, $3, $4)")
                .bind(p.endpoint_id.as_str())
                .bind(&p.policy)
                .bind(p.at.0 as i64)
                .bind(i64::from(p.count))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The data of an endpoint's chunks of `kind` that overlap `[since, until)`, oldest first
    /// (a chunk may hold records just outside the window: the caller filters).
    pub async fn recorded(
        &self,
        endpoint: &EndpointId,
        kind: RecordKind,
        since: Millis,
        until: Millis,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT data FROM recorded WHERE endpoint_id = $1 AND kind = $2 AND last_at >= $3 AND first_at < $4 ORDER BY id",
        )
        .bind(endpoint.as_str())
        .bind(kind.as_str())
        .bind(since.0 as i64)
        .bind(until.0 as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("data")?)).collect()
    }

    /// Shadow points of an endpoint within `[since, until)`, plus each policy's last point
    /// before `since` (the count the window starts with), oldest first.
    pub async fn shadow_points(&self, endpoint: &EndpointId, since: Millis, until: Millis) -> Result<Vec<ShadowPoint>> {
        let point = |r: &sqlx::any::AnyRow| -> Result<ShadowPoint> {
            Ok(ShadowPoint {
                endpoint_id: endpoint.clone(),
                policy: r.try_get("policy")?,
                at: Millis(r.try_get::<i64, _>("at")? as u64),
                count: r.try_get::<i64, _>("n")? as u32,
            })
        };
        let before = sqlx::query(
            "SELECT s.policy, s.at, s.n FROM shadow_points s
             WHERE s.endpoint_id = $1 AND s.id = (SELECT MAX(id) FROM shadow_points t
                 WHERE t.endpoint_id = $1 AND t.policy = s.policy AND t.at < $2)",
        )
        .bind(endpoint.as_str())
        .bind(since.0 as i64)
        .fetch_all(&self.reader)
        .await?;
        let within = sqlx::query(
            "SELECT policy, at, n FROM shadow_points WHERE endpoint_id = $1 AND at >= $2 AND at < $3 ORDER BY id",
        )
        .bind(endpoint.as_str())
        .bind(since.0 as i64)
        .bind(until.0 as i64)
        .fetch_all(&self.reader)
        .await?;
        before.iter().chain(within.iter()).map(point).collect()
    }

    /// Drops an endpoint's records (and shadow points) older than `before`, then its oldest
    /// chunks until what is left takes at most `max_bytes`. Returns the chunks dropped.
    pub async fn prune_recorded(&self, endpoint: &EndpointId, before: Millis, max_bytes: u64) -> Result<u64> {
        let mut dropped = sqlx::query("DELETE FROM recorded WHERE endpoint_id = $1 AND last_at < $2")
            .bind(endpoint.as_str())
            .bind(before.0 as i64)
            .execute(&self.writer)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM shadow_points WHERE endpoint_id = $1 AND at < $2")
            .bind(endpoint.as_str())
            .bind(before.0 as i64)
            .execute(&self.writer)
            .await?;
        let sizes = sqlx::query("SELECT id, bytes FROM recorded WHERE endpoint_id = $1 ORDER BY id DESC")
            .bind(endpoint.as_str())
            .fetch_all(&self.reader)
            .await?;
        let mut total = 0u64;
        for r in &sizes {
            total += r.try_get::<i64, _>("bytes")? as u64;
            if total > max_bytes {
                let id: i64 = r.try_get("id")?;
                dropped += sqlx::query("DELETE FROM recorded WHERE endpoint_id = $1 AND id <= $2")
                    .bind(endpoint.as_str())
                    .bind(id)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                break;
            }
        }
        Ok(dropped)
    }

    /// Drops the records of endpoints that no longer exist.
    pub async fn prune_recorded_orphans(&self) -> Result<u64> {
        let r = sqlx::query("DELETE FROM recorded WHERE endpoint_id NOT IN (SELECT id FROM endpoints)")
            .execute(&self.writer)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM shadow_points WHERE endpoint_id NOT IN (SELECT id FROM endpoints)")
            .execute(&self.writer)
            .await?;
        Ok(r)
    }
}
