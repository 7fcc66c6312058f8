//! The autoscaler you can audit and rehearse (issue 20): recorded traffic exported as a trace,
//! replayed through the policies beside what happened, every decision run again, shadow
//! policies' counts, and the SLO policy's re-tunes; each scoped to its account.
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn events(p: &Platform, id: &str) -> Vec<Value> {
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/events?limit=1000"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_traffic_is_exported_replayed_audited_and_shadowed() {
    let p = Platform::start().await;
    // Validation names the field and changes nothing.
    for (body, field) in [
        (json!({"shadow_policies": ["knative", "nope"]}), "shadow_policies[1]"),
        (json!({"shadow_policies": ["hpa", "hpa"]}), "shadow_policies[1]"),
        (json!({"scaling_policy": "slo"}), "scaling_policy"),
        (json!({"shadow_policies": ["slo"]}), "shadow_policies[0]"),
        (json!({"slo_p99_secs": -1.0}), "slo_p99_secs"),
        (json!({"slo_mode": "maybe", "slo_p99_secs": 2.0}), "slo_mode"),
        (json!({"trace_max_mb": 0}), "trace_max_mb"),
    ] {
        let mut b = json!({"name": "bad", "start_command": demo_cmd()});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = p.api_call(Method::POST, "/v1/endpoints", Some(b)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{}", r.text());
    }
    let id = p
        .create_demo(
            "rehearse",
            json!({"active_workers": 0, "max_workers": 3, "concurrency_per_worker": 1, "idle_timeout_secs": 1,
                   "scale_down_delay_secs": 2, "shadow_policies": ["knative", "fixed-keepalive"],
                   "env": {"DEMO_STARTUP_DELAY_MS": "700"}}),
        )
        .await;
    let e = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!(e["shadow_policies"], json!(["knative", "fixed-keepalive"]));
    assert_eq!((e["trace_retention_hours"].as_u64(), e["trace_max_mb"].as_u64()), (Some(168), Some(64)));
    // A cold start, then a burst onto one worker (cap 1): queueing, more starts.
    assert_eq!(p.get(&id, "/sleep?ms=50").await.status, StatusCode::OK);
    for r in sleep_reqs(&p, &id, 5, 400) {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    let trace = eventually("six recorded requests", Duration::from_secs(20), async || {
        let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/trace?since=1h"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let t = r.text();
        (t.lines().count() == 7).then_some(t)
    })
    .await;
    let rows: Vec<(f64, f64)> = trace
        .lines()
        .skip(1)
        .map(|l| {
            let (a, s) = l.split_once(',').unwrap();
            (a.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    assert_eq!(trace.lines().next(), Some("arrival_s,service_s"));
    assert_eq!(rows[0].0, 0.0);
    assert!(rows[0].1 >= 0.05 && rows[0].1 < 0.7, "service is the worker's time, not the start: {trace}");
    assert!(rows[1..].iter().all(|r| r.1 >= 0.4), "{trace}");
    let starts = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/trace?since=1h&kind=starts"), None).await.text();
    assert!(starts.starts_with("cold_start_s\n"), "{starts}");
    let first: f64 = starts.lines().nth(1).expect("a recorded start").parse().unwrap();
    assert!(first >= 0.7, "{starts}");
    let (ok, out, err) = cli(&p, &["trace", "export", &id, "--since", "1h"]);
    assert!(ok, "{err}");
    assert_eq!(out, trace);

    // Scale-down decided (idle timeout 1 s, delay 2 s), then the audit and the shadows.
    eventually("scaled back to zero", Duration::from_secs(30), async || {
        events(&p, &id).await.first().is_some_and(|e| e["to"] == 0).then_some(())
    })
    .await;
    let (ok, out, err) = cli(&p, &["audit", &id, "--since", "1h"]);
    assert!(ok, "{out}{err}");
    let n = events(&p, &id).await.iter().filter(|e| e["kind"] == "decision").count();
    assert!(n >= 2, "{n}");
    assert!(out.starts_with(&format!("{n}/{n} decisions reproduce")), "{out}");
    let audit = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/audit?since=1h"), None).await.json();
    assert_eq!((audit["decisions"].as_u64(), audit["reproduced"].as_u64()), (Some(n as u64), Some(n as u64)));

    let shadow = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/shadow?since=10m"), None).await.json();
    let lines = shadow["lines"].as_array().unwrap();
    let names: Vec<&str> = lines.iter().map(|l| l["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["actual", "knative", "fixed-keepalive"], "{shadow}");
    for l in lines {
        let peak = l["points"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).max().unwrap();
        assert!(peak >= 1, "every line wanted a worker for the burst: {l}");
        assert!(l["gpu_seconds"].as_f64().unwrap() > 0.0, "{l}");
    }

    // The replay: each policy on the recorded traffic, then what happened.
    let (ok, out, err) = cli(&p, &["sim", "--endpoint", &id, "--since", "1h", "--policy", "default,knative", "--json"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "knative", "actual"]);
    for r in &rows {
        assert_eq!(r["requests"], 6, "{r}");
    }
    let actual = &rows[2];
    assert_eq!(actual["completed"], 6);
    assert!(actual["cold_start_hits"].as_u64().unwrap() >= 1, "{actual}");
    assert!(actual["gpu_seconds"].as_f64().unwrap() > 0.5, "{actual}");
    assert!(actual["p99_s"].as_f64().unwrap() >= 0.7, "the first request waited for its start: {actual}");
    let (ok, out, _) = cli(&p, &["sim", "--endpoint", &id, "--since", "1h"]);
    assert!(ok && out.contains("| actual |") && out.contains("| knative |"), "{out}");

    // Bad input names the field; another account sees nothing.
    for (q, field) in [("since=yesterday", "since"), ("kind=bogus", "kind"), ("since=1h&until=2h", "until")] {
        let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/trace?{q}"), None).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field);
    }
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/replay?policy=nope"), None).await;
    assert_eq!(r.json()["error"]["field"], "policy", "{}", r.text());
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/replay?policy=slo"), None).await;
    assert_eq!(r.json()["error"]["field"], "slo_p99_secs", "{}", r.text());
    // Refusals by the rate limit are recorded too (in the traffic buckets, not in the trace).
    let r =
        p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"max_requests_per_minute": 1}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let codes: Vec<StatusCode> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(p.get(&id, "/hello").await.status);
        }
        v
    };
    let refused = codes.iter().filter(|c| **c == StatusCode::TOO_MANY_REQUESTS).count() as u64;
    assert!(refused >= 1, "{codes:?}");
    eventually("the refusals in the traffic buckets", Duration::from_secs(20), async || {
        let t = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/traffic?since=1h&buckets=1"), None).await.json();
        (t["buckets"][0]["rejected_429"].as_u64() == Some(refused)).then_some(())
    })
    .await;
    let t = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/trace?since=1h"), None).await.text();
    assert_eq!(t.lines().count() as u64, 1 + 6 + (3 - refused), "served ones only: {t}");
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/traffic?since=99999999999999"), None).await;
    assert_eq!(r.json()["error"]["field"], "since", "{}", r.text());

    // The CLI sets the shadows (and clears them with "").
    let (ok, out, err) =
        cli(&p, &["endpoint", "update", &id, "--shadow-policy", "hpa", "--slo-p99-secs", "3", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&v["shadow_policies"], &v["slo_p99_secs"]), (&json!(["hpa"]), &json!(3.0)), "{v}");
    let (ok, out, _) = cli(&p, &["endpoint", "update", &id, "--shadow-policy", "", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["shadow_policies"], json!([]));
    let r = p.api_call(Method::POST, "/v1/accounts", Some(json!({"name": "mallory"}))).await;
    let other = r.json()["key"]["key"].as_str().unwrap().to_owned();
    for what in ["trace?since=1h", "replay", "audit", "shadow", "events"] {
        let r = p.api_as(&other, Method::GET, &format!("/v1/endpoints/{id}/{what}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slo_policy_retunes_on_recorded_traffic_and_advises_or_applies() {
    let p = Platform::start().await;
    // A target no cold start can meet (the worker takes 1.5 s to start): only a warm worker
    // keeps it, so the re-tune asks for one.
    let mk = async |name: &str, mode: &str| {
        p.create_demo(
            name,
            json!({"active_workers": 0, "max_workers": 2, "idle_timeout_secs": 1, "scale_down_delay_secs": 1,
                   "scaling_policy": "slo", "slo_p99_secs": 0.5, "slo_mode": mode, "shadow_policies": ["slo"],
                   "env": {"DEMO_STARTUP_DELAY_MS": "1500"}}),
        )
        .await
    };
    let advised = mk("advised", "advise").await;
    let applied = mk("applied", "apply").await;
    for id in [&advised, &applied] {
        for _ in 0..3 {
            assert_eq!(p.get(id, "/sleep?ms=20").await.status, StatusCode::OK);
        }
    }
    for (id, words) in [(&advised, "advice, not applied"), (&applied, "(applied)")] {
        let ev = eventually("an SLO re-tune", Duration::from_secs(40), async || {
            events(&p, id).await.into_iter().find(|e| e["kind"] == "retune")
        })
        .await;
        let reason = ev["reason"].as_str().unwrap();
        assert!(reason.contains(words) && reason.contains("target 0.5 s"), "{reason}");
        assert_eq!(ev["inputs"]["active_workers"], 1, "{ev}");
        assert_eq!(ev["inputs"]["met"], true, "{ev}");
        assert!(ev["inputs"]["predicted_p99_s"].as_f64().unwrap() <= 0.5, "{ev}");
    }
    // Applied: a worker is kept warm with no traffic; advised: the endpoint goes back to zero.
    p.wait_ready(&applied, 1).await;
    eventually("the advised endpoint at zero", Duration::from_secs(30), async || {
        p.workers_in(&advised, "ready").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(p.workers_in(&applied, "ready").await.len(), 1, "the applied setting keeps one warm");
    // The shadow `slo` line runs with the tuned setting on both.
    let shadow = p.api_call(Method::GET, &format!("/v1/endpoints/{advised}/shadow?since=10m"), None).await.json();
    let slo = shadow["lines"].as_array().unwrap().iter().find(|l| l["policy"] == "slo").expect("an slo line").clone();
    assert_eq!(slo["points"].as_array().unwrap().last().unwrap()[1], 1, "{shadow}");
    let (ok, out, err) = cli(&p, &["audit", &applied, "--since", "1h"]);
    assert!(ok, "{out}{err}");
}
