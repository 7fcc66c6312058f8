//! Accounts, keys and private endpoints (R5.1, R3.5, R5.5): isolation across two accounts on
//! every `/v1` route and through the gateway, revoked keys, quotas.
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A raw API call with an explicit key (or none).
async fn call(p: &Platform, key: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Resp {
    let mut h: Vec<(String, String)> =
        key.map(|k| ("authorization".into(), format!("Bearer {k}"))).into_iter().collect();
    let bytes = match body {
        Some(b) => {
            h.push(("content-type".into(), "application/json".into()));
            Bytes::from(serde_json::to_vec(&b).unwrap())
        }
        None => Bytes::new(),
    };
    send(method, &format!("{}{path}", p.api), &h, bytes).await
}

async fn gw(p: &Platform, id: &str, auth: Option<String>) -> Resp {
    let h: Vec<(String, String)> = auth.map(|a| ("authorization".into(), a)).into_iter().collect();
    send(Method::GET, &format!("{}/e/{id}/who", p.gateway), &h, Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_isolated_on_the_api_and_the_gateway() {
    let p = Platform::start().await;
    let mk = async |name: &str, quota: Option<u32>| {
        let r = call(
            &p,
            Some(&p.key),
            Method::POST,
            "/v1/accounts",
            Some(json!({"name": name, "max_workers_quota": quota})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let path = format!("/v1/accounts/{name}/credit");
        let credit = call(&p, Some(&p.key), Method::POST, &path, Some(json!({"amount_usd": 1000}))).await;
        assert_eq!(credit.status, StatusCode::OK);
        r.json()["key"]["key"].as_str().unwrap().to_owned()
    };
    let alice = mk("alice", None).await;
    let bob = mk("bob", Some(2)).await;
    assert!(alice.starts_with("sk_") && alice != bob);
    let r = call(&p, Some(&p.key), Method::POST, "/v1/accounts", Some(json!({"name": "alice"}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = call(&p, Some(&p.key), Method::POST, "/v1/accounts", Some(json!({"name": "Not Valid"}))).await;
    assert_eq!(r.json()["error"]["field"], "name");
    // Only the admin creates accounts.
    let r = call(&p, Some(&alice), Method::POST, "/v1/accounts", Some(json!({"name": "eve"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // Names are per account: both may have "llama". Endpoints are private by default.
    let body = json!({"name": "llama", "start_command": demo_cmd(), "active_workers": 1, "max_workers": 2});
    let r = call(&p, Some(&alice), Method::POST, "/v1/endpoints", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let a = r.json();
    assert_eq!((a["public"].as_bool(), a["account"].as_str()), (Some(false), Some("alice")));
    let a = a["id"].as_str().unwrap().to_owned();
    let r = call(&p, Some(&bob), Method::POST, "/v1/endpoints", Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let b = r.json()["id"].as_str().unwrap().to_owned();
    // Bob's quota is 2.
    let mut big = body.clone();
    big["name"] = json!("big");
    big["max_workers"] = json!(3);
    let r = call(&p, Some(&bob), Method::POST, "/v1/endpoints", Some(big.clone())).await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("max_workers"))
    );
    let r = call(&p, Some(&p.key), Method::PATCH, "/v1/accounts/bob", Some(json!({"max_workers_quota": 5}))).await;
    assert_eq!(r.json()["max_workers_quota"], 5);
    assert_eq!(call(&p, Some(&bob), Method::POST, "/v1/endpoints", Some(big)).await.status, StatusCode::CREATED);

    // Every endpoint route: bob's key on alice's endpoint is 404, no key is 401.
    let routes = [
        (Method::GET, format!("/v1/endpoints/{a}"), None),
        (Method::PATCH, format!("/v1/endpoints/{a}"), Some(json!({"max_workers": 2}))),
        (Method::POST, format!("/v1/endpoints/{a}/stop"), None),
        (Method::POST, format!("/v1/endpoints/{a}/start"), None),
        (Method::GET, format!("/v1/endpoints/{a}/workers"), None),
        (Method::GET, format!("/v1/endpoints/{a}/events"), None),
        (Method::DELETE, format!("/v1/endpoints/{a}"), None),
    ];
    for (m, path, body) in &routes {
        let r = call(&p, Some(&bob), m.clone(), path, body.clone()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "not_found");
        let r = call(&p, None, m.clone(), path, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {path}");
    }
    for path in ["/v1/endpoints", "/v1/keys", "/v1/accounts", "/v1/gpus", "/v1/images", "/v1/templates"] {
        assert_eq!(call(&p, None, Method::GET, path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let list = call(&p, Some(&bob), Method::GET, "/v1/endpoints", None).await.json();
    let ids: Vec<&str> = list["endpoints"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&b.as_str()) && !ids.contains(&a.as_str()), "{ids:?}");
    let accts = call(&p, Some(&bob), Method::GET, "/v1/accounts", None).await.json();
    assert_eq!(accts["accounts"].as_array().unwrap().len(), 1, "an account sees only itself: {accts}");
    // Alice's endpoint is untouched by all of bob's attempts.
    let still = call(&p, Some(&alice), Method::GET, &format!("/v1/endpoints/{a}"), None).await;
    assert_eq!((still.status, still.json()["max_workers"].as_u64()), (StatusCode::OK, Some(2)));

    // Through the gateway.
    p.wait_ready(&a, 1).await;
    assert_eq!(gw(&p, &a, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw(&p, &a, Some("Bearer sk_not_a_key".into())).await.status, StatusCode::UNAUTHORIZED);
    let r = gw(&p, &a, Some(format!("Bearer {bob}"))).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("endpoint_not_found")));
    let r = gw(&p, &a, Some(format!("Bearer {alice}"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["headers"].get("authorization").is_none(), "the key is not forwarded: {}", r.text());
    assert_eq!(gw(&p, &a, Some(alice.clone())).await.status, StatusCode::OK, "the bare key, as RunPod clients send it");
    // Made public, it answers without a key.
    let r = call(&p, Some(&alice), Method::PATCH, &format!("/v1/endpoints/{a}"), Some(json!({"public": true}))).await;
    assert_eq!(r.json()["public"], true);
    assert_eq!(gw(&p, &a, None).await.status, StatusCode::OK);
    call(&p, Some(&alice), Method::PATCH, &format!("/v1/endpoints/{a}"), Some(json!({"public": false}))).await;

    // Keys: a second key, listing shows no key, revoking the first locks it out everywhere.
    let r = call(&p, Some(&alice), Method::POST, "/v1/keys", Some(json!({"label": "ci"}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let alice2 = r.json()["key"].as_str().unwrap().to_owned();
    let keys = call(&p, Some(&alice2), Method::GET, "/v1/keys", None).await;
    assert!(!keys.text().contains(&alice) && !keys.text().contains(&alice2), "keys are never listed");
    let keys = keys.json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let first = keys["keys"].as_array().unwrap().iter().find(|k| k["label"] != "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bob cannot revoke alice's key, nor list her keys.
    assert_eq!(
        call(&p, Some(&bob), Method::DELETE, &format!("/v1/keys/{first}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&p, Some(&bob), Method::GET, "/v1/keys?account=alice", None).await.status, StatusCode::FORBIDDEN);
    let r = call(&p, Some(&alice2), Method::DELETE, &format!("/v1/keys/{first}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(call(&p, Some(&alice), Method::GET, "/v1/endpoints", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw(&p, &a, Some(format!("Bearer {alice}"))).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gw(&p, &a, Some(format!("Bearer {alice2}"))).await.status, StatusCode::OK);

    // The CLI.
    let (ok, out, err) = cli(&p, &["account", "create", "carol", "--quota", "4"]);
    assert!(ok && out.contains("carol") && out.contains("sk_"), "{out}{err}");
    let (ok, out, _) = cli(&p, &["key", "list", "--account", "carol"]);
    assert!(ok && out.starts_with("ID") && out.lines().count() == 2, "{out}");
    let (ok, out, _) = cli(&p, &["account", "list"]);
    assert!(ok && out.contains("alice") && out.contains("bob") && out.contains("carol"), "{out}");
    p.stop();
}

/// Unix ms of an RFC 3339 time as the API writes it (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
fn ms(s: &str) -> u64 {
    let day = sluice_core::billing::parse_time(&s[..10]).unwrap().0;
    let n = |r: std::ops::Range<usize>| s[r].parse::<u64>().unwrap();
    day + n(11..13) * 3_600_000 + n(14..16) * 60_000 + n(17..19) * 1000 + n(20..23)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_lifetime_is_metered_per_second_into_the_ledger() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), &["--no-demo", "--metering-interval-secs", "1"]).await;
    let r = call(&p, Some(&p.key), Method::POST, "/v1/accounts", Some(json!({"name": "metered"}))).await;
    let key = r.json()["key"]["key"].as_str().unwrap().to_owned();
    let (ok, out, err) = cli(&p, &["credit", "add", "metered", "100"]);
    assert!(ok && out.contains("balance $100.00"), "{out}{err}");
    let body = json!({"name": "m", "start_command": demo_cmd(), "active_workers": 1, "max_workers": 1,
                      "gpus_per_worker": 2, "gpu_type": "SIM"});
    let id =
        call(&p, Some(&key), Method::POST, "/v1/endpoints", Some(body)).await.json()["id"].as_str().unwrap().to_owned();
    p.wait_ready(&id, 1).await;
    // Let a few periodic accruals happen while it runs, then stop it.
    eventually("usage while running", std::time::Duration::from_secs(10), async || {
        let u = call(&p, Some(&key), Method::GET, &format!("/v1/usage?endpoint={id}"), None).await.json();
        (u["total_gpu_seconds"].as_u64() >= Some(4)).then_some(())
    })
    .await;
    call(&p, Some(&key), Method::POST, &format!("/v1/endpoints/{id}/stop"), None).await;
    let w = eventually("the worker stopped", std::time::Duration::from_secs(20), async || {
        p.workers(&id).await.into_iter().find(|w| w["state"] == "stopped")
    })
    .await;
    let life_ms = ms(w["stopped_at"].as_str().unwrap()) - ms(w["launched_at"].as_str().unwrap());
    let expect = life_ms.div_ceil(1000) * 2;
    // The final accrual comes with the stop; the ledger then holds the lifetime rounded up, × 2 GPUs.
    let u = eventually("the final accrual", std::time::Duration::from_secs(10), async || {
        let u = call(&p, Some(&key), Method::GET, &format!("/v1/usage?endpoint={id}"), None).await.json();
        (u["total_gpu_seconds"].as_u64() == Some(expect)).then_some(u)
    })
    .await;
    // Baseline (active_workers 1) at SIM's $0.36/h: $0.0001 per GPU-second.
    let cost = u["total_cost_usd"].as_f64().unwrap();
    assert!((cost - expect as f64 * 0.0001).abs() < 1e-9, "{u}");
    let rows = u["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{u}");
    assert_eq!(rows[0]["endpoint"], id.as_str());
    // Another account sees none of it; a bad date names the field.
    let other = call(&p, Some(&p.key), Method::POST, "/v1/accounts", Some(json!({"name": "other"}))).await.json();
    let other = other["key"]["key"].as_str().unwrap().to_owned();
    let u2 = call(&p, Some(&other), Method::GET, "/v1/usage", None).await.json();
    assert_eq!(u2["total_gpu_seconds"], 0, "{u2}");
    let r = call(&p, Some(&key), Method::GET, "/v1/usage?from=yesterday", None).await;
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("from")));
    let (ok, out, _) = cli(&p, &["usage", "--endpoint", &id]);
    assert!(ok && out.contains(&id) && out.contains(&format!("total: {expect} GPU-seconds")), "{out}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_rules_402_warn_turn_off_and_come_back_after_a_top_up() {
    // The simulated GPU at $1 per GPU-second (baseline $3600/h), accrued every second.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        "metering_interval_secs = 1\ngpu_prices = [{ type = \"SIM\", per_hour = 3600.0, per_second = 1.0 }]\n",
    )
    .unwrap();
    let p = Platform::start_in(dir, &["--no-demo", "--config", cfg.to_str().unwrap()]).await;
    let (hook, got) = webhook_sink().await;
    let r =
        call(&p, Some(&p.key), Method::POST, "/v1/accounts", Some(json!({"name": "payer", "webhook_url": hook}))).await;
    assert_eq!(r.json()["account"]["balance_usd"], 0.0, "{}", r.text());
    let key = r.json()["key"]["key"].as_str().unwrap().to_owned();
    let ep = json!({"name": "burn", "start_command": demo_cmd(), "active_workers": 0, "max_workers": 1,
                    "gpus_per_worker": 4, "idle_timeout_secs": 60});

    // No credit: even a scale-to-zero endpoint needs the $10 floor.
    let r = call(&p, Some(&key), Method::POST, "/v1/endpoints", Some(ep.clone())).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("insufficient_credit"))
    );
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("needs $10.00"), "{}", r.text());
    call(&p, Some(&p.key), Method::POST, "/v1/accounts/payer/credit", Some(json!({"amount_usd": 40}))).await;
    // The 24-hour rule: one active worker of 4 GPUs at $3600/h each needs $345600.
    let mut active = ep.clone();
    active["active_workers"] = json!(1);
    let r = call(&p, Some(&key), Method::POST, "/v1/endpoints", Some(active)).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("needs $345600.00"), "{}", r.text());
    let r = call(&p, Some(&key), Method::POST, "/v1/endpoints", Some(ep.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // Changing its cost is checked too; a change that keeps the cost is not.
    let r =
        call(&p, Some(&key), Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"active_workers": 1}))).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    let r = call(&p, Some(&key), Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"idle_timeout_secs": 50})))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // A request starts a worker burning $4/s: the warning comes at once (10 hours of that is
    // far more than $40), once, to the events and the webhook; below $10 everything turns off.
    let auth = Some(format!("Bearer {key}"));
    assert_eq!(gw(&p, &id, auth.clone()).await.status, StatusCode::OK);
    let events = eventually("the turn-off", std::time::Duration::from_secs(30), async || {
        let e = call(&p, Some(&key), Method::GET, "/v1/accounts/payer/events", None).await.json();
        e["events"].as_array().unwrap().iter().any(|e| e["kind"] == "turned_off").then_some(e)
    })
    .await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "low_credit").count(), 1, "{kinds:?}");
    eventually("the webhook", std::time::Duration::from_secs(10), async || {
        got.lock().unwrap().iter().any(|b| b.contains("\"low_credit\"") && b.contains("payer")).then_some(())
    })
    .await;
    let e = call(&p, Some(&key), Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!(e["status"], "stopped_no_credit", "{e}");
    // Until the turn-off reaches the gateway a request may still be served; after it, 402.
    let r = eventually("402 from the gateway", std::time::Duration::from_secs(10), async || {
        let r = gw(&p, &id, auth.clone()).await;
        assert!(r.status == StatusCode::OK || r.status == StatusCode::PAYMENT_REQUIRED, "{} {}", r.status, r.text());
        (r.status == StatusCode::PAYMENT_REQUIRED).then_some(r)
    })
    .await;
    assert_eq!(r.json()["error"]["code"], "insufficient_credit");
    eventually("the worker stopped", std::time::Duration::from_secs(20), async || {
        p.workers(&id).await.iter().all(|w| w["state"] == "stopped").then_some(())
    })
    .await;
    let acct = call(&p, Some(&key), Method::GET, "/v1/accounts", None).await.json();
    assert!(acct["accounts"][0]["balance_usd"].as_f64().unwrap() < 10.0, "{acct}");
    // Starting again needs credit; after a top-up it runs and serves.
    let r = call(&p, Some(&key), Method::POST, &format!("/v1/endpoints/{id}/start"), None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.text());
    let (ok, out, _) = cli(&p, &["credit", "add", "payer", "500"]);
    assert!(ok, "{out}");
    let r = call(&p, Some(&key), Method::POST, &format!("/v1/endpoints/{id}/start"), None).await;
    assert_eq!((r.status, r.json()["status"].as_str()), (StatusCode::OK, Some("running")), "{}", r.text());
    assert_eq!(gw(&p, &id, auth).await.status, StatusCode::OK);
    let (ok, out, _) = cli(&p, &["account", "events", "payer"]);
    assert!(ok && out.contains("turned_off") && out.contains("credit_added"), "{out}");
    p.stop();
}
