//! Worker lifecycle with real processes: crash and replacement, health, startup timeout,
//! placement that must wait, volumes across replacement, scale-down by update, delete.
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_crashed_worker_is_replaced_and_the_volume_keeps_its_data() {
    let p = Platform::start().await;
    // The start command appends to a file on the network volume before it runs the worker.
    let cmd = format!("echo boot >> \"$SLUICE_VOLUME_DIR/boots.txt\"; {}", demo_cmd());
    let id = p
        .create(json!({"name": "crashy", "start_command": cmd, "network_volume": {"name": "shared", "mount_path": "/data"}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = p.wait_ready(&id, 1).await.remove(0);
    let r = send(Method::POST, &format!("{}/e/{id}/_demo/crash", p.gateway), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    let failed = eventually("the crash recorded", Duration::from_secs(15), || async {
        p.workers_in(&id, "failed").await.into_iter().next()
    })
    .await;
    assert_eq!(failed["id"], first["id"]);
    assert!(failed["reason"].as_str().unwrap().contains("exited with status 17"), "{failed}");
    let second = p.wait_ready(&id, 1).await.remove(0);
    assert_ne!(second["id"], first["id"]);
    assert_eq!(p.get(&id, "/").await.status, StatusCode::OK);
    let boots = read(&p.data_dir().join("volumes/shared/boots.txt"));
    assert_eq!(boots.lines().count(), 2, "{boots:?}");
    // The worker log files are kept.
    let log = read(&p.data_dir().join(format!("logs/{id}/{}.stderr.log", first["id"].as_str().unwrap())));
    assert!(log.contains("crashing on request"), "{log}");
    p.stop();
}

#[tokio::test]
async fn health_decides_rotation_and_startup_timeout_fails_workers() {
    let p = Platform::start().await;
    // Never healthy: fails after the startup timeout, and is replaced with back-off.
    let bad = p.create(json!({"name": "never", "start_command": "exec sleep 600", "startup_timeout_secs": 1})).await;
    let bad = bad["id"].as_str().unwrap().to_owned();
    let failed = eventually("startup timeout", Duration::from_secs(15), || async {
        p.workers_in(&bad, "failed").await.into_iter().next()
    })
    .await;
    assert!(failed["reason"].as_str().unwrap().contains("startup timeout"), "{failed}");
    assert!(!alive(failed["pid"].as_u64().unwrap() as u32), "a failed worker's process must be stopped");
    eventually("a replacement", Duration::from_secs(15), || async {
        p.workers(&bad).await.iter().any(|w| w["state"] == "starting" || w["state"] == "pending").then_some(())
    })
    .await;
    let r = p.get(&bad, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    p.api_call(Method::DELETE, &format!("/v1/endpoints/{bad}"), None).await;

    // A ready worker whose health check fails leaves rotation.
    let id = p.create_demo("sick", json!({"active_workers": 2})).await;
    let ready = p.wait_ready(&id, 2).await;
    let sick = ready[0]["id"].as_str().unwrap().to_owned();
    let port = ready[0]["address"].as_str().unwrap().to_owned();
    let r = send(Method::POST, &format!("http://{port}/_demo/unhealthy"), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    eventually("the sick worker out of rotation", Duration::from_secs(15), || async {
        p.workers_in(&id, "ready").await.iter().all(|w| w["id"] != sick.as_str()).then_some(())
    })
    .await;
    for _ in 0..10 {
        let r = p.get(&id, "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.json()["worker"], sick.as_str());
    }
    p.stop();
}

#[tokio::test]
async fn placement_waits_with_a_reason_and_scale_down_drains() {
    let p = Platform::start().await;
    // No A100 in the default inventory: pending with the reason.
    let none = p.create(json!({"name": "a100", "start_command": "true", "gpu_type": "A100"})).await;
    let none = none["id"].as_str().unwrap().to_owned();
    let w = eventually("a pending worker", Duration::from_secs(10), || async {
        p.workers_in(&none, "pending").await.into_iter().find(|w| w["reason"].as_str().unwrap_or("").contains("A100"))
    })
    .await;
    assert!(w["reason"].as_str().unwrap().contains("no node"), "{w}");

    // Eight SIM GPUs: one 8-GPU worker fits, the second waits for GPUs.
    let big = p.create_demo("big", json!({"gpus_per_worker": 8, "active_workers": 2})).await;
    p.wait_ready(&big, 1).await;
    let w = eventually("the second worker pending", Duration::from_secs(10), || async {
        p.workers_in(&big, "pending").await.into_iter().find(|w| w["reason"].as_str().unwrap_or("").contains("free"))
    })
    .await;
    assert!(w["reason"].as_str().unwrap().contains("8 free SIM"), "{w}");

    // Scaling down by update: the pending one goes; the ready one stays and keeps serving.
    let r = p.api_call(Method::PATCH, &format!("/v1/endpoints/{big}"), Some(json!({"active_workers": 1}))).await;
    assert_eq!(r.status, StatusCode::OK);
    eventually("no pending worker", Duration::from_secs(10), || async {
        p.workers_in(&big, "pending").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(p.workers_in(&big, "ready").await.len(), 1);

    // A request in flight on a worker that is removed still finishes (drain).
    let slow = tokio::spawn({
        let gw = p.gateway.clone();
        let big = big.clone();
        async move { send(Method::GET, &format!("{gw}/e/{big}/sleep?ms=1500"), &[], Bytes::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = p.api_call(Method::DELETE, &format!("/v1/endpoints/{big}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "in-flight request lost on delete: {}", r.text());
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_rolls_one_worker_at_a_time_and_no_request_fails() {
    let p = Platform::start().await;
    let id = p.create_demo("roll", json!({"active_workers": 2, "max_workers": 3, "env": {"DEMO_V": "1"}})).await;
    p.wait_ready(&id, 2).await;
    let first_event = p
        .api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?stream=platform&limit=5000"), None)
        .await
        .json()["lines"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // Steady traffic through the whole update.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), format!("{}/e/{id}/hello", p.gateway));
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = send(Method::GET, &url, &[], Bytes::new()).await;
                let v = if r.status == StatusCode::OK {
                    r.json()["demo_env"]["DEMO_V"].as_str().map(str::to_owned)
                } else {
                    None
                };
                seen.push((r.status, v));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (api, key, id) = (p.api.clone(), p.key.clone(), id.clone());
        move || {
            let o = std::process::Command::new(BIN)
                .args(["endpoint", "update", &id, "--env", "DEMO_V=2", "--wait", "--api", &api, "--api-key", &key])
                .env("SLUICE_PROGRESS", "always")
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("rolling update: 2/2 workers on the new version ready, 0 of the old version still running"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.await.unwrap();
    assert!(seen.iter().all(|(s, _)| *s == StatusCode::OK), "a request failed during the update: {seen:?}");
    assert!(seen.iter().any(|(_, v)| v.as_deref() == Some("1")) && seen.last().unwrap().1.as_deref() == Some("2"));

    // One at a time: each new worker is launched only after an old one began draining (the
    // first one excepted), so there is never more than one extra worker.
    let events: Vec<String> = p
        .api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?stream=platform&limit=5000"), None)
        .await
        .json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["id"].as_i64().unwrap() > first_event)
        .map(|l| l["line"].as_str().unwrap().to_owned())
        .filter(|l| l.starts_with("worker launched") || l.starts_with("worker draining"))
        .collect();
    let kinds: Vec<char> = events.iter().map(|l| if l.starts_with("worker launched") { 'L' } else { 'D' }).collect();
    assert_eq!(kinds, vec!['L', 'D', 'L', 'D'], "{events:#?}");
    assert!(events[1].contains("rolling update"), "{events:#?}");
    let ws = p.workers_in(&id, "ready").await;
    assert_eq!(ws.len(), 2);

    // --quiet: no progress.
    let (ok, _, err) = cli(&p, &["endpoint", "update", &id, "--env", "DEMO_V=3", "--wait", "--quiet"]);
    assert!(ok && !err.contains("rolling update"), "{err}");
    p.stop();
}
