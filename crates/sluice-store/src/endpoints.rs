//! Endpoints: the intent the reconciler works toward.

use sluice_core::{EndpointId, EndpointSpec, EndpointStatus, Millis, keys::Scope};
use sqlx::{Row, any::AnyRow};

use crate::{Error, Result, Store, corrupt};

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
    /// Bumped by every change of the spec ([`Store::update_endpoint_spec`] writes only over the
    /// version it was made from); status changes do not touch it.
    pub version: u64,
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
        version: r.try_get::<i64, _>("version")? as u64,
    })
}

/// A unique-index violation on endpoints is a name already used by the account.
fn name_conflict(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Conflict("this account already has an endpoint with this name".into())
        }
        _ => e.into(),
    }
}

impl Store {
    pub async fn create_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let spec = serde_json::to_string(&e.spec).map_err(|x| corrupt("endpoints", x))?;
        sqlx::query(
            "INSERT INTO endpoints (id, account, name, status, spec, generation, created_at, updated_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
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
        .map_err(name_conflict)?;
        Ok(())
    }

    /// Replaces the spec and generation of an endpoint, only if it is still at `e.version` (the
    /// version it was read at), and bumps the version. The status is never written here: a
    /// status changed meanwhile (a stop, the credit cut-off) stands. `Conflict` when the spec
    /// changed since the read (read again and reapply), `NotFound` when the endpoint is gone.
    pub async fn update_endpoint_spec(&self, e: &EndpointRecord) -> Result<()> {
        let spec = serde_json::to_string(&e.spec).map_err(|x| corrupt("endpoints", x))?;
        let r = sqlx::query(
            "UPDATE endpoints SET name = $2, spec = $3, generation = $4, updated_at = $5, version = version + 1
             WHERE id = $1 AND version = $6",
        )
        .bind(e.id.as_str())
        .bind(&e.spec.name)
        .bind(spec)
        .bind(e.generation as i64)
        .bind(e.updated_at.0 as i64)
        .bind(e.version as i64)
        .execute(&self.writer)
        .await
        .map_err(name_conflict)?;
        if r.rows_affected() == 0 {
            return Err(match self.get_endpoint(&e.id).await? {
                Some(_) => Error::Stale("endpoint"),
                None => Error::NotFound,
            });
        }
        Ok(())
    }

    /// Moves an endpoint from status `from` to `to`; false (nothing written) when its status is
    /// no longer `from` (changed meanwhile) or it is gone.
    pub async fn set_endpoint_status(
        &self,
        id: &EndpointId,
        from: EndpointStatus,
        to: EndpointStatus,
        now: Millis,
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE endpoints SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2")
            .bind(id.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(now.0 as i64)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected() > 0)
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
}
