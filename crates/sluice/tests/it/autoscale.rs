//! Live autoscaling with real workers and shortened windows: bursts, scale-down one at a time,
//! no request lost while workers drain, and the limits' 429/503 answers.
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn events(p: &Platform, id: &str) -> Vec<Value> {
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/events?limit=1000"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut v = r.json()["events"].as_array().unwrap().clone();
    v.reverse(); // oldest first
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_up_within_the_rate_limit_and_quiet_brings_it_back_one_at_a_time() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "burst",
            json!({"active_workers": 1, "max_workers": 6, "concurrency_per_worker": 1,
                   "idle_timeout_secs": 1, "scale_down_delay_secs": 2}),
        )
        .await;
    p.wait_ready(&id, 1).await;
    // Eight requests of 4 s at once on one worker (cap 1): the scaler wants more than the
    // +200%/60 s limit allows, so it stops at 3 within the first minute.
    let reqs = sleep_reqs(&p, &id, 8, 4000);
    let ready = eventually("three ready workers", Duration::from_secs(20), async || {
        let r = p.workers_in(&id, "ready").await;
        (r.len() == 3).then_some(r)
    })
    .await;
    assert_eq!(ready.len(), 3);
    let evs = events(&p, &id).await;
    assert_eq!(evs[0]["from"], 1, "{evs:?}");
    assert_eq!(evs[0]["to"], 3, "{evs:?}");
    assert!(evs[0]["reason"].as_str().unwrap().contains("limited to 3 by +200%/60 s"), "{evs:?}");
    assert_eq!(evs[0]["inputs"]["preset"], "default");
    assert!(evs[0]["inputs"]["waiting"].as_u64().unwrap() > 0, "{evs:?}");
    // Every queued request is served (nothing is refused while capacity is being added).
    for r in reqs {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    // Quiet: back to active_workers, one worker per decision, drained workers stopped.
    eventually("back to one worker", Duration::from_secs(30), async || {
        (p.workers_in(&id, "ready").await.len() == 1 && p.workers_in(&id, "draining").await.is_empty()).then_some(())
    })
    .await;
    let downs: Vec<(u64, u64)> = events(&p, &id)
        .await
        .iter()
        .filter(|e| e["to"].as_u64() < e["from"].as_u64())
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(downs, [(3, 2), (2, 1)]);
    let (ok, out, _) = cli(&p, &["endpoint", "events", &id]);
    assert!(ok && out.contains("1 -> 3") && out.contains("2 -> 1"), "{out}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_loses_nothing_across_repeated_scale_downs() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "steady",
            json!({"active_workers": 0, "max_workers": 4, "concurrency_per_worker": 1,
                   "idle_timeout_secs": 1, "scale_down_delay_secs": 1}),
        )
        .await;
    // Waves: 4 concurrent clients, then 1, then 4, then 1 — each change drains workers while
    // requests are in flight. Every request must get its 200.
    let mut failures = Vec::new();
    let mut total = 0;
    for (clients, secs) in [(4usize, 4u64), (1, 4), (4, 4), (1, 4)] {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let url = format!("{}/e/{id}/sleep?ms=150", p.gateway);
                tokio::spawn(async move {
                    let mut bad = Vec::new();
                    let mut n = 0;
                    while tokio::time::Instant::now() < until {
                        let r = send(Method::GET, &url, &[], Bytes::new()).await;
                        n += 1;
                        if r.status != StatusCode::OK {
                            bad.push(format!("{} {}", r.status, r.text()));
                        }
                    }
                    (n, bad)
                })
            })
            .collect();
        for t in tasks {
            let (n, bad) = t.await.unwrap();
            total += n;
            failures.extend(bad);
        }
    }
    assert!(failures.is_empty(), "{} of {total} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(total > 50, "{total}");
    let evs = events(&p, &id).await;
    assert!(evs.iter().filter(|e| e["to"].as_u64() < e["from"].as_u64()).count() >= 2, "{evs:?}");
    let stopped = p.workers_in(&id, "stopped").await;
    assert!(!stopped.is_empty(), "some workers drained and stopped");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_at_max_and_503_when_the_queue_times_out() {
    let p = Platform::start().await;
    // One worker, cap 1, room for one waiting request: the third concurrent request is refused.
    let id = p
        .create_demo(
            "limited",
            json!({"active_workers": 1, "max_workers": 1, "concurrency_per_worker": 1, "queue_capacity": 1}),
        )
        .await;
    p.wait_ready(&id, 1).await;
    let slow = sleep_reqs(&p, &id, 2, 1500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = p.get(&id, "/sleep?ms=10").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "concurrency_limit");
    assert!(
        r.text().contains("fully autoscaled concurrency limit of 1 requests"),
        "the body names the limit: {}",
        r.text()
    );
    assert!(r.headers.contains_key("retry-after"));
    for s in slow {
        assert_eq!(s.await.unwrap(), StatusCode::OK, "the queued request is served");
    }
    // Below max workers, a wait that times out is a 503 (capacity is coming).
    let id2 = p
        .create(json!({"name": "slowstart", "start_command": "sleep 30", "active_workers": 0, "max_workers": 2,
                       "queue_timeout_secs": 1, "startup_timeout_secs": 60}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = p.get(&id2, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_worker_available");
    assert!(r.headers.contains_key("retry-after"));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_answer_429_and_the_status_page_shows_the_limits() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "rpm",
            json!({"active_workers": 1, "max_workers": 3, "concurrency_per_worker": 4, "max_requests_per_minute": 3}),
        )
        .await;
    p.wait_ready(&id, 1).await;
    // 3 per minute, smoothed: one at once, then one every 20 s.
    assert_eq!(p.get(&id, "/first").await.status, StatusCode::OK);
    let r = p.get(&id, "/second").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("3 requests per minute"), "{}", r.text());
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&after), "{after}");

    // Lift the limit; the status page shows seed 002's figures while a request runs.
    let r =
        p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"max_requests_per_minute": 0}))).await;
    assert_eq!(r.json()["max_requests_per_minute"], Value::Null, "{}", r.text());
    let slow = sleep_reqs(&p, &id, 1, 3000);
    let s = eventually("a running request on the status page", Duration::from_secs(10), async || {
        let s = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/status"), None).await.json();
        (s["running_requests"] == 1).then_some(s)
    })
    .await;
    assert_eq!(s["current_concurrency_limit"], 4);
    assert_eq!(s["fully_autoscaled_concurrency_limit"], 12);
    assert_eq!(s["max_requests_per_minute"], Value::Null);
    assert_eq!(s["queued_requests"], 0);
    assert_eq!(s["workers"]["ready"], 1);
    let (ok, out, _) = cli(&p, &["endpoint", "status", &id]);
    assert!(ok && out.contains("fully autoscaled concurrency limit  12") && out.contains("unlimited"), "{out}");
    for r in slow {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    p.stop();
}
