//! The `leases` table: leader election among control processes (R8.3), by the database's clock.

use sqlx::Row;

use crate::{Result, Store};

/// Who holds a lease, where it is reached, and for how much longer (by the database's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub holder: String,
    pub address: String,
    pub left_ms: u64,
}

impl Store {
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
        .fetch_optional(&self.lease)
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
        .fetch_optional(&self.lease)
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
            .execute(&self.lease)
            .await?;
        Ok(())
    }
}
