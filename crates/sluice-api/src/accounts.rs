//! `/v1` accounts, keys, credit and usage.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Usage of one endpoint on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageRowView {
    pub account: String,
    pub endpoint: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub gpu_seconds: u64,
    pub cost_usd: f64,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub rows: Vec<UsageRowView>,
    pub total_gpu_seconds: u64,
    pub total_cost_usd: f64,
}

/// An account (`/v1/accounts`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub name: String,
    /// Cap on any endpoint's `max_workers` (R5.5).
    pub max_workers_quota: u32,
    pub created_at: String,
    /// Credit in USD (R5.4); absent: unlimited (the admin account).
    pub balance_usd: Option<f64>,
    /// The balance is below 10 hours of the account's current runtime cost.
    pub low_credit_warning: bool,
    /// Where low-credit warnings are POSTed.
    pub webhook_url: Option<String>,
}

/// Body of `POST /v1/accounts/{name}/credit` (admin only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditInput {
    /// Dollars to add, more than 0.
    pub amount_usd: f64,
}

/// An account event: a low-credit warning, a turn-off, a top-up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountEventView {
    pub id: i64,
    pub at: String,
    /// `low_credit`, `turned_off`, `credit_added` or `webhook_failed`.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountEventList {
    pub events: Vec<AccountEventView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// Body of `POST /v1/accounts` (admin only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    /// Lowercase letters, digits and `-`, at most 63; also the account's id.
    pub name: Option<String>,
    pub max_workers_quota: Option<i64>,
    /// Low-credit warnings are POSTed here as JSON (http://; empty string clears it).
    pub webhook_url: Option<String>,
}

/// A new key: the only time the key itself is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewKey {
    pub key: String,
    pub id: String,
    pub prefix: String,
    pub account: String,
    pub label: Option<String>,
}

/// Answer of `POST /v1/accounts`: the account and its first key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub account: AccountView,
    pub key: NewKey,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Names the key for `DELETE /v1/keys/{id}`.
    pub id: String,
    pub prefix: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub account: String,
    pub keys: Vec<KeyView>,
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub label: Option<String>,
    /// Admin only: the account to create the key for (default: the caller's).
    pub account: Option<String>,
}

/// An account's low-credit warning, POSTed to its `webhook_url` (R5.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LowCreditNotice {
    pub event: String,
    pub account: String,
    pub balance_usd: f64,
    pub cost_per_hour_usd: f64,
    pub message: String,
}
