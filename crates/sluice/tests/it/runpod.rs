//! RunPod compatibility (R6.2) with RunPod's own SDK, unmodified (PyPI `runpod`, installed by
//! `scripts/python.sh`): its client against Sluice's `/v2` API, and workers built on
//! `runpod.serverless.start()` run by Sluice as process workers that take jobs with RunPod's
//! worker protocol (pull delivery).
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// Pings every second, so that three missed ones (a dead worker) take seconds, not 30.
const FAST_PINGS: &[&str] = &["--no-demo", "--worker-ping-interval-ms", "1000"];

/// A queue endpoint whose workers run `tests/py/worker.py` in `mode`.
async fn sdk_endpoint(p: &Platform, name: &str, mode: &str, extra: Value) -> String {
    let mut body = json!({
        "name": name, "type": "queue", "public": false, "start_command": sdk_worker_cmd(),
        "active_workers": 1, "max_workers": 1, "startup_timeout_secs": 60,
        // No network here for the SDK's startup check that dials 8.8.8.8.
        "env": {"MODE": mode, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true"},
    });
    for (k, v) in extra.as_object().expect("object") {
        if k == "env" {
            for (ek, ev) in v.as_object().unwrap() {
                body["env"][ek] = ev.clone();
            }
        } else {
            body[k] = v.clone();
        }
    }
    let e = p.create(body).await;
    assert_eq!((e["type"].as_str(), e["delivery"].as_str()), (Some("queue"), Some("pull")), "{e}");
    e["id"].as_str().unwrap().to_owned()
}

async fn v2(p: &Platform, key: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
    let h = vec![("authorization".to_owned(), format!("Bearer {key}"))];
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(method, &format!("{}/v2{path}", p.gateway), &h, bytes).await
}

async fn job_state(p: &Platform, ep: &str, job: &str) -> Value {
    v2(p, &p.key, Method::GET, &format!("/{ep}/status/{job}"), None).await.json()
}

/// A process's environment, from /proc.
fn environ(pid: u64) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn signal_group(pid: u64, sig: nix::sys::signal::Signal) {
    // Each worker leads its own process group (the SDK's heartbeat is a child process).
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal the worker's group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runpods_client_and_sdk_workers_work_unmodified() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), FAST_PINGS).await;
    let sync = sdk_endpoint(&p, "sync", "sync", json!({})).await;
    let many = sdk_endpoint(&p, "async4", "async", json!({"env": {"CONCURRENCY": "4"}})).await;
    let one = sdk_endpoint(&p, "async1", "async", json!({"env": {"CONCURRENCY": "1"}})).await;
    let gen_ep = sdk_endpoint(&p, "generator", "generator", json!({})).await;
    for id in [&sync, &many, &one, &gen_ep] {
        p.wait_ready(id, 1).await;
    }

    // The worker was given RunPod's variables: URLs on the gateway that already carry a query,
    // its own id, and a token of its own.
    let w = &p.workers(&sync).await[0];
    let env: std::collections::HashMap<_, _> = environ(w["pid"].as_u64().unwrap()).into_iter().collect();
    let wid = w["id"].as_str().unwrap();
    assert_eq!(env["RUNPOD_POD_ID"], wid);
    assert_eq!(env["RUNPOD_WEBHOOK_GET_JOB"], format!("{}/v2/{sync}/job-take/$ID?gpu=SIM", p.gateway));
    assert_eq!(env["RUNPOD_PING_INTERVAL"], "1000");
    let token = env["RUNPOD_AI_API_KEY"].clone();
    // The token works for that worker's protocol calls only: not for the client API, not for
    // another worker, not on another endpoint.
    let gw = p.gateway.clone();
    let raw = |path: String| {
        let (token, gw) = (token.clone(), gw.clone());
        async move { send(Method::GET, &format!("{gw}/v2{path}"), &[("authorization".into(), token)], Bytes::new()).await }
    };
    assert_eq!(raw(format!("/{sync}/ping/{wid}?gpu=SIM")).await.status, StatusCode::OK);
    assert_eq!(raw(format!("/{sync}/health")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(raw(format!("/{sync}/ping/aaaaaaaaaaaa?gpu=SIM")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(raw(format!("/{many}/job-take/{wid}?gpu=SIM")).await.status, StatusCode::UNAUTHORIZED);
    // And a user key is not a worker token.
    let r = v2(&p, &p.key, Method::GET, &format!("/{sync}/job-take/{wid}?gpu=SIM"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("RUNPOD_AI_API_KEY"));

    // RunPod's client, step by step: see tests/py/client.py.
    let out = tokio::process::Command::new(python())
        .arg(py_script("client.py"))
        .args([&p.gateway, &p.key, &sync, &many, &one, &gen_ep])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out).await.expect("client.py finished").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "client.py:\n{stdout}\n{stderr}\nplatform:\n{}",
        p.stderr()
    );

    // refresh_worker replaced the worker, and that was not counted as a crash.
    let workers = p.workers(&sync).await;
    let old = workers.iter().find(|w| w["id"] == wid).expect("the first worker is listed");
    assert_eq!(old["state"], "stopped", "{old}");
    assert!(old["reason"].as_str().unwrap().contains("refresh_worker"), "{old}");
    assert_eq!(p.workers_in(&sync, "failed").await.len(), 0, "{workers:?}");
    // The cancelled and timed-out jobs were stopped on the worker itself (its own log says so).
    let logs = p.data_dir().join("logs").join(&one);
    let said: String = std::fs::read_dir(&logs)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
        .collect();
    assert_eq!(said.matches("Job stopped.").count(), 2, "the SDK's log:\n{said}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sdk_worker_is_replaced_and_its_job_runs_on_another() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), FAST_PINGS).await;
    let ep = sdk_endpoint(&p, "w", "sync", json!({"max_workers": 2})).await;
    p.wait_ready(&ep, 1).await;

    // 1. A worker that hangs (SIGSTOP: no pings, no result) misses three heartbeats: it is
    //    presumed dead, replaced, and its job goes back to the queue and completes elsewhere.
    // 2. A worker killed mid-job (SIGKILL): the same, found by its exit.
    for (sig, why) in [(nix::sys::signal::Signal::SIGSTOP, "heartbeats"), (nix::sys::signal::Signal::SIGKILL, "")] {
        let r = v2(&p, &p.key, Method::POST, &format!("/{ep}/run"), Some(json!({"input": {"sleep": 4}}))).await;
        let job = r.json()["id"].as_str().unwrap().to_owned();
        let running = eventually("the job runs", Duration::from_secs(30), async || {
            let s = job_state(&p, &ep, &job).await;
            (s["status"] == "IN_PROGRESS").then_some(s)
        })
        .await;
        let victim = running["workerId"].as_str().unwrap().to_owned();
        let pid = p.workers(&ep).await.iter().find(|w| w["id"] == victim.as_str()).unwrap()["pid"].as_u64().unwrap();
        signal_group(pid, sig);
        let done = eventually("the job completes on another worker", Duration::from_secs(60), async || {
            let s = job_state(&p, &ep, &job).await;
            (s["status"] == "COMPLETED").then_some(s)
        })
        .await;
        assert_ne!(done["workerId"], victim.as_str(), "{done}");
        assert_eq!(done["retries"], 1, "{done}");
        assert_eq!(done["output"]["echo"], json!({"sleep": 4}), "{done}");
        let dead = p.workers(&ep).await.into_iter().find(|w| w["id"] == victim.as_str()).unwrap();
        assert_eq!(dead["state"], "failed", "{dead}");
        assert!(dead["reason"].as_str().unwrap().contains(why), "{dead}");
        assert!(!alive(pid as u32), "the hung worker's process is gone");
    }
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_for_sdk_workers_all_complete_after_a_kill9_restart() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), FAST_PINGS).await;
    let ep = sdk_endpoint(&p, "r", "sync", json!({})).await;
    p.wait_ready(&ep, 1).await;
    let mut jobs = Vec::new();
    for i in 0..6 {
        let r =
            v2(&p, &p.key, Method::POST, &format!("/{ep}/run"), Some(json!({"input": {"i": i, "sleep": 0.3}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        jobs.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    // Killed with jobs queued and one running; the worker process outlives it. The platform
    // comes back on the same gateway address (the one its workers were given).
    let gateway_addr = p.gateway.trim_start_matches("http://").to_owned();
    let dir = p.kill9();
    let mut args = FAST_PINGS.to_vec();
    args.extend(["--gateway-addr", &gateway_addr]);
    let p = Platform::start_in(dir, &args).await;
    for job in &jobs {
        let done = eventually("every job completes after the restart", Duration::from_secs(60), async || {
            let s = job_state(&p, &ep, job).await;
            (s["status"] == "COMPLETED").then_some(s)
        })
        .await;
        assert!(done["output"]["echo"]["i"].is_u64(), "{done}");
    }
    let h = v2(&p, &p.key, Method::GET, &format!("/{ep}/health"), None).await.json();
    assert_eq!((h["jobs"]["completed"].as_u64(), h["jobs"]["inQueue"].as_u64()), (Some(6), Some(0)), "{h}");
    p.stop();
}

/// Jobs *running* at a kill -9 of the platform (not only queued ones) all end: the SDK finishes
/// them while the platform is down and drops the results it cannot deliver; after the restart,
/// the adopted workers' pings no longer list those jobs, so they go back to the queue and run
/// again (at least once). 200 jobs of about 1 s on two workers of 5 at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_running_at_a_kill9_are_settled_after_the_restart() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), FAST_PINGS).await;
    let ep = sdk_endpoint(
        &p,
        "inflight",
        "async",
        json!({"active_workers": 2, "max_workers": 2, "env": {"CONCURRENCY": "5"}}),
    )
    .await;
    p.wait_ready(&ep, 2).await;
    let crash = Crash {
        n: 200,
        input: json!({"sleep": 1.0}),
        done_first: 20,
        down: Duration::from_millis(2500),
        args: FAST_PINGS,
        bound: Duration::from_secs(90),
    };
    let (p, jobs, settled) = crash_with_jobs_in_flight(p, &ep, crash).await;
    let starts = job_starts(&p.data_dir(), &ep);
    let twice: Vec<&String> = jobs.iter().filter(|j| starts.get(*j).copied().unwrap_or(0) > 1).collect();
    eprintln!("pull: all {} jobs COMPLETED {settled:?} after the restart; {} ran twice", jobs.len(), twice.len());
    assert!(jobs.iter().all(|j| starts.contains_key(j)), "every job ran");
    // Only what was in flight at the kill runs again: at most the two workers' 5 slots each
    // (and what they had taken ahead).
    assert!(twice.len() <= 20, "{} jobs ran twice: {twice:?}", twice.len());
    let retried = v2(&p, &p.key, Method::GET, &format!("/{ep}/health"), None).await.json()["jobs"]["retried"].clone();
    // Each job that ran again counts a retry (and so does one whose take never reached the SDK).
    assert!(retried.as_u64().unwrap() >= twice.len() as u64, "retried {retried}, ran twice {}", twice.len());
    p.stop();
}
