//! Queue endpoints (R6), push delivery: RunPod's client API under /v2 on the gateway, jobs pushed
//! to demo workers, durable across a kill -9 of the platform.
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn v2(p: &Platform, method: Method, path: &str, body: Option<Value>, extra: &[(&str, &str)]) -> Resp {
    let mut h: Vec<(String, String)> = vec![("authorization".into(), p.key.clone())]; // the bare key, as RunPod's docs send it
    h.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let bytes = match body {
        Some(b) => {
            h.push(("content-type".into(), "application/json".into()));
            Bytes::from(serde_json::to_vec(&b).unwrap())
        }
        None => Bytes::new(),
    };
    send(method, &format!("{}/v2{path}", p.gateway), &h, bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_through_push_workers_with_runpods_shapes() {
    let p = Platform::start().await;
    let q = p
        .create(json!({"name": "q", "type": "queue", "delivery": "push", "public": false, "start_command": demo_cmd(),
                       "job_path": "/job", "active_workers": 0, "max_workers": 2, "concurrency_per_worker": 4}))
        .await;
    assert_eq!((q["type"].as_str(), q["delivery"].as_str()), (Some("queue"), Some("push")), "{q}");
    let id = q["id"].as_str().unwrap().to_owned();

    // /run at zero workers: accepted at once, a worker starts, the job is pushed and completes.
    let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": {"prompt": "hello"}})), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let job = r.json();
    assert_eq!(job["status"], "IN_QUEUE");
    let job = job["id"].as_str().unwrap().to_owned();
    assert!(job.ends_with("-u1"), "{job}");
    let done = eventually("the job completed", Duration::from_secs(30), async || {
        let s = v2(&p, Method::GET, &format!("/{id}/status/{job}"), None, &[]).await.json();
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    // The worker got {"id", "input"} at job_path; its JSON answer is the output.
    assert_eq!(done["output"]["path"], "/job", "{done}");
    let sent: Value = serde_json::from_str(done["output"]["body"].as_str().unwrap()).unwrap();
    assert_eq!((sent["id"].as_str(), &sent["input"]), (Some(job.as_str()), &json!({"prompt": "hello"})));
    assert!(done["delayTime"].as_u64().is_some() && done["executionTime"].as_u64().is_some(), "{done}");
    assert!(done["workerId"].is_string());
    // Its timings: the wait, most of it for the worker started for it, and the run.
    let t = &done["timings"];
    assert_eq!((&t["queueMs"], &t["executionMs"]), (&done["delayTime"], &done["executionTime"]), "{done}");
    let (start, queue) = (t["startMs"].as_u64().unwrap(), t["queueMs"].as_u64().unwrap());
    assert!(start > 0 && start <= queue, "the job waited for its worker's start: {done}");

    // A webhook gets the status envelope, with the input, when the job ends.
    let (hook, got) = webhook_sink().await;
    let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": {"n": 7}, "webhook": hook})), &[]).await;
    let hooked = r.json()["id"].as_str().unwrap().to_owned();
    eventually("the job's webhook", Duration::from_secs(20), async || {
        got.lock()
            .unwrap()
            .iter()
            .any(|b| b.contains(&hooked) && b.contains("\"COMPLETED\"") && b.contains("\"n\":7"))
            .then_some(())
    })
    .await;

    // /runsync answers with the result; the id says it was synchronous.
    let r = v2(&p, Method::POST, &format!("/{id}/runsync"), Some(json!({"input": [1, 2]})), &[]).await;
    let s = r.json();
    assert_eq!(
        (s["status"].as_str(), s["id"].as_str().map(|i| i.starts_with("sync-"))),
        (Some("COMPLETED"), Some(true)),
        "{s}"
    );
    // The same Idempotency-Key returns the same job.
    let a = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": 1})), &[("idempotency-key", "k1")])
        .await
        .json();
    let b = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": 2})), &[("idempotency-key", "k1")])
        .await
        .json();
    assert_eq!(a["id"], b["id"]);
    // The stream key is always there; health counts jobs and workers.
    let s = v2(&p, Method::GET, &format!("/{id}/stream/{job}"), None, &[]).await.json();
    assert_eq!((s["status"].as_str(), s["stream"].as_array().map(Vec::len)), (Some("COMPLETED"), Some(0)), "{s}");
    let h = eventually("health counts", Duration::from_secs(10), async || {
        let h = v2(&p, Method::GET, &format!("/{id}/health"), None, &[]).await.json();
        (h["jobs"]["completed"].as_u64() >= Some(3)).then_some(h)
    })
    .await;
    assert!(h["workers"]["ready"].as_u64() >= Some(1), "{h}");

    // Errors: no key 401, no input 400, unknown job 404, bad policy 400, an http endpoint 400.
    let r = send(Method::POST, &format!("{}/v2/{id}/run", p.gateway), &[], Bytes::from("{\"input\":1}")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"nope": 1})), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(
        v2(&p, Method::GET, &format!("/{id}/status/0000aaaa-none"), None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": 1, "policy": {"ttl": 5}})), &[]).await;
    assert!(r.status == StatusCode::BAD_REQUEST && r.text().contains("policy.ttl"), "{}", r.text());
    let http = p.create_demo("plain", json!({})).await;
    assert_eq!(
        v2(&p, Method::POST, &format!("/{http}/run"), Some(json!({"input": 1})), &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    // Bodies over RunPod's limits (10 MB /run, 20 MB /runsync): 413 with a JSON error, no job.
    let before = v2(&p, Method::GET, &format!("/{id}/health"), None, &[]).await.json()["jobs"].clone();
    let big = json!({"input": {"blob": "x".repeat(10 * 1024 * 1024)}});
    let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(big.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("10 MB"), "{}", r.text());
    let huge = json!({"input": {"blob": "x".repeat(20 * 1024 * 1024)}});
    let r = v2(&p, Method::POST, &format!("/{id}/runsync"), Some(huge), &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("20 MB"), "{}", r.text());
    assert_eq!(v2(&p, Method::GET, &format!("/{id}/health"), None, &[]).await.json()["jobs"], before);
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_a_crash_and_can_be_cancelled_or_purged() {
    let p = Platform::start().await;
    // Workers that never become healthy: jobs stay queued.
    let q = p
        .create(json!({"name": "stuck", "type": "queue", "delivery": "push", "start_command": "exec sleep 300", "active_workers": 0,
                       "max_workers": 1, "startup_timeout_secs": 600}))
        .await;
    let id = q["id"].as_str().unwrap().to_owned();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let r = v2(&p, Method::POST, &format!("/{id}/run"), Some(json!({"input": i})), &[]).await.json();
        jobs.push(r["id"].as_str().unwrap().to_owned());
    }
    let dir = p.kill9();
    let p = Platform::start_in(dir, &["--no-demo"]).await;
    for j in &jobs {
        let s = v2(&p, Method::GET, &format!("/{id}/status/{j}"), None, &[]).await.json();
        assert_eq!(s["status"], "IN_QUEUE", "accepted jobs survive a kill -9: {s}");
    }
    let c = v2(&p, Method::POST, &format!("/{id}/cancel/{}", jobs[0]), None, &[]).await.json();
    assert_eq!(c["status"], "CANCELLED");
    let r = v2(&p, Method::POST, &format!("/{id}/purge-queue"), None, &[]).await.json();
    assert_eq!(r, json!({"removed": 2, "status": "completed"}));
    let h = v2(&p, Method::GET, &format!("/{id}/health"), None, &[]).await.json();
    assert_eq!((h["jobs"]["inQueue"].as_u64(), h["jobs"]["failed"].as_u64()), (Some(0), Some(0)), "{h}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_timeouts_and_ttl() {
    let p = Platform::start().await;
    let mk = async |name: &str, path: &str| {
        let q = p
            .create(
                json!({"name": name, "type": "queue", "delivery": "push", "start_command": demo_cmd(), "job_path": path,
                           "active_workers": 1, "max_workers": 1}),
            )
            .await;
        q["id"].as_str().unwrap().to_owned()
    };
    // The demo worker answers POST /ws with 405: the job fails with the answer; retry requeues it.
    let bad = mk("bad", "/ws").await;
    let slow = mk("slow", "/sleep?ms=8000").await;
    p.wait_ready(&bad, 1).await;
    let j = v2(&p, Method::POST, &format!("/{bad}/run"), Some(json!({"input": 1})), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = eventually("FAILED", Duration::from_secs(20), async || {
        let s = v2(&p, Method::GET, &format!("/{bad}/status/{j}"), None, &[]).await.json();
        (s["status"] == "FAILED").then_some(s)
    })
    .await;
    assert!(failed["error"].as_str().unwrap().contains("405"), "{failed}");
    let r = v2(&p, Method::POST, &format!("/{bad}/retry/{j}"), None, &[]).await.json();
    assert_eq!(r["status"], "IN_QUEUE", "{r}");
    let again = eventually("FAILED again", Duration::from_secs(20), async || {
        let s = v2(&p, Method::GET, &format!("/{bad}/status/{j}"), None, &[]).await.json();
        (s["status"] == "FAILED").then_some(s)
    })
    .await;
    assert_eq!(again["retries"], 1, "{again}");
    // A completed job cannot be retried.
    let ok = mk("ok", "/job").await;
    p.wait_ready(&ok, 1).await;
    let s = v2(&p, Method::POST, &format!("/{ok}/runsync"), Some(json!({"input": 1})), &[]).await.json();
    assert_eq!(s["status"], "COMPLETED");
    let r = v2(&p, Method::POST, &format!("/{ok}/retry/{}", s["id"].as_str().unwrap()), None, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Longer than its execution timeout: TIMED_OUT.
    p.wait_ready(&slow, 1).await;
    let body = json!({"input": 1, "policy": {"executionTimeout": 5000}});
    let j =
        v2(&p, Method::POST, &format!("/{slow}/run"), Some(body), &[]).await.json()["id"].as_str().unwrap().to_owned();
    let to = eventually("TIMED_OUT", Duration::from_secs(20), async || {
        let s = v2(&p, Method::GET, &format!("/{slow}/status/{j}"), None, &[]).await.json();
        (s["status"] == "TIMED_OUT").then_some(s)
    })
    .await;
    assert!(to["executionTime"].as_u64() >= Some(5000), "{to}");
    // TTL: the job is deleted 10 s after submission, running or not; status then 404.
    let body = json!({"input": 1, "policy": {"ttl": 10000}});
    let j =
        v2(&p, Method::POST, &format!("/{slow}/run"), Some(body), &[]).await.json()["id"].as_str().unwrap().to_owned();
    eventually("deleted by its TTL", Duration::from_secs(20), async || {
        (v2(&p, Method::GET, &format!("/{slow}/status/{j}"), None, &[]).await.status == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    p.stop();
}

/// Push delivery across a kill -9: the jobs the dead process had pushed can never be answered
/// to it, and the new process did not push them, so it puts them back in the queue (at least
/// once) and they run again on the adopted workers. 200 jobs of about 1 s on two workers of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_running_at_a_kill9_are_settled_after_the_restart() {
    let p = Platform::start().await;
    let e = p
        .create(json!({"name": "inflight", "type": "queue", "delivery": "push", "start_command": demo_cmd(),
                       "job_path": "/_demo/job", "active_workers": 2, "max_workers": 2, "concurrency_per_worker": 5,
                       "env": {"DEMO_LOG_REQUESTS": "1"}}))
        .await;
    let ep = e["id"].as_str().unwrap().to_owned();
    p.wait_ready(&ep, 2).await;
    let crash = Crash {
        n: 200,
        input: json!({"sleep_ms": 1000}),
        done_first: 20,
        down: Duration::from_millis(500),
        args: &["--no-demo"],
        bound: Duration::from_secs(90),
    };
    let (p, jobs, settled) = crash_with_jobs_in_flight(p, &ep, crash).await;
    let starts = job_starts(&p.data_dir(), &ep);
    let twice: Vec<&String> = jobs.iter().filter(|j| starts.get(*j).copied().unwrap_or(0) > 1).collect();
    eprintln!("push: all {} jobs COMPLETED {settled:?} after the restart; {} ran twice", jobs.len(), twice.len());
    assert!(jobs.iter().all(|j| starts.contains_key(j)), "every job ran");
    assert!(twice.len() <= 10, "{} jobs ran twice: {twice:?}", twice.len());
    p.stop();
}
