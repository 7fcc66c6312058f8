//! The usage ledger (R5.3): metered intervals, billed seconds, and usage by day.

use std::collections::HashMap;

use sluice_core::{EndpointId, Millis, WorkerId, keys::Scope};
use sqlx::Row;

use crate::{Backend, Result, Store, corrupt};

/// One metered interval of one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEntry {
    pub account: String,
    pub endpoint_id: EndpointId,
    pub worker_id: WorkerId,
    pub class: sluice_core::billing::Class,
    pub gpu_type: String,
    pub gpus: u32,
    pub seconds: u64,
    pub cost_nanos: i64,
    pub at: Millis,
}

/// Usage summed by endpoint and UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub account: String,
    pub endpoint_id: String,
    pub day: String,
    pub gpu_seconds: u64,
    pub cost_nanos: i64,
}

impl Store {
    /// Appends entries in one transaction: all or none.
    pub async fn add_usage(&self, entries: &[UsageEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO usage_ledger (account, endpoint_id, worker_id, class, gpu_type, gpus, seconds, cost_nanos, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&e.account)
            .bind(e.endpoint_id.as_str())
            .bind(e.worker_id.as_str())
            .bind(e.class.as_str())
            .bind(&e.gpu_type)
            .bind(i64::from(e.gpus))
            .bind(e.seconds as i64)
            .bind(e.cost_nanos)
            .bind(e.at.0 as i64)
            .execute(&mut *tx)
            .await?;
            // Charged in the same transaction: the balance and the ledger never disagree.
            sqlx::query(
                "UPDATE accounts SET balance_nanos = balance_nanos - $1 WHERE name = $2 AND balance_nanos IS NOT NULL",
            )
            .bind(e.cost_nanos)
            .bind(&e.account)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Seconds already billed, and the class, of each worker that has ledger entries among `workers`.
    /// A worker's ledger by class: (class, worker-seconds, cost in nanodollars).
    pub async fn usage_by_class(&self, worker: &WorkerId) -> Result<Vec<(sluice_core::billing::Class, u64, i64)>> {
        let rows = sqlx::query(
            "SELECT class, CAST(SUM(seconds) AS BIGINT) AS s, CAST(SUM(cost_nanos) AS BIGINT) AS n
             FROM usage_ledger WHERE worker_id = $1 GROUP BY class ORDER BY class",
        )
        .bind(worker.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let c: String = r.try_get("class")?;
                let class = sluice_core::billing::Class::parse(&c).ok_or_else(|| corrupt("usage_ledger", c))?;
                Ok((class, r.try_get::<i64, _>("s")?.max(0) as u64, r.try_get::<i64, _>("n")?))
            })
            .collect()
    }

    pub async fn billed(&self, workers: &[WorkerId]) -> Result<HashMap<WorkerId, (u64, sluice_core::billing::Class)>> {
        let mut out = HashMap::new();
        for w in workers {
            let row = sqlx::query(
                "SELECT CAST(SUM(seconds) AS BIGINT) AS s, MAX(CASE WHEN class <> 'sleeping' THEN class END) AS c
                 FROM usage_ledger WHERE worker_id = $1 GROUP BY worker_id",
            )
            .bind(w.as_str())
            .fetch_optional(&self.reader)
            .await?;
            if let Some(r) = row {
                // The worker's class while awake (its sleeping seconds are their own class).
                let c: Option<String> = r.try_get("c")?;
                let class = match c {
                    Some(c) => sluice_core::billing::Class::parse(&c).ok_or_else(|| corrupt("usage_ledger", c))?,
                    None => sluice_core::billing::Class::Autoscaled,
                };
                out.insert(w.clone(), (r.try_get::<i64, _>("s")? as u64, class));
            }
        }
        Ok(out)
    }

    /// GPU-seconds and cost by account, endpoint and UTC day, for entries with `from <= at < to`,
    /// of the accounts `scope` sees.
    pub async fn usage(
        &self,
        scope: &Scope,
        endpoint: Option<&str>,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<UsageRow>> {
        let day = match self.backend {
            Backend::Sqlite => "date(at / 1000, 'unixepoch')",
            Backend::Postgres => "to_char(to_timestamp(at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT account, endpoint_id, {day} AS day,
                    CAST(SUM(seconds * gpus) AS BIGINT) AS gpu_seconds, CAST(SUM(cost_nanos) AS BIGINT) AS cost
             FROM usage_ledger
             WHERE at >= $1 AND at < $2 AND ($3 IS NULL OR account = $3) AND ($4 IS NULL OR endpoint_id = $4)
             GROUP BY account, endpoint_id, day ORDER BY day, account, endpoint_id"
        )))
        .bind(from.0 as i64)
        .bind(to.0.min(i64::MAX as u64) as i64)
        .bind(scope.account())
        .bind(endpoint)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    account: r.try_get("account")?,
                    endpoint_id: r.try_get("endpoint_id")?,
                    day: r.try_get("day")?,
                    gpu_seconds: r.try_get::<i64, _>("gpu_seconds")? as u64,
                    cost_nanos: r.try_get("cost")?,
                })
            })
            .collect()
    }
}
