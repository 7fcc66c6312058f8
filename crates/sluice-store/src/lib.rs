//! Persistent state in SQLite or PostgreSQL (one code path, through sqlx's `Any` driver): endpoints (intent),
//! workers (the reconciler's records), API keys and instance identity. One file per table, each
//! with its records and one `impl Store` block: `endpoints`, `workers`, `events` (scaling
//! decisions), `keys`, `accounts`, `usage`, `jobs`, `logs`, `lease`, `certs`; this file opens the store
//! and runs the migrations.
//!
//! **This crate knows SQL and nothing of HTTP or processes.** All writes go through a
//! one-connection writer pool, reads through a separate pool, so SQLite never answers `BUSY` to
//! a transaction that upgrades to a writer.
#![forbid(unsafe_code)]

mod accounts;
mod certs;
mod endpoints;
mod error;
mod events;
mod jobs;
mod keys;
mod lease;
mod logs;
mod recorded;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod usage;
mod workers;

use std::{path::Path, time::Duration};

pub use accounts::{AccountEvent, AccountRecord};
pub use certs::CertificateRecord;
pub use endpoints::EndpointRecord;
pub use error::Error;
pub use events::{EVENT_DECISION, EVENT_RETUNE, ScalingEvent};
pub use jobs::{JobCounts, JobRecord};
pub use keys::{KeyInfo, KeyRecord};
pub use lease::Lease;
pub use logs::{LogLine, LogQuery, NewLogLine};
pub use recorded::{RecordChunk, RecordKind, ShadowPoint};
use sluice_core::Millis;
use sqlx::{
    AnyPool, ConnectOptions, Row,
    any::{AnyConnectOptions, AnyPoolOptions},
    sqlite::SqliteConnectOptions,
};
pub use usage::{UsageEntry, UsageRow};
pub use workers::{MAX_PHASES, WorkerRecord};

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// The leader lease's own connection (PostgreSQL): a renewal never queues behind the
    /// platform's other statements, so a busy pool cannot make a healthy leader step down.
    lease: AnyPool,
    backend: Backend,
}

fn ms(v: Option<i64>) -> Option<Millis> {
    v.map(|x| Millis(x.max(0) as u64))
}

fn corrupt(table: &'static str, message: impl ToString) -> Error {
    Error::Corrupt { table, message: message.to_string() }
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
        10 "endpoint_version" "0010_endpoint_version.sql",
        11 "certificates" "0011_certificates.sql",
        12 "worker_phases" "0012_worker_phases.sql",
        13 "recording" "0013_recording.sql",
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
        Ok(Store { lease: writer.clone(), writer, reader, backend: Backend::Sqlite })
    }

    /// Connects to PostgreSQL at `url` and applies migrations. Several processes may share one
    /// database; every statement that takes something (a job, a lease) is safe under concurrency.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let opts: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await?;
        migrator(Backend::Postgres).run(&pool).await?;
        let lease =
            AnyPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(2)).connect_lazy_with(opts);
        Ok(Store { writer: pool.clone(), reader: pool, lease, backend: Backend::Postgres })
    }

    /// The database's clock as Unix ms, as an SQL expression.
    fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
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
}

#[cfg(test)]
mod tests;
