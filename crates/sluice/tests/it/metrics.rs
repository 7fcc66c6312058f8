//! `GET /metrics` (R7.3): Prometheus text from the control API, parsed with the Prometheus
//! project's own parser (`tests/py/parse_metrics.py`), and checked against what was done.
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// Scrapes and parses: every sample as `{"name", "labels", "value"}`.
async fn scrape(p: &Platform) -> Vec<Value> {
    let r = send(
        Method::GET,
        &format!("{}/metrics", p.api),
        &[("authorization".into(), format!("Bearer {}", p.key))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let mut child = std::process::Command::new(python())
        .arg(py_script("parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_parse_as_prometheus_text() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), &["--no-demo", "--metering-interval-secs", "1"]).await;
    // 30 requests a minute: a burst of 10 gets 3 through (a tenth of the minute) and 429s.
    let id = p.create_demo("m", json!({"max_requests_per_minute": 30})).await;
    p.wait_ready(&id, 1).await;
    let mut codes = std::collections::HashMap::new();
    for _ in 0..10 {
        *codes.entry(p.get(&id, "/hello").await.status.as_u16()).or_insert(0u64) += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) >= 1, "{codes:?}");
    // A private endpoint without a key: 401, counted too.
    let private = p.create_demo("private", json!({"public": false, "active_workers": 0})).await;
    assert_eq!(p.get(&private, "/").await.status, StatusCode::UNAUTHORIZED);
    // A queue endpoint with two completed jobs.
    let q = p
        .create(
            json!({"name": "q", "type": "queue", "delivery": "push", "start_command": demo_cmd(), "job_path": "/job"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let r = send(
            Method::POST,
            &format!("{}/v2/{q}/runsync", p.gateway),
            &[("authorization".into(), p.key.clone())],
            Bytes::from(json!({"input": {"x": 1}}).to_string()),
        )
        .await;
        assert_eq!(r.json()["status"], "COMPLETED", "{}", r.text());
    }

    // Metering runs every second: wait for GPU-seconds to show.
    let m = eventually("metered GPU-seconds", Duration::from_secs(20), async || {
        let m = scrape(&p).await;
        (value(&m, "sluice_gpu_seconds_total", &[("endpoint", &id)]).unwrap_or(0.0) > 0.0).then_some(m)
    })
    .await;
    let ep = [("endpoint", id.as_str())];
    for (code, n) in &codes {
        let c = code.to_string();
        assert_eq!(
            value(&m, "sluice_gateway_requests_total", &[("endpoint", &id), ("code", &c)]),
            Some(*n as f64),
            "code {code}"
        );
    }
    assert_eq!(
        value(&m, "sluice_gateway_rejected_requests_total", &[("endpoint", &id), ("limit", "rate_limit")]),
        codes.get(&429).map(|n| *n as f64)
    );
    assert_eq!(value(&m, "sluice_gateway_requests_total", &[("endpoint", &private), ("code", "401")]), Some(1.0));
    // Both histograms saw every response; the added latency never exceeds the total.
    let total = value(&m, "sluice_gateway_request_duration_seconds_count", &ep).unwrap();
    assert_eq!(total, 10.0);
    assert_eq!(value(&m, "sluice_gateway_added_latency_seconds_count", &ep), Some(10.0));
    assert!(
        value(&m, "sluice_gateway_added_latency_seconds_sum", &ep).unwrap()
            <= value(&m, "sluice_gateway_request_duration_seconds_sum", &ep).unwrap()
    );
    assert_eq!(
        value(&m, "sluice_gateway_request_duration_seconds_bucket", &[("endpoint", &id), ("le", "+Inf")]),
        Some(10.0)
    );
    assert_eq!(value(&m, "sluice_gateway_in_flight_requests", &ep), Some(0.0));
    assert!(value(&m, "sluice_gateway_connections_total", &[]).unwrap() >= 13.0);
    assert!(value(&m, "sluice_gateway_routing_table_version", &[]).unwrap() >= 1.0);
    // Workers, desired, cold starts.
    assert_eq!(value(&m, "sluice_workers", &[("endpoint", &id), ("state", "ready")]), Some(1.0));
    assert_eq!(value(&m, "sluice_workers_desired", &ep), Some(1.0));
    assert!(value(&m, "sluice_cold_start_duration_seconds_count", &ep).unwrap() >= 1.0);
    assert!(value(&m, "sluice_cold_start_duration_seconds_sum", &ep).unwrap() > 0.0);
    // The anatomy of those starts: the model's load is most of a process start.
    assert!(value(&m, "sluice_worker_start_phase_seconds_count", &[("phase", "load")]).unwrap() >= 1.0);
    assert!(value(&m, "sluice_worker_start_phase_seconds_count", &[("phase", "start")]).unwrap() >= 1.0);
    // Jobs of the queue endpoint, usage and cost.
    assert_eq!(value(&m, "sluice_jobs", &[("endpoint", &q), ("state", "COMPLETED")]), Some(2.0));
    assert_eq!(value(&m, "sluice_jobs", &[("endpoint", &q), ("state", "IN_QUEUE")]), Some(0.0));
    assert!(value(&m, "sluice_cost_usd_total", &ep).unwrap() > 0.0, "SIM is priced");
    assert_eq!(value(&m, "sluice_log_lines_dropped_total", &ep), Some(0.0));
    // The reconciler's own pace.
    assert!(value(&m, "sluice_reconcile_pass_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert!(value(&m, "sluice_reconcile_pass_duration_seconds_sum", &[]).unwrap() > 0.0);
    // No per-request labels: every sample's labels come from a small fixed set.
    for s in &m {
        for k in s["labels"].as_object().unwrap().keys() {
            assert!(
                ["endpoint", "code", "limit", "fault", "state", "le", "phase"].contains(&k.as_str()),
                "label {k} on {s}"
            );
        }
    }

    // Only the admin reads it: no key 401, another account's key 403.
    assert_eq!(
        send(Method::GET, &format!("{}/metrics", p.api), &[], Bytes::new()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let acct = p.api_call(Method::POST, "/v1/accounts", Some(json!({"name": "team"}))).await.json();
    let key = acct["key"]["key"].as_str().unwrap();
    let r = send(
        Method::GET,
        &format!("{}/metrics", p.api),
        &[("authorization".into(), format!("Bearer {key}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    p.stop();
}
