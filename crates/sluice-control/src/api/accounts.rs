//! Accounts and API keys (R5.1, R5.5). The admin key creates accounts and may act on any
//! account's keys; an account key sees and changes only its own.
use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use sluice_api::{
    AccountCreated, AccountInput, AccountList, AccountView, ErrorBody, KeyInput, KeyList, KeyView, NewKey,
};
use sluice_core::{keys::Scope, rfc3339};
use sluice_store::AccountRecord;

use super::extract::query;
use super::{Caller, JsonBody, S};
use crate::{AppError, AppState, auth, now};

const LABEL_MAX: usize = 200;

fn account_view(a: &AccountRecord) -> AccountView {
    AccountView {
        name: a.name.clone(),
        max_workers_quota: a.max_workers_quota,
        created_at: rfc3339(a.created_at),
        balance_usd: a.balance_nanos.map(sluice_core::billing::usd),
        low_credit_warning: a.low_credit_warned,
        webhook_url: a.webhook_url.clone(),
    }
}

fn webhook(v: &str) -> Result<Option<String>, AppError> {
    if v.is_empty() {
        return Ok(None);
    }
    let ok =
        v.len() <= 2048 && v.starts_with("http://") && v.parse::<axum::http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        return Err(AppError::InvalidField {
            field: Some("webhook_url".into()),
            message: "must be an http:// URL with a host (at most 2048 bytes)".into(),
        });
    }
    Ok(Some(v.to_owned()))
}

/// R5.4: creating an endpoint, changing one's cost, or starting one needs a balance of 24 hours
/// of its runtime cost (active workers × GPUs per worker × hourly price × 24), and never less
/// than the $10 floor. Unlimited accounts (the admin's) always pass.
pub async fn require_credit(st: &AppState, account: &str, spec: &sluice_core::EndpointSpec) -> Result<(), AppError> {
    use sluice_core::billing::{balance_required, daily_cost_nanos, usd};
    let Some(a) = st.store.get_account(account).await? else { return Ok(()) };
    let Some(balance) = a.balance_nanos else { return Ok(()) };
    let price = st.cfg.metering.prices.iter().find(|p| p.gpu_type == spec.workers.gpu_type);
    let daily = daily_cost_nanos(spec.workers.active_workers, spec.workers.gpus_per_worker, price);
    let need = balance_required(daily);
    if balance < need {
        return Err(AppError::PaymentRequired(format!(
            "account {account} has ${:.2}; this needs ${:.2} (24 hours of {} active worker(s) x {} {} GPU(s), at least $10): add ${:.2}",
            usd(balance),
            usd(need),
            spec.workers.active_workers,
            spec.workers.gpus_per_worker,
            spec.workers.gpu_type,
            usd(need - balance)
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/accounts/{name}/credit", tag = "accounts", params(("name" = String, Path)),
    request_body = sluice_api::CreditInput,
    responses((status = 200, body = AccountView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_credit(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<sluice_api::CreditInput>,
) -> Result<Json<AccountView>, AppError> {
    admin_only(&caller)?;
    if !(input.amount_usd.is_finite() && input.amount_usd > 0.0 && input.amount_usd <= 1e9) {
        return Err(AppError::InvalidField {
            field: Some("amount_usd".into()),
            message: "must be more than 0 and at most 1e9".into(),
        });
    }
    let nanos = (input.amount_usd * sluice_core::billing::NANOS as f64).round() as i64;
    st.store.add_credit(&name, nanos, now()).await.map_err(|e| match e {
        sluice_store::Error::NotFound => AppError::NotFound("no such account".into()),
        other => other.into(),
    })?;
    tracing::info!(account = %name, amount_usd = input.amount_usd, "credit added");
    let a = st.store.get_account(&name).await?.ok_or_else(|| AppError::NotFound("no such account".into()))?;
    Ok(Json(account_view(&a)))
}

#[utoipa::path(get, path = "/v1/accounts/{name}/events", tag = "accounts", params(("name" = String, Path)),
    responses((status = 200, body = sluice_api::AccountEventList), (status = 404, body = ErrorBody)))]
pub async fn account_events(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<sluice_api::AccountEventList>, AppError> {
    if !caller.scope.admits(&name) {
        return Err(AppError::NotFound("no such account".into()));
    }
    let events = st
        .store
        .list_account_events(&name, 100)
        .await?
        .into_iter()
        .map(|e| sluice_api::AccountEventView { id: e.id, at: rfc3339(e.at), kind: e.kind, message: e.message })
        .collect();
    Ok(Json(sluice_api::AccountEventList { events }))
}

fn admin_only(caller: &Caller) -> Result<(), AppError> {
    if caller.is_admin() { Ok(()) } else { Err(AppError::Forbidden("only the admin key can do this".into())) }
}

fn quota(v: Option<i64>, default: u32) -> Result<u32, AppError> {
    match v {
        None => Ok(default),
        Some(q) if (1..=100_000).contains(&q) => Ok(q as u32),
        Some(_) => Err(AppError::InvalidField {
            field: Some("max_workers_quota".into()),
            message: "must be between 1 and 100000".into(),
        }),
    }
}

fn label(v: Option<String>) -> Result<Option<String>, AppError> {
    match v {
        Some(l) if l.len() > LABEL_MAX || l.chars().any(char::is_control) => Err(AppError::InvalidField {
            field: Some("label".into()),
            message: format!("must be at most {LABEL_MAX} bytes without control characters"),
        }),
        other => Ok(other),
    }
}

/// Creates a key for `account` and records it; the key is returned once.
async fn new_key(st: &AppState, account: &str, role: &str, label: Option<String>) -> Result<NewKey, AppError> {
    let key = auth::generate_key();
    let digest = auth::digest(&key);
    st.store.put_key(&digest, &auth::prefix(&key), account, role, label.as_deref(), now()).await?;
    Ok(NewKey { id: digest[..16].to_owned(), prefix: auth::prefix(&key), account: account.to_owned(), label, key })
}

/// The account a caller acts on: its own, or (admin only) the one named.
fn target_account(caller: &Caller, named: Option<String>) -> Result<String, AppError> {
    match named {
        Some(a) if a != caller.account => {
            admin_only(caller)?;
            Ok(a)
        }
        _ => Ok(caller.account.clone()),
    }
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = AccountInput,
    responses((status = 201, body = AccountCreated), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create_account(
    State(st): S,
    Extension(caller): Extension<Caller>,
    JsonBody(input): JsonBody<AccountInput>,
) -> Result<(StatusCode, Json<AccountCreated>), AppError> {
    admin_only(&caller)?;
    let name = input.name.unwrap_or_default();
    if !sluice_core::ids::is_id_label(&name) {
        return Err(AppError::InvalidField {
            field: Some("name".into()),
            message: "must be 1-63 lowercase letters, digits or '-', starting with a letter".into(),
        });
    }
    let rec = AccountRecord {
        name: name.clone(),
        max_workers_quota: quota(input.max_workers_quota, st.cfg.max_workers_quota)?,
        created_at: now(),
        balance_nanos: Some(0),
        low_credit_warned: false,
        webhook_url: input.webhook_url.as_deref().map(webhook).transpose()?.flatten(),
    };
    st.store.create_account(&rec).await?;
    let key = new_key(&st, &name, "user", Some("created with the account".into())).await?;
    tracing::info!(account = %name, "account created");
    st.settle().await;
    Ok((StatusCode::CREATED, Json(AccountCreated { account: account_view(&rec), key })))
}

#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses((status = 200, body = AccountList)))]
pub async fn list_accounts(State(st): S, Extension(caller): Extension<Caller>) -> Result<Json<AccountList>, AppError> {
    let accounts = st.store.list_accounts(&caller.scope).await?.iter().map(account_view).collect();
    Ok(Json(AccountList { accounts }))
}

#[utoipa::path(patch, path = "/v1/accounts/{name}", tag = "accounts", params(("name" = String, Path)),
    request_body = AccountInput,
    responses((status = 200, body = AccountView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_account(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<AccountInput>,
) -> Result<Json<AccountView>, AppError> {
    admin_only(&caller)?;
    if input.name.as_ref().is_some_and(|n| *n != name) {
        return Err(AppError::InvalidField {
            field: Some("name".into()),
            message: "an account cannot be renamed".into(),
        });
    }
    let missing = || AppError::NotFound("no such account".into());
    let current = st.store.get_account(&name).await?.ok_or_else(missing)?;
    let q = quota(input.max_workers_quota, current.max_workers_quota)?;
    let hook = input.webhook_url.as_deref().map(webhook).transpose()?;
    st.store.set_account_quota(&name, q).await?;
    if let Some(h) = hook {
        st.store.set_webhook(&name, h.as_deref()).await?;
    }
    let a = st.store.get_account(&name).await?.ok_or_else(missing)?;
    Ok(Json(account_view(&a)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Admin only: whose keys (default: the caller's account).
    account: Option<String>,
}

#[utoipa::path(post, path = "/v1/keys", tag = "accounts", request_body = KeyInput,
    responses((status = 201, body = NewKey), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_key(
    State(st): S,
    Extension(caller): Extension<Caller>,
    JsonBody(input): JsonBody<KeyInput>,
) -> Result<(StatusCode, Json<NewKey>), AppError> {
    let account = target_account(&caller, input.account)?;
    let label = label(input.label)?;
    if st.store.get_account(&account).await?.is_none() {
        return Err(AppError::NotFound("no such account".into()));
    }
    let key = new_key(&st, &account, "user", label).await?;
    st.settle().await;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(get, path = "/v1/keys", tag = "accounts", params(AccountQuery), responses((status = 200, body = KeyList)))]
pub async fn list_keys(
    State(st): S,
    Extension(caller): Extension<Caller>,
    q: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<KeyList>, AppError> {
    let account = target_account(&caller, query(q)?.account)?;
    let keys = st
        .store
        .list_keys(&account)
        .await?
        .into_iter()
        .map(|k| KeyView {
            id: k.id,
            prefix: k.prefix,
            role: k.role,
            label: k.label,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        })
        .collect();
    Ok(Json(KeyList { account, keys }))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "accounts", params(("id" = String, Path), AccountQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_key(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, AppError> {
    let account = target_account(&caller, query(q)?.account)?;
    if !st.store.revoke_key(&account, &id, now()).await? {
        return Err(AppError::NotFound("no live key with this id in the account".into()));
    }
    tracing::info!(%account, key = %id, "key revoked");
    st.settle().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, inclusive: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC); default: the beginning.
    from: Option<String>,
    /// End, exclusive; default: now.
    to: Option<String>,
    /// Only this endpoint.
    endpoint: Option<String>,
    /// Admin only: only this account (default for the admin: every account).
    account: Option<String>,
}

#[utoipa::path(get, path = "/v1/usage", tag = "accounts", params(UsageQuery),
    responses((status = 200, body = sluice_api::UsageReport), (status = 422, body = ErrorBody)))]
pub async fn usage(
    State(st): S,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<sluice_api::UsageReport>, AppError> {
    use sluice_core::billing::{parse_time, usd};
    let q = query(q)?;
    let time = |field: &str, v: &Option<String>, default: sluice_core::Millis| match v {
        None => Ok(default),
        Some(s) => parse_time(s).ok_or_else(|| AppError::InvalidField {
            field: Some(field.into()),
            message: "must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)".into(),
        }),
    };
    let from = time("from", &q.from, sluice_core::Millis(0))?;
    let to = time("to", &q.to, sluice_core::Millis(now().0 + 1))?;
    // `account` narrows what the caller's scope admits; it never widens it.
    let scope = match q.account {
        Some(a) if caller.scope.admits(&a) => Scope::Account(a),
        Some(_) => return Err(AppError::Forbidden("only the admin key can see other accounts' usage".into())),
        None => caller.scope.clone(),
    };
    let rows = st.store.usage(&scope, q.endpoint.as_deref(), from, to).await?;
    let total_nanos: i64 = rows.iter().map(|r| r.cost_nanos).sum();
    Ok(Json(sluice_api::UsageReport {
        from: rfc3339(from),
        to: rfc3339(to),
        total_gpu_seconds: rows.iter().map(|r| r.gpu_seconds).sum(),
        total_cost_usd: usd(total_nanos),
        rows: rows
            .into_iter()
            .map(|r| sluice_api::UsageRowView {
                account: r.account,
                endpoint: r.endpoint_id,
                day: r.day,
                gpu_seconds: r.gpu_seconds,
                cost_usd: usd(r.cost_nanos),
            })
            .collect(),
    }))
}
