//! API keys: stored as digests; listed, revoked, and handed to the gateway as live digests.

use sluice_core::Millis;
use sqlx::Row;

use crate::{Result, Store, ms};

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

impl Store {
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
        let rows = sqlx::query("SELECT digest, account, role FROM api_keys WHERE revoked_at IS NULL")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let (account, role): (String, String) = (r.try_get("account")?, r.try_get("role")?);
                Ok((r.try_get("digest")?, sluice_core::keys::scope_label(&account, &role).to_owned()))
            })
            .collect()
    }
}
