//! Accounts: quota, credit, webhook, events, and the credit cut-off.

use sluice_core::{Millis, keys::Scope};
use sqlx::{Row, any::AnyRow};

use crate::{Error, Result, Store};

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

impl Store {
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

    /// The accounts `scope` sees (one, or every account for the admin), by name.
    pub async fn list_accounts(&self, scope: &Scope) -> Result<Vec<AccountRecord>> {
        let rows = sqlx::query(
            "SELECT name, max_workers_quota, created_at, balance_nanos, low_credit_warned, webhook_url FROM accounts
             WHERE ($1 IS NULL OR name = $1) ORDER BY name",
        )
        .bind(scope.account())
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
}
