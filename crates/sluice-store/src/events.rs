//! Scaling decisions with their reasons and inputs (R4.7).

use sluice_core::{EndpointId, Millis};
use sqlx::Row;

use crate::{Result, Store};

/// A recorded scaling decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingEvent {
    pub id: i64,
    pub endpoint_id: EndpointId,
    pub at: Millis,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// JSON text of the decision's inputs.
    pub inputs: String,
    /// `decision`, or `retune` (the SLO policy's).
    pub kind: String,
    /// JSON text of what the decision started from (its policy and the scaler's state), for
    /// `sluice audit`; "" when not kept.
    pub replay: String,
}

/// The kinds of [`ScalingEvent`].
pub const EVENT_DECISION: &str = "decision";
pub const EVENT_RETUNE: &str = "retune";

fn event(endpoint: &EndpointId, r: &sqlx::any::AnyRow) -> Result<ScalingEvent> {
    Ok(ScalingEvent {
        id: r.try_get("id")?,
        endpoint_id: endpoint.clone(),
        at: Millis(r.try_get::<i64, _>("at")? as u64),
        from: r.try_get::<i64, _>("from_count")? as u32,
        to: r.try_get::<i64, _>("to_count")? as u32,
        reason: r.try_get("reason")?,
        inputs: r.try_get("inputs")?,
        kind: r.try_get("kind")?,
        replay: r.try_get("replay")?,
    })
}

impl Store {
    pub async fn add_scaling_event(&self, e: &ScalingEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO scaling_events (endpoint_id, at, from_count, to_count, reason, inputs, kind, replay) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.endpoint_id.as_str())
        .bind(e.at.0 as i64)
        .bind(i64::from(e.from))
        .bind(i64::from(e.to))
        .bind(&e.reason)
        .bind(&e.inputs)
        .bind(&e.kind)
        .bind(&e.replay)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Events of an endpoint, newest first, with ids below `before` when given.
    pub async fn list_scaling_events(
        &self,
        endpoint: &EndpointId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ScalingEvent>> {
        let rows =
            sqlx::query("SELECT * FROM scaling_events WHERE endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
                .bind(endpoint.as_str())
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(|r| event(endpoint, r)).collect()
    }

    /// Events of an endpoint from `since` to before `until`, oldest first; without their
    /// replays (large) unless `with_replay`.
    pub async fn scaling_events_between(
        &self,
        endpoint: &EndpointId,
        since: Millis,
        until: Millis,
        with_replay: bool,
    ) -> Result<Vec<ScalingEvent>> {
        let sql = if with_replay {
            "SELECT * FROM scaling_events WHERE endpoint_id = $1 AND at >= $2 AND at < $3 ORDER BY id"
        } else {
            "SELECT id, endpoint_id, at, from_count, to_count, reason, inputs, kind, '' AS replay
             FROM scaling_events WHERE endpoint_id = $1 AND at >= $2 AND at < $3 ORDER BY id"
        };
        let rows = sqlx::query(sql)
            .bind(endpoint.as_str())
            .bind(since.0 as i64)
            .bind(until.0 as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| event(endpoint, r)).collect()
    }

    /// The endpoint's last decision (not a re-tune) before `before`, without its replay.
    pub async fn last_decision_before(&self, endpoint: &EndpointId, before: Millis) -> Result<Option<ScalingEvent>> {
        let row = sqlx::query(
            "SELECT id, endpoint_id, at, from_count, to_count, reason, inputs, kind, '' AS replay
             FROM scaling_events WHERE endpoint_id = $1 AND kind = 'decision' AND at < $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(endpoint.as_str())
        .bind(before.0 as i64)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| event(endpoint, &r)).transpose()
    }

    /// Removes events of deleted endpoints and keeps at most `keep` per endpoint.
    pub async fn prune_scaling_events(&self, keep: u32) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM scaling_events WHERE endpoint_id NOT IN (SELECT id FROM endpoints)
             OR id <= (SELECT id FROM scaling_events e2 WHERE e2.endpoint_id = scaling_events.endpoint_id
                       ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(i64::from(keep))
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected())
    }
}
