//! Persistent state in SQLite or PostgreSQL (one code path, through sqlx's `Any` driver): endpoints (intent),
//! workers (the reconciler's records), API keys and instance identity.
//!
//! **This crate knows SQL and nothing of HTTP or processes.** All writes go through a
//! one-connection writer pool, reads through a separate pool, so SQLite never answers `BUSY` to
//! a transaction that upgrades to a writer.
#![forbid(unsafe_code)]

mod error;
mod logs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::{collections::HashMap, path::Path, time::Duration};

pub use error::Error;
pub use logs::{LogLine, LogQuery, NewLogLine};
use sluice_core::{EndpointId, EndpointSpec, EndpointStatus, Millis, WorkerId, WorkerState, keys::Scope};
use sqlx::{
    AnyPool, ConnectOptions, Row,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    sqlite::SqliteConnectOptions,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An endpoint as stored: the validated spec plus ownership and lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    pub id: EndpointId,
    pub account: String,
    pub spec: EndpointSpec,
    pub status: EndpointStatus,
    /// Bumped when what workers run changes; workers of an older generation are replaced.
    pub generation: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

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
}

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
}

/// A stored API key (only its digest).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub prefix: String,
    pub account: String,
    pub role: String,
}

/// A key as listed: never the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    /// The first 16 hex digits of the key's digest: how a key is named for revocation.
    pub id: String,
    pub prefix: String,
    pub account: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

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

/// Who holds a lease, where it is reached, and for how much longer (by the database's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub holder: String,
    pub address: String,
    pub left_ms: u64,
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

#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub name: String,
    pub max_workers_quota: u32,
    pub created_at: Millis,
    /// Credit in nanodollars; `None`: unlimited (the admin account).
    pub balance_nanos: Option<i64>,
    pub low_credit_warned: bool,
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountEvent {
    pub id: i64,
    pub account: String,
    pub at: Millis,
    pub kind: String,
    pub message: String,
}

/// Which database a [`Store`] talks to. The code is the same; a few statements differ where the
/// dialects do (see [`Store::claim_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    backend: Backend,
}

fn ms(v: Option<i64>) -> Option<Millis> {
    v.map(|x| Millis(x.max(0) as u64))
}

fn corrupt(table: &'static str, message: impl ToString) -> Error {
    Error::Corrupt { table, message: message.to_string() }
}

fn endpoint_from_row(r: &AnyRow) -> Result<EndpointRecord> {
    let id: String = r.try_get("id")?;
    let spec: String = r.try_get("spec")?;
    let status: String = r.try_get("status")?;
    Ok(EndpointRecord {
        id: EndpointId::parse(&id).map_err(|e| corrupt("endpoints", e))?,
        account: r.try_get("account")?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("endpoints", e))?,
        status: EndpointStatus::parse(&status).ok_or_else(|| corrupt("endpoints", format!("status {status}")))?,
        generation: r.try_get::<i64, _>("generation")? as u64,
        created_at: Millis(r.try_get::<i64, _>("created_at")? as u64),
        updated_at: Millis(r.try_get::<i64, _>("updated_at")? as u64),
    })
}

fn worker_from_row(r: &AnyRow) -> Result<WorkerRecord> {
    let id: String = r.try_get("id")?;
    let ep: String = r.try_get("endpoint_id")?;
    let state: String = r.try_get("state")?;
    let gpus: String = r.try_get("gpus")?;
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
    })
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

fn account_from_row(r: &AnyRow) -> Result<AccountRecord> {
    Ok(AccountRecord {
        name: r.try_get("name")?,
        max_workers_quota: r.try_get::<i64, _>("max_workers_quota")? as u32,
        created_at: Millis(r.try_get::<i64, _>("created_at")? as u64),
        balance_nanos: r.try_get("balance_nanos")?,
        low_credit_warned: r.try_get::<i64, _>("low_credit_warned")? != 0,
        webhook_url: r.try_get("webhook_url")?,
    })
}

/// A unique-index violation on endpoints is a name already used by the account.
fn name_conflict(e: sqlx::Error, name: &str) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Conflict(format!("an endpoint named {name:?} already exists"))
        }
        _ => e.into(),
    }
}

/// The migrations, embedded in the binary: `migrations/sqlite/NNNN_name.sql` and, step for step,
/// their PostgreSQL twins in `migrations/postgres/` (same versions, same names, same schema).
fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    use sqlx::{
        SqlSafeStr,
        migrate::{Migration, MigrationType},
    };
    macro_rules! steps {
        ($($v:literal $name:literal $file:literal),* $(,)?) => {
            (
                &[$(($v, $name, include_str!(concat!("../migrations/sqlite/", $file)))),*],
                &[$(($v, $name, include_str!(concat!("../migrations/postgres/", $file)))),*],
            )
        };
    }
    type Steps = &'static [(i64, &'static str, &'static str)];
    const STEPS: (Steps, Steps) = steps![
        1 "init" "0001_init.sql",
        2 "scaling_events" "0002_scaling_events.sql",
        3 "accounts" "0003_accounts.sql",
        4 "usage" "0004_usage.sql",
        5 "credit" "0005_credit.sql",
        6 "demo_public" "0006_demo_public.sql",
        7 "jobs" "0007_jobs.sql",
        8 "logs" "0008_logs.sql",
        9 "leases" "0009_leases.sql",
    ];
    let steps = match backend {
        Backend::Sqlite => STEPS.0,
        Backend::Postgres => STEPS.1,
    };
    sqlx::migrate::Migrator::with_migrations(
        steps
            .iter()
            .map(|(v, d, sql)| Migration::new(*v, (*d).into(), MigrationType::Simple, sql.into_sql_str(), false))
            .collect(),
    )
}

/// Connection settings every SQLite connection gets (the `Any` driver opens from a URL, which
/// cannot carry pragmas).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                              PRAGMA busy_timeout = 5000;";

impl Store {
    /// Opens the store named by `database`: a `postgres://` (or `postgresql://`) URL, or else the
    /// path of an SQLite file (created if needed). Applies migrations either way.
    pub async fn open(database: &str) -> Result<Store> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Store::open_postgres(database).await
        } else {
            Store::open_sqlite(Path::new(database.strip_prefix("sqlite://").unwrap_or(database))).await
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = |read_only: bool| {
            let o = SqliteConnectOptions::new().filename(path).create_if_missing(!read_only).read_only(read_only);
            AnyConnectOptions::from_url(&o.to_url_lossy())
        };
        let pool = |max: u32| {
            AnyPoolOptions::new().max_connections(max).after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(conn).await?;
                    Ok(())
                })
            })
        };
        // One writer, so SQLite never answers BUSY to a transaction that upgrades to a writer.
        let writer = pool(1).connect_with(url(false)?).await?;
        migrator(Backend::Sqlite).run(&writer).await?;
        let reader = pool(4).connect_with(url(true)?).await?;
        Ok(Store { writer, reader, backend: Backend::Sqlite })
    }

    /// Connects to PostgreSQL at `url` and applies migrations. Several processes may share one
    /// database; every statement that takes something (a job, a lease) is safe under concurrency.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let opts: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        migrator(Backend::Postgres).run(&pool).await?;
        Ok(Store { writer: pool.clone(), reader: pool, backend: Backend::Postgres })
    }

    /// The database's clock as Unix ms, as an SQL expression.
    fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Takes the lease `name` for `holder` for `ttl_ms` of the database's clock, or renews it:
    /// true when `holder` has it now. Another holder's lease is taken only once it has expired,
    /// and of two processes racing for an expired lease exactly one wins (the upsert locks the
    /// row; the loser's condition no longer holds).
    pub async fn acquire_lease(&self, name: &str, holder: &str, address: &str, ttl_ms: u64) -> Result<bool> {
        let now = self.db_now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO leases (name, holder, address, expires_at) VALUES ($1, $2, $3, {now} + $4)
             ON CONFLICT (name) DO UPDATE
                SET holder = excluded.holder, address = excluded.address, expires_at = excluded.expires_at
                WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
             RETURNING holder"
        )))
        .bind(name)
        .bind(holder)
        .bind(address)
        .bind(ttl_ms.min(i64::MAX as u64) as i64)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.is_some())
    }

    /// The live holder of lease `name` (none when it is free or expired).
    pub async fn lease_holder(&self, name: &str) -> Result<Option<Lease>> {
        let now = self.db_now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT holder, address, expires_at - {now} AS left_ms FROM leases WHERE name = $1 AND expires_at >= {now}"
        )))
        .bind(name)
        .fetch_optional(&self.writer)
        .await?;
        row.map(|r| {
            Ok(Lease {
                holder: r.try_get("holder")?,
                address: r.try_get("address")?,
                left_ms: r.try_get::<i64, _>("left_ms")?.max(0) as u64,
            })
        })
        .transpose()
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait for it to expire.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// This installation's identity, created on first use with `fresh` (random, from the caller).
    /// Worker processes carry it so that a restarted platform recognises exactly its own.
    pub async fn instance_id(&self, fresh: &str) -> Result<String> {
        self.meta_or_init("instance_id", fresh).await
    }

    /// A value kept for the life of the data directory: the stored one, or `fresh` the first time.
    pub async fn meta_or_init(&self, key: &str, fresh: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(fresh)
            .execute(&self.writer)
            .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_one(&self.writer).await?;
        Ok(row.try_get("value")?)
    }

    // ---- API keys ----

    pub async fn put_key(
        &self,
        digest: &str,
        prefix: &str,
        account: &str,
        role: &str,
        label: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (digest, prefix, account, role, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (digest) DO UPDATE SET revoked_at = NULL",
        )
        .bind(digest)
        .bind(prefix)
        .bind(account)
        .bind(role)
        .bind(label)
        .bind(now.0 as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Revokes every admin key except `keep` (the admin key file is the source of truth).
    pub async fn revoke_other_admin_keys(&self, keep: &str, now: Millis) -> Result<()> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE role = 'admin' AND digest <> $2 AND revoked_at IS NULL")
            .bind(now.0 as i64)
            .bind(keep)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn find_key(&self, digest: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query("SELECT prefix, account, role FROM api_keys WHERE digest = $1 AND revoked_at IS NULL")
            .bind(digest)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            Ok(KeyRecord { prefix: r.try_get("prefix")?, account: r.try_get("account")?, role: r.try_get("role")? })
        })
        .transpose()
    }

    /// Every key of `account` (revoked ones included), newest first.
    pub async fn list_keys(&self, account: &str) -> Result<Vec<KeyInfo>> {
        let rows = sqlx::query(
            "SELECT digest, prefix, account, role, label, created_at, revoked_at FROM api_keys
             WHERE account = $1 ORDER BY created_at DESC, digest",
        )
        .bind(account)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get("digest")?;
                Ok(KeyInfo {
                    id: digest[..16.min(digest.len())].to_owned(),
                    prefix: r.try_get("prefix")?,
                    account: r.try_get("account")?,
                    role: r.try_get("role")?,
                    label: r.try_get("label")?,
                    created_at: Millis(r.try_get::<i64, _>("created_at")? as u64),
                    revoked_at: ms(r.try_get("revoked_at")?),
                })
            })
            .collect()
    }

    /// Revokes the key of `account` whose id (the first 16 hex digits of its digest) is `id`.
    /// Returns whether a live key was revoked.
    pub async fn revoke_key(&self, account: &str, id: &str, now: Millis) -> Result<bool> {
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE account = $2 AND substr(digest, 1, 16) = $3 AND revoked_at IS NULL",
        )
        .bind(now.0 as i64)
        .bind(account)
        .bind(id.to_ascii_lowercase())
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Digest → account of every live key (what the gateway checks private endpoints against).
    pub async fn live_keys(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT digest, account FROM api_keys WHERE revoked_at IS NULL")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("digest")?, r.try_get("account")?))).collect()
    }

    // ---- jobs ----

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

    /// The jobs of `endpoint` in progress: id and the worker running it.
    pub async fn running_jobs(&self, endpoint: &EndpointId) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, worker_id FROM jobs WHERE endpoint_id = $1 AND state = 'IN_PROGRESS'")
            .bind(endpoint.as_str())
            .fetch_all(&self.writer)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get::<Option<String>, _>("worker_id")?.unwrap_or_default())))
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

    // ---- usage ----

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
    pub async fn billed(&self, workers: &[WorkerId]) -> Result<HashMap<WorkerId, (u64, sluice_core::billing::Class)>> {
        let mut out = HashMap::new();
        for w in workers {
            let row = sqlx::query(
                "SELECT CAST(SUM(seconds) AS BIGINT) AS s, MAX(class) AS c FROM usage_ledger WHERE worker_id = $1 GROUP BY worker_id",
            )
            .bind(w.as_str())
            .fetch_optional(&self.reader)
            .await?;
            if let Some(r) = row {
                let c: String = r.try_get("c")?;
                let class = sluice_core::billing::Class::parse(&c).ok_or_else(|| corrupt("usage_ledger", c))?;
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

    // ---- accounts ----

    /// Creates an account; `Conflict` when the name is taken.
    pub async fn create_account(&self, a: &AccountRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, max_workers_quota, created_at, balance_nanos, webhook_url)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&a.name)
        .bind(i64::from(a.max_workers_quota))
        .bind(a.created_at.0 as i64)
        .bind(a.balance_nanos)
        .bind(&a.webhook_url)
        .execute(&self.writer)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::Conflict(format!("an account named {:?} already exists", a.name))
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    /// Creates the account if it does not exist (the admin account at startup).
    pub async fn ensure_account(&self, name: &str, quota: u32, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO accounts (name, max_workers_quota, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(i64::from(quota))
        .bind(now.0 as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn get_account(&self, name: &str) -> Result<Option<AccountRecord>> {
        let row = sqlx::query("SELECT name, max_workers_quota, created_at, balance_nanos, low_credit_warned, webhook_url FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        let rows = sqlx::query("SELECT name, max_workers_quota, created_at, balance_nanos, low_credit_warned, webhook_url FROM accounts ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// Adds credit (admin top-up) and records it; returns the new balance.
    pub async fn add_credit(&self, name: &str, nanos: i64, now: Millis) -> Result<Option<i64>> {
        let mut tx = self.writer.begin().await?;
        let r = sqlx::query("UPDATE accounts SET balance_nanos = COALESCE(balance_nanos, 0) + $1 WHERE name = $2")
            .bind(nanos)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        let msg = format!("credit added: ${:.2}", nanos as f64 / 1e9);
        sqlx::query("INSERT INTO account_events (account, at, kind, message) VALUES ($1, $2, 'credit_added', $3)")
            .bind(name)
            .bind(now.0 as i64)
            .bind(msg)
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query("SELECT balance_nanos FROM accounts WHERE name = $1").bind(name).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(row.try_get("balance_nanos")?)
    }

    pub async fn set_low_credit_warned(&self, name: &str, warned: bool) -> Result<()> {
        sqlx::query("UPDATE accounts SET low_credit_warned = $1 WHERE name = $2")
            .bind(i64::from(warned))
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn set_webhook(&self, name: &str, url: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE accounts SET webhook_url = $1 WHERE name = $2")
            .bind(url)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn add_account_event(&self, account: &str, at: Millis, kind: &str, message: &str) -> Result<()> {
        sqlx::query("INSERT INTO account_events (account, at, kind, message) VALUES ($1, $2, $3, $4)")
            .bind(account)
            .bind(at.0 as i64)
            .bind(kind)
            .bind(message)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// An account's events, newest first.
    pub async fn list_account_events(&self, account: &str, limit: u32) -> Result<Vec<AccountEvent>> {
        let rows = sqlx::query(
            "SELECT id, account, at, kind, message FROM account_events WHERE account = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(account)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountEvent {
                    id: r.try_get("id")?,
                    account: r.try_get("account")?,
                    at: Millis(r.try_get::<i64, _>("at")? as u64),
                    kind: r.try_get("kind")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// Turns off every running endpoint of an account (credit below the floor); returns their ids.
    pub async fn turn_off_account(&self, account: &str, now: Millis) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE endpoints SET status = 'stopped_no_credit', updated_at = $1
             WHERE account = $2 AND status = 'running' RETURNING id",
        )
        .bind(now.0 as i64)
        .bind(account)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn set_account_quota(&self, name: &str, quota: u32) -> Result<bool> {
        let r = sqlx::query("UPDATE accounts SET max_workers_quota = $1 WHERE name = $2")
            .bind(i64::from(quota))
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- endpoints ----

    pub async fn create_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let spec = serde_json::to_string(&e.spec).map_err(|x| corrupt("endpoints", x))?;
        sqlx::query(
            "INSERT INTO endpoints (id, account, name, status, spec, generation, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.id.as_str())
        .bind(&e.account)
        .bind(&e.spec.name)
        .bind(e.status.as_str())
        .bind(spec)
        .bind(e.generation as i64)
        .bind(e.created_at.0 as i64)
        .bind(e.updated_at.0 as i64)
        .execute(&self.writer)
        .await
        .map_err(|x| name_conflict(x, &e.spec.name))?;
        Ok(())
    }

    /// Replaces spec, status and generation of an existing endpoint.
    pub async fn update_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let spec = serde_json::to_string(&e.spec).map_err(|x| corrupt("endpoints", x))?;
        let r = sqlx::query(
            "UPDATE endpoints SET name = $2, status = $3, spec = $4, generation = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(e.id.as_str())
        .bind(&e.spec.name)
        .bind(e.status.as_str())
        .bind(spec)
        .bind(e.generation as i64)
        .bind(e.updated_at.0 as i64)
        .execute(&self.writer)
        .await
        .map_err(|x| name_conflict(x, &e.spec.name))?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    pub async fn delete_endpoint(&self, id: &EndpointId) -> Result<()> {
        let r = sqlx::query("DELETE FROM endpoints WHERE id = $1").bind(id.as_str()).execute(&self.writer).await?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    pub async fn get_endpoint(&self, id: &EndpointId) -> Result<Option<EndpointRecord>> {
        sqlx::query("SELECT * FROM endpoints WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()
    }

    pub async fn find_endpoint_by_name(&self, account: &str, name: &str) -> Result<Option<EndpointRecord>> {
        sqlx::query("SELECT * FROM endpoints WHERE account = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()
    }

    /// The endpoints `scope` sees, oldest first.
    pub async fn list_endpoints(&self, scope: &Scope) -> Result<Vec<EndpointRecord>> {
        let rows = match scope.account() {
            Some(a) => {
                sqlx::query("SELECT * FROM endpoints WHERE account = $1 ORDER BY created_at, id")
                    .bind(a)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => sqlx::query("SELECT * FROM endpoints ORDER BY created_at, id").fetch_all(&self.reader).await?,
        };
        rows.iter().map(endpoint_from_row).collect()
    }

    // ---- workers ----

    pub async fn upsert_worker(&self, w: &WorkerRecord) -> Result<()> {
        let gpus = serde_json::to_string(&w.gpus).map_err(|x| corrupt("workers", x))?;
        sqlx::query(
            "INSERT INTO workers (id, endpoint_id, generation, state, reason, node, gpus, port, pid, created_at, launched_at, ready_at, stopped_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET state = $4, reason = $5, node = $6, gpus = $7, port = $8, pid = $9,
                 launched_at = $11, ready_at = $12, stopped_at = $13",
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

    // ---- scaling events ----

    pub async fn add_scaling_event(&self, e: &ScalingEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO scaling_events (endpoint_id, at, from_count, to_count, reason, inputs) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.endpoint_id.as_str())
        .bind(e.at.0 as i64)
        .bind(i64::from(e.from))
        .bind(i64::from(e.to))
        .bind(&e.reason)
        .bind(&e.inputs)
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
        rows.iter()
            .map(|r| {
                Ok(ScalingEvent {
                    id: r.try_get("id")?,
                    endpoint_id: endpoint.clone(),
                    at: Millis(r.try_get::<i64, _>("at")? as u64),
                    from: r.try_get::<i64, _>("from_count")? as u32,
                    to: r.try_get::<i64, _>("to_count")? as u32,
                    reason: r.try_get("reason")?,
                    inputs: r.try_get("inputs")?,
                })
            })
            .collect()
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

#[cfg(test)]
mod tests;
