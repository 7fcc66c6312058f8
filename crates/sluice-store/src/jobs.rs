//! Async jobs (R6): the durable queue, claims, results, retries and streams.

use sluice_core::{EndpointId, Millis};
use sqlx::{Row, any::AnyRow};

use crate::{Backend, Result, Store, corrupt, ms};

/// An async job (R6).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub endpoint_id: EndpointId,
    pub account: String,
    pub state: sluice_core::jobs::JobState,
    /// JSON text.
    pub input: String,
    /// JSON text.
    pub output: Option<String>,
    pub error: Option<String>,
    pub policy: sluice_core::jobs::JobPolicy,
    /// Submitted through `/runsync` (shorter result retention).
    pub sync: bool,
    pub webhook: Option<String>,
    pub idempotency_key: Option<String>,
    pub worker_id: Option<String>,
    pub retries: u32,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

/// Jobs of an endpoint by state (the `/health` figures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub in_queue: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub retried: u64,
}

const JOB_COLUMNS: &str = "id, endpoint_id, account, state, input, output, error, execution_timeout_ms, ttl_ms, \
    low_priority, sync, webhook, idempotency_key, worker_id, retries, created_at, started_at, finished_at";

fn job_from_row(r: &AnyRow) -> Result<JobRecord> {
    let state: String = r.try_get("state")?;
    let ep: String = r.try_get("endpoint_id")?;
    Ok(JobRecord {
        id: r.try_get("id")?,
        endpoint_id: EndpointId::parse(&ep).map_err(|e| corrupt("jobs", e))?,
        account: r.try_get("account")?,
        state: sluice_core::jobs::JobState::parse(&state).ok_or_else(|| corrupt("jobs", format!("state {state}")))?,
        input: r.try_get("input")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        policy: sluice_core::jobs::JobPolicy {
            execution_timeout_ms: r.try_get::<i64, _>("execution_timeout_ms")? as u64,
            ttl_ms: r.try_get::<i64, _>("ttl_ms")? as u64,
            low_priority: r.try_get::<i64, _>("low_priority")? != 0,
        },
        sync: r.try_get::<i64, _>("sync")? != 0,
        webhook: r.try_get("webhook")?,
        idempotency_key: r.try_get("idempotency_key")?,
        worker_id: r.try_get("worker_id")?,
        retries: r.try_get::<i64, _>("retries")? as u32,
        created_at: Millis(r.try_get::<i64, _>("created_at")? as u64),
        started_at: ms(r.try_get("started_at")?),
        finished_at: ms(r.try_get("finished_at")?),
    })
}

impl Store {
    /// Accepts a job durably. With an idempotency key already used on this endpoint, returns the
    /// existing job instead (and `false`: nothing new was created).
    pub async fn create_job(&self, j: &JobRecord) -> Result<(JobRecord, bool)> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        )))
        .bind(&j.id)
        .bind(j.endpoint_id.as_str())
        .bind(&j.account)
        .bind(j.state.as_str())
        .bind(&j.input)
        .bind(&j.output)
        .bind(&j.error)
        .bind(j.policy.execution_timeout_ms as i64)
        .bind(j.policy.ttl_ms as i64)
        .bind(i64::from(j.policy.low_priority))
        .bind(i64::from(j.sync))
        .bind(&j.webhook)
        .bind(&j.idempotency_key)
        .bind(&j.worker_id)
        .bind(i64::from(j.retries))
        .bind(j.created_at.0 as i64)
        .bind(j.started_at.map(|t| t.0 as i64))
        .bind(j.finished_at.map(|t| t.0 as i64))
        .execute(&self.writer)
        .await;
        match r {
            Ok(_) => Ok((j.clone(), true)),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() && j.idempotency_key.is_some() => {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE endpoint_id = $1 AND idempotency_key = $2"
                )))
                .bind(j.endpoint_id.as_str())
                .bind(&j.idempotency_key)
                .fetch_one(&self.writer)
                .await?;
                Ok((job_from_row(&row)?, false))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_job(&self, endpoint: &EndpointId, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE endpoint_id = $1 AND id = $2"
        )))
        .bind(endpoint.as_str())
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Hands the oldest queued job of an endpoint to a worker, atomically (no job is taken twice).
    pub async fn claim_job(&self, endpoint: &EndpointId, worker: &str, now: Millis) -> Result<Option<JobRecord>> {
        // SQLite has one writer, so the inner SELECT and the UPDATE cannot interleave with another
        // claim. PostgreSQL runs claims side by side (several connections, several processes): each
        // skips the rows another is taking instead of taking the same one or waiting for it.
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET state = 'IN_PROGRESS', worker_id = $1, started_at = $2
             WHERE id = (SELECT id FROM jobs WHERE endpoint_id = $3 AND state = 'IN_QUEUE'
                         ORDER BY created_at, id LIMIT 1 {lock})
               AND state = 'IN_QUEUE'
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(worker)
        .bind(now.0 as i64)
        .bind(endpoint.as_str())
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Ends a job that is in progress (a result, a failure, a timeout). Returns whether it was
    /// still in progress: a late result for a cancelled or timed-out job changes nothing.
    pub async fn finish_job(
        &self,
        id: &str,
        state: sluice_core::jobs::JobState,
        output: Option<&str>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        Ok(self.finish_job_of(id, None, state, output, error, now).await?.is_some())
    }

    /// [`Store::finish_job`], and only if `worker` (when given) is the one running it: a result
    /// from a worker the job was taken away from changes nothing. `Some(webhook)` when it ended.
    pub async fn finish_job_of(
        &self,
        id: &str,
        worker: Option<&str>,
        state: sluice_core::jobs::JobState,
        output: Option<&str>,
        error: Option<&str>,
        now: Millis,
    ) -> Result<Option<Option<String>>> {
        let row = sqlx::query(
            "UPDATE jobs SET state = $1, output = COALESCE($2, output), error = $3, finished_at = $4
             WHERE id = $5 AND state = 'IN_PROGRESS' AND ($6 IS NULL OR worker_id = $6) RETURNING webhook",
        )
        .bind(state.as_str())
        .bind(output)
        .bind(error)
        .bind(now.0 as i64)
        .bind(id)
        .bind(worker)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| Ok(r.try_get("webhook")?)).transpose()
    }

    /// Progress of a job running on `worker` (`progress_update`): its output so far, not an end.
    pub async fn set_job_progress(&self, id: &str, worker: &str, output: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE jobs SET output = $1 WHERE id = $2 AND state = 'IN_PROGRESS' AND worker_id = $3")
            .bind(output)
            .bind(id)
            .bind(worker)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Whether `worker` is running job `id` (a stream chunk is accepted only then).
    pub async fn job_runs_on(&self, id: &str, worker: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM jobs WHERE id = $1 AND state = 'IN_PROGRESS' AND worker_id = $2")
            .bind(id)
            .bind(worker)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }

    /// The jobs running on `worker`: id, and when it was handed the job.
    pub async fn running_on(&self, worker: &str) -> Result<Vec<(String, Millis)>> {
        let rows = sqlx::query("SELECT id, started_at FROM jobs WHERE worker_id = $1 AND state = 'IN_PROGRESS'")
            .bind(worker)
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, Millis(r.try_get::<Option<i64>, _>("started_at")?.unwrap_or(0) as u64))))
            .collect()
    }

    /// The jobs of `endpoint` in progress: id, the worker running it, and when it was claimed.
    pub async fn running_jobs(&self, endpoint: &EndpointId) -> Result<Vec<(String, String, Millis)>> {
        let rows =
            sqlx::query("SELECT id, worker_id, started_at FROM jobs WHERE endpoint_id = $1 AND state = 'IN_PROGRESS'")
                .bind(endpoint.as_str())
                .fetch_all(&self.writer)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get::<Option<String>, _>("worker_id")?.unwrap_or_default(),
                    ms(r.try_get("started_at")?).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Cancels a queued or running job; returns the job as it is afterwards.
    pub async fn cancel_job(&self, endpoint: &EndpointId, id: &str, now: Millis) -> Result<Option<JobRecord>> {
        sqlx::query(
            "UPDATE jobs SET state = 'CANCELLED', finished_at = $1
             WHERE endpoint_id = $2 AND id = $3 AND state IN ('IN_QUEUE', 'IN_PROGRESS')",
        )
        .bind(now.0 as i64)
        .bind(endpoint.as_str())
        .bind(id)
        .execute(&self.writer)
        .await?;
        self.get_job(endpoint, id).await
    }

    /// Puts one running job back in the queue (its worker went away before answering, or lost
    /// it), counting a retry; past `max_retries` it fails instead. Only while it runs on `worker`:
    /// a job since finished or handed elsewhere is left alone (`None`). Returns the state it ends
    /// in.
    pub async fn requeue_job(
        &self,
        id: &str,
        worker: &str,
        max_retries: u32,
        reason: &str,
        now: Millis,
    ) -> Result<Option<sluice_core::jobs::JobState>> {
        let row = sqlx::query(
            "UPDATE jobs SET
                state = CASE WHEN retries < $1 THEN 'IN_QUEUE' ELSE 'FAILED' END,
                error = CASE WHEN retries < $1 THEN NULL ELSE $2 END,
                finished_at = CASE WHEN retries < $1 THEN NULL ELSE $3 END,
                worker_id = CASE WHEN retries < $1 THEN NULL ELSE worker_id END,
                started_at = CASE WHEN retries < $1 THEN NULL ELSE started_at END,
                retries = CASE WHEN retries < $1 THEN retries + 1 ELSE retries END
             WHERE id = $4 AND state = 'IN_PROGRESS' AND worker_id = $5 RETURNING state",
        )
        .bind(i64::from(max_retries))
        .bind(reason)
        .bind(now.0 as i64)
        .bind(id)
        .bind(worker)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| {
            let s: String = r.try_get("state")?;
            sluice_core::jobs::JobState::parse(&s).ok_or_else(|| corrupt("jobs", s))
        })
        .transpose()
    }

    /// `retry`: a FAILED or TIMED_OUT job goes back to the queue with the same id, its previous
    /// output removed. Returns whether it was requeued, and the job as it was found (`None`: no
    /// such job). The job may be taken again at once, so its state afterwards says nothing.
    pub async fn retry_job(&self, endpoint: &EndpointId, id: &str) -> Result<Option<(bool, JobRecord)>> {
        let before = self.get_job(endpoint, id).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'IN_QUEUE', output = NULL, error = NULL, worker_id = NULL, started_at = NULL,
                finished_at = NULL, retries = retries + 1
             WHERE endpoint_id = $1 AND id = $2 AND state IN ('FAILED', 'TIMED_OUT')",
        )
        .bind(endpoint.as_str())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(before.map(|j| (r.rows_affected() > 0, j)))
    }

    /// Jobs whose clocks may have run out at `now` (TTL, result retention, execution timeout);
    /// the caller decides with `sluice_core::jobs::due`.
    pub async fn jobs_maybe_due(&self, now: Millis, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE created_at + ttl_ms <= $1
                OR (finished_at IS NOT NULL AND finished_at + 60000 <= $1)
                OR (state = 'IN_PROGRESS' AND started_at + execution_timeout_ms <= $1)
             LIMIT $2"
        )))
        .bind(now.0 as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Puts the jobs a dead or stopped worker held back in the queue (at-least-once), counting
    /// a retry; those past `max_retries` fail with `reason` instead. Returns how many went back.
    pub async fn requeue_worker_jobs(&self, worker: &str, max_retries: u32, reason: &str, now: Millis) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'FAILED', error = $1, finished_at = $2
             WHERE worker_id = $3 AND state = 'IN_PROGRESS' AND retries >= $4",
        )
        .bind(reason)
        .bind(now.0 as i64)
        .bind(worker)
        .bind(i64::from(max_retries))
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'IN_QUEUE', worker_id = NULL, started_at = NULL, retries = retries + 1
             WHERE worker_id = $1 AND state = 'IN_PROGRESS'",
        )
        .bind(worker)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    /// Removes an endpoint's queued jobs (`purge-queue`); running ones are left alone.
    pub async fn purge_queue(&self, endpoint: &EndpointId) -> Result<u64> {
        let r = sqlx::query("DELETE FROM jobs WHERE endpoint_id = $1 AND state = 'IN_QUEUE'")
            .bind(endpoint.as_str())
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected())
    }

    /// Deletes a job and its stream (TTL, result retention).
    pub async fn delete_job(&self, id: &str) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM job_stream WHERE job_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn job_counts(&self, endpoint: &EndpointId) -> Result<JobCounts> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, CAST(SUM(CASE WHEN retries > 0 THEN 1 ELSE 0 END) AS BIGINT) AS r
             FROM jobs WHERE endpoint_id = $1 GROUP BY state",
        )
        .bind(endpoint.as_str())
        .fetch_all(&self.reader)
        .await?;
        let mut c = JobCounts::default();
        for r in rows {
            let state: String = r.try_get("state")?;
            let n = r.try_get::<i64, _>("n")? as u64;
            c.retried += r.try_get::<i64, _>("r")? as u64;
            match state.as_str() {
                "IN_QUEUE" => c.in_queue = n,
                "IN_PROGRESS" => c.in_progress = n,
                "COMPLETED" => c.completed = n,
                "FAILED" => c.failed = n,
                "CANCELLED" => c.cancelled = n,
                "TIMED_OUT" => c.timed_out = n,
                other => return Err(corrupt("jobs", format!("state {other}"))),
            }
        }
        Ok(c)
    }

    /// Jobs in progress per worker of an endpoint (a draining worker stops only once its jobs end).
    pub async fn jobs_in_progress_by_worker(&self, endpoint: &EndpointId) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT worker_id, COUNT(*) AS n FROM jobs WHERE endpoint_id = $1 AND state = 'IN_PROGRESS'
             AND worker_id IS NOT NULL GROUP BY worker_id",
        )
        .bind(endpoint.as_str())
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("worker_id")?, r.try_get::<i64, _>("n")? as u64))).collect()
    }

    /// Appends a chunk of partial output to a running job's stream.
    pub async fn add_stream_chunk(&self, id: &str, chunk: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_stream (job_id, seq, chunk)
             VALUES ($1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM job_stream WHERE job_id = $1), $2)",
        )
        .bind(id)
        .bind(chunk)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The chunks not handed out yet, and advances the cursor past them (each chunk is
    /// delivered once, RunPod's `/stream` semantics).
    pub async fn take_stream_chunks(&self, id: &str) -> Result<Vec<String>> {
        let mut tx = self.writer.begin().await?;
        let row =
            sqlx::query("SELECT stream_delivered FROM jobs WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(Vec::new()) };
        let from: i64 = row.try_get("stream_delivered")?;
        let rows = sqlx::query("SELECT chunk FROM job_stream WHERE job_id = $1 AND seq >= $2 ORDER BY seq")
            .bind(id)
            .bind(from)
            .fetch_all(&mut *tx)
            .await?;
        let chunks: Vec<String> = rows.iter().map(|r| r.try_get("chunk")).collect::<std::result::Result<_, _>>()?;
        sqlx::query("UPDATE jobs SET stream_delivered = $1 WHERE id = $2")
            .bind(from + chunks.len() as i64)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(chunks)
    }
}
