//! Log lines (worker output and platform events, per endpoint), and the usage totals the
//! metrics show.
use sluice_core::{EndpointId, Millis};
use sqlx::Row;

use crate::{Result, Store};

/// A line to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    pub endpoint_id: EndpointId,
    pub worker_id: Option<String>,
    pub stream: &'static str,
    pub ts: Millis,
    pub line: String,
}

/// A stored line; `id` orders lines and is what a follower resumes after.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub id: i64,
    pub endpoint_id: EndpointId,
    pub worker_id: Option<String>,
    pub stream: String,
    pub ts: Millis,
    pub line: String,
}

/// What to read. `like` is a `LIKE` pattern with `\` as escape (`sluice_core::logs::like_pattern`).
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub worker: Option<String>,
    pub stream: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub like: Option<String>,
    /// Only lines after this id (a follower's resume point).
    pub after_id: Option<i64>,
    /// The newest `limit` lines that match, returned oldest first; with `after_id`, the oldest.
    pub limit: u32,
}

impl Store {
    /// Stores lines in one transaction, many rows per statement; returns them with their ids,
    /// in order.
    pub async fn add_log_lines(&self, lines: Vec<NewLogLine>) -> Result<Vec<LogLine>> {
        const ROWS: usize = 100; // 5 parameters each, far below SQLite's limit
        let mut tx = self.writer.begin().await?;
        let mut out = Vec::with_capacity(lines.len());
        let mut lines = lines.into_iter().peekable();
        while lines.peek().is_some() {
            let chunk: Vec<NewLogLine> = lines.by_ref().take(ROWS).collect();
            let mut sql = String::from("INSERT INTO log_lines (endpoint_id, worker_id, stream, ts, line) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 5;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5));
            }
            sql.push_str(" RETURNING id");
            let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
            for l in &chunk {
                q = q
                    .bind(l.endpoint_id.as_str())
                    .bind(l.worker_id.as_deref())
                    .bind(l.stream)
                    .bind(l.ts.0 as i64)
                    .bind(l.line.as_str());
            }
            // Rows of one statement get increasing ids in VALUES order; RETURNING's order is
            // not promised, so sort.
            let mut ids = q.fetch_all(&mut *tx).await?;
            ids.sort_unstable();
            for (l, id) in chunk.into_iter().zip(ids) {
                out.push(LogLine {
                    id,
                    endpoint_id: l.endpoint_id,
                    worker_id: l.worker_id,
                    stream: l.stream.to_owned(),
                    ts: l.ts,
                    line: l.line,
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    pub async fn query_logs(&self, endpoint: &EndpointId, q: &LogQuery) -> Result<Vec<LogLine>> {
        let forward = q.after_id.is_some();
        // `q` ignores case on both back ends (SQLite's LIKE already does, for ASCII).
        let like = match self.backend {
            crate::Backend::Sqlite => "LIKE",
            crate::Backend::Postgres => "ILIKE",
        };
        let sql = format!(
            "SELECT id, endpoint_id, worker_id, stream, ts, line FROM log_lines
             WHERE endpoint_id = $1 AND ($2 IS NULL OR worker_id = $2) AND ($3 IS NULL OR stream = $3)
               AND ($4 IS NULL OR ts >= $4) AND ($5 IS NULL OR ts <= $5)
               AND ($6 IS NULL OR line {like} $6 ESCAPE '\\') AND ($7 IS NULL OR id > $7)
             ORDER BY id {} LIMIT $8",
            if forward { "ASC" } else { "DESC" }
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(endpoint.as_str())
            .bind(q.worker.as_deref())
            .bind(q.stream.as_deref())
            .bind(q.since.map(|t| t.0 as i64))
            .bind(q.until.map(|t| t.0 as i64))
            .bind(q.like.as_deref())
            .bind(q.after_id)
            .bind(i64::from(q.limit))
            .fetch_all(&self.reader)
            .await?;
        let mut lines = rows
            .iter()
            .map(|r| {
                Ok(LogLine {
                    id: r.try_get("id")?,
                    endpoint_id: EndpointId::parse(&r.try_get::<String, _>("endpoint_id")?)
                        .map_err(|e| crate::corrupt("log_lines", e.to_string()))?,
                    worker_id: r.try_get("worker_id")?,
                    stream: r.try_get("stream")?,
                    ts: Millis(r.try_get::<i64, _>("ts")? as u64),
                    line: r.try_get("line")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !forward {
            lines.reverse();
        }
        Ok(lines)
    }

    /// Retention: drops lines older than `before`, then, per endpoint, the oldest lines beyond
    /// `max_bytes` of text. Returns how many went.
    pub async fn prune_logs(&self, before: Millis, max_bytes: u64) -> Result<u64> {
        let mut n = sqlx::query("DELETE FROM log_lines WHERE ts < $1")
            .bind(before.0 as i64)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let over: Vec<(String, i64)> = sqlx::query_as(
            "SELECT endpoint_id, MAX(id) FROM (
                 SELECT endpoint_id, id,
                        CAST(SUM(length(line)) OVER (PARTITION BY endpoint_id ORDER BY id DESC) AS BIGINT) AS newer_bytes
                 FROM log_lines) AS running
             WHERE newer_bytes > $1 GROUP BY endpoint_id",
        )
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        for (ep, cut) in over {
            n += sqlx::query("DELETE FROM log_lines WHERE endpoint_id = $1 AND id <= $2")
                .bind(ep)
                .bind(cut)
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}

impl Store {
    /// GPU-seconds and cost (nanodollars) metered so far, per endpoint (for `/metrics`).
    pub async fn usage_totals(&self) -> Result<Vec<(String, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT endpoint_id, CAST(COALESCE(SUM(seconds * gpus), 0) AS BIGINT), CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT)
             FROM usage_ledger GROUP BY endpoint_id",
        )
        .fetch_all(&self.reader)
        .await?)
    }
}
