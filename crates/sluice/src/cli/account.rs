//! `sluice account …`, `sluice key …`, `sluice credit add` and `sluice usage`.
use http::Method;
use sluice_api::{
    AccountCreated, AccountEventList, AccountInput, AccountList, AccountView, CreditInput, KeyInput, KeyList, NewKey,
    UsageReport,
};

use super::{
    Conn,
    args::{AccountCmd, CreditCmd, KeyCmd},
    cell, print_json_or,
};
use crate::table;

pub(super) async fn account(conn: Conn, cmd: AccountCmd) -> anyhow::Result<()> {
    let c = conn.client();
    match cmd {
        AccountCmd::Create { name, quota } => {
            let body = AccountInput { name: Some(name), max_workers_quota: quota, webhook_url: None };
            let v: AccountCreated = c.call(Method::POST, "/v1/accounts", Some(&body)).await?;
            print_json_or(&conn, &v, |v| {
                println!("account {} (max_workers quota {})", v.account.name, v.account.max_workers_quota);
                println!("key     {}   (shown once; id {})", v.key.key, v.key.id);
            })
        }
        AccountCmd::List => {
            let v: AccountList = c.get("/v1/accounts").await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .accounts
                    .iter()
                    .map(|a| {
                        let balance = a.balance_usd.map_or_else(|| "unlimited".into(), |b| format!("{b:.2}"));
                        let warn = if a.low_credit_warning { "LOW CREDIT" } else { "" };
                        vec![
                            a.name.clone(),
                            a.max_workers_quota.to_string(),
                            balance,
                            warn.into(),
                            a.created_at.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["NAME", "QUOTA", "BALANCE $", "WARNING", "CREATED"], &rows));
            })
        }
        AccountCmd::Events { name } => {
            let v: AccountEventList = c.get(&format!("/v1/accounts/{name}/events")).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> =
                    v.events.iter().map(|e| vec![e.at.clone(), e.kind.clone(), e.message.clone()]).collect();
                print!("{}", table::render(&["AT", "KIND", "MESSAGE"], &rows));
            })
        }
        AccountCmd::Update { name, quota, webhook_url } => {
            let body = AccountInput { name: None, max_workers_quota: quota, webhook_url };
            let v: AccountView = c.call(Method::PATCH, &format!("/v1/accounts/{name}"), Some(&body)).await?;
            print_json_or(&conn, &v, |v| println!("account {} quota {}", v.name, v.max_workers_quota))
        }
    }
}

pub(super) async fn credit(conn: Conn, cmd: CreditCmd) -> anyhow::Result<()> {
    let CreditCmd::Add { account, usd } = cmd;
    let body = CreditInput { amount_usd: usd };
    let v: AccountView =
        conn.client().call(Method::POST, &format!("/v1/accounts/{account}/credit"), Some(&body)).await?;
    print_json_or(&conn, &v, |v| println!("account {} balance ${:.2}", v.name, v.balance_usd.unwrap_or(0.0)))
}

pub(super) async fn key(conn: Conn, cmd: KeyCmd) -> anyhow::Result<()> {
    let c = conn.client();
    let q = |account: &Option<String>| account.as_ref().map_or_else(String::new, |a| format!("?account={a}"));
    match cmd {
        KeyCmd::Create { label, account } => {
            let v: NewKey = c.call(Method::POST, "/v1/keys", Some(&KeyInput { label, account })).await?;
            print_json_or(&conn, &v, |v| println!("{}   (shown once; id {}, account {})", v.key, v.id, v.account))
        }
        KeyCmd::List { account } => {
            let v: KeyList = c.get(&format!("/v1/keys{}", q(&account))).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .keys
                    .iter()
                    .map(|k| {
                        vec![k.id.clone(), k.prefix.clone(), cell(&k.label), k.created_at.clone(), cell(&k.revoked_at)]
                    })
                    .collect();
                print!("{}", table::render(&["ID", "PREFIX", "LABEL", "CREATED", "REVOKED"], &rows));
            })
        }
        KeyCmd::Revoke { id, account } => {
            c.call::<()>(Method::DELETE, &format!("/v1/keys/{id}{}", q(&account)), None::<&()>).await?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

pub(super) async fn usage(
    conn: Conn,
    from: Option<String>,
    to: Option<String>,
    endpoint: Option<String>,
    account: Option<String>,
) -> anyhow::Result<()> {
    let params: Vec<String> = [("from", from), ("to", to), ("endpoint", endpoint), ("account", account)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", sluice_core::pull::query_value(&v))))
        .collect();
    let q = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
    let v: UsageReport = conn.client().get(&format!("/v1/usage{q}")).await?;
    print_json_or(&conn, &v, |v| {
        let rows: Vec<Vec<String>> = v
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.day.clone(),
                    r.account.clone(),
                    r.endpoint.clone(),
                    r.gpu_seconds.to_string(),
                    format!("{:.4}", r.cost_usd),
                ]
            })
            .collect();
        print!("{}", table::render(&["DAY", "ACCOUNT", "ENDPOINT", "GPU-SECONDS", "COST $"], &rows));
        println!("total: {} GPU-seconds, ${:.4}", v.total_gpu_seconds, v.total_cost_usd);
    })
}
