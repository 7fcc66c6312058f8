//! The `certificates` table (certificates issued over ACME, with their keys) and
//! `acme_accounts` (the ACME account per directory).
use sluice_core::Millis;
use sqlx::Row;

use crate::{Result, Store, corrupt, ms};

/// One managed certificate. `Debug` shows no key.
#[derive(Clone, PartialEq)]
pub struct CertificateRecord {
    pub host: String,
    pub names: Vec<String>,
    pub challenge: String,
    pub state: String,
    /// The chain and its key (PEM), once issued.
    pub cert_chain: Option<String>,
    pub key_pem: Option<String>,
    pub issuer: Option<String>,
    pub not_before: Option<Millis>,
    pub not_after: Option<Millis>,
    pub failures: u32,
    pub last_attempt: Option<Millis>,
    pub last_error: Option<String>,
    pub updated_at: Millis,
}

impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("host", &self.host)
            .field("names", &self.names)
            .field("state", &self.state)
            .field("not_after", &self.not_after)
            .field("failures", &self.failures)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "host, names, challenge, state, cert_chain, key_pem, issuer, not_before, not_after, failures, \
                       last_attempt, last_error, updated_at";

fn record(r: &sqlx::any::AnyRow) -> Result<CertificateRecord> {
    let names: String = r.try_get("names")?;
    Ok(CertificateRecord {
        host: r.try_get("host")?,
        names: names.split_whitespace().map(str::to_owned).collect(),
        challenge: r.try_get("challenge")?,
        state: r.try_get("state")?,
        cert_chain: r.try_get("cert_chain")?,
        key_pem: r.try_get("key_pem")?,
        issuer: r.try_get("issuer")?,
        not_before: ms(r.try_get("not_before")?),
        not_after: ms(r.try_get("not_after")?),
        failures: u32::try_from(r.try_get::<i64, _>("failures")?).map_err(|e| corrupt("certificates", e))?,
        last_attempt: ms(r.try_get("last_attempt")?),
        last_error: r.try_get("last_error")?,
        updated_at: Millis(r.try_get::<i64, _>("updated_at")?.max(0) as u64),
    })
}

impl Store {
    /// Every managed certificate, by host.
    pub async fn list_certificates(&self) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM certificates ORDER BY host")))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Writes a certificate's row whole (insert or replace).
    pub async fn put_certificate(&self, c: &CertificateRecord) -> Result<()> {
        let opt = |m: Option<Millis>| m.map(|m| m.0 as i64);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO certificates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (host) DO UPDATE SET names = excluded.names, challenge = excluded.challenge,
                state = excluded.state, cert_chain = excluded.cert_chain, key_pem = excluded.key_pem,
                issuer = excluded.issuer, not_before = excluded.not_before, not_after = excluded.not_after,
                failures = excluded.failures, last_attempt = excluded.last_attempt,
                last_error = excluded.last_error, updated_at = excluded.updated_at"
        )))
        .bind(&c.host)
        .bind(c.names.join(" "))
        .bind(&c.challenge)
        .bind(&c.state)
        .bind(c.cert_chain.as_deref())
        .bind(c.key_pem.as_deref())
        .bind(c.issuer.as_deref())
        .bind(opt(c.not_before))
        .bind(opt(c.not_after))
        .bind(i64::from(c.failures))
        .bind(opt(c.last_attempt))
        .bind(c.last_error.as_deref())
        .bind(c.updated_at.0 as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Forgets a certificate (its endpoint is gone).
    pub async fn delete_certificate(&self, host: &str) -> Result<()> {
        sqlx::query("DELETE FROM certificates WHERE host = $1").bind(host).execute(&self.writer).await?;
        Ok(())
    }

    /// The stored ACME account credentials for `directory`.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT credentials FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.map(|r| r.try_get("credentials")).transpose()?)
    }

    /// Keeps a new ACME account's credentials (the first writer wins; the caller reads back).
    pub async fn put_acme_account(&self, directory: &str, credentials: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (directory) DO NOTHING",
        )
        .bind(directory)
        .bind(credentials)
        .bind(now.0 as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
