//! Sleeping workers (issue 17), with real worker processes: the demo worker's sleep mode is
//! vLLM's (`POST /sleep?level=1`, `POST /wake_up`; asleep it refuses requests), with a cold
//! start of seconds and a wake of a fraction of one. A scaled-down worker sleeps; a burst at
//! zero wakes it (every request answered, the wait named in `x-sluice-wait`); failed sleeps and
//! wakes, GPUs taken back from a sleeper, the sleep TTL, a restart with a sleeper, the ledger's
//! sleeping class, and the phases of every start.
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A demo endpoint that scales to zero within a couple of seconds of idling, with sleep mode.
fn sleepy(extra: Value) -> Value {
    let mut body = json!({
        "active_workers": 0, "max_workers": 2, "idle_timeout_secs": 1, "scale_down_delay_secs": 1,
        "sleep_path": "/sleep?level=1", "wake_path": "/wake_up", "max_sleeping": 1,
        "env": {"DEMO_STARTUP_DELAY_MS": "3000", "DEMO_WAKE_DELAY_MS": "300"},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn until_state(p: &Platform, id: &str, state: &str, secs: u64) -> Value {
    eventually(&format!("a {state} worker of {id}"), Duration::from_secs(secs), async || {
        p.workers_in(id, state).await.into_iter().next()
    })
    .await
}

fn phases(w: &Value) -> Vec<String> {
    w["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_sleeps_and_a_burst_at_zero_wakes_it_with_every_request_answered() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), &["--no-demo", "--metering-interval-secs", "1"]).await;
    let id = p.create_demo("sleepy", sleepy(json!({}))).await;

    // The first request at zero pays the cold start, and says so.
    let r = p.get(&id, "/hello").await;
    assert_eq!(r.status, StatusCode::OK);
    let wait = r.headers["x-sluice-wait"].to_str().unwrap().to_owned();
    assert!(wait.starts_with("cold-start; "), "{wait}");
    // The anatomy of the request, as browsers' developer tools read it: the start it waited for.
    let timing = r.headers["server-timing"].to_str().unwrap().to_owned();
    let start_ms: f64 = timing
        .split(", ")
        .find_map(|p| p.strip_prefix("start;dur="))
        .unwrap_or_else(|| panic!("{timing}"))
        .parse()
        .unwrap();
    assert!(start_ms > 2900.0 && timing.contains("upstream;dur=") && timing.contains("gateway;dur="), "{timing}");
    let cold_pid = r.json()["pid"].as_u64().unwrap();
    let w = p.workers_in(&id, "ready").await.remove(0);
    assert_eq!(phases(&w), ["placed", "started", "healthy"]);
    let start = w["start"].as_str().unwrap().to_owned();
    assert!(start.starts_with("cold start ") && start.contains("model load 3."), "{start}");

    // Idle: drained, then asleep instead of stopped; the process stays.
    let asleep = until_state(&p, &id, "sleeping", 30).await;
    assert_eq!(asleep["pid"].as_u64(), Some(cold_pid));
    assert!(alive(cold_pid as u32));
    eventually("the sleep call answered", Duration::from_secs(10), async || {
        let w = p.workers(&id).await.into_iter().find(|w| w["id"] == asleep["id"])?;
        phases(&w).contains(&"slept".to_owned()).then_some(())
    })
    .await;
    let view = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!((view["workers"]["sleeping"].as_u64(), view["workers"]["ready"].as_u64()), (Some(1), Some(0)));
    // Metered as sleeping while asleep.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // A burst at zero wakes it: every request answered, well inside a cold start.
    let t = tokio::time::Instant::now();
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{}/e/{id}/burst/{i}", p.gateway);
            tokio::spawn(async move { send(Method::GET, &url, &[], Bytes::new()).await })
        })
        .collect();
    let mut waits = Vec::new();
    for b in burst {
        let r = b.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["pid"].as_u64(), Some(cold_pid), "the woken worker, not a new one");
        if let Some(w) = r.headers.get("x-sluice-wait") {
            waits.push(w.to_str().unwrap().to_owned());
        }
    }
    let took = t.elapsed();
    assert!(took < Duration::from_millis(2500), "woke in {took:?}, a cold start is 3 s");
    assert!(waits.iter().any(|w| w.starts_with("wake; ")), "{waits:?}");
    let w = p.workers_in(&id, "ready").await.remove(0);
    assert_eq!(w["id"], asleep["id"]);
    let ph = phases(&w);
    assert!(ph.ends_with(&["slept".into(), "wake_called".into(), "woke".into(), "healthy".into()]), "{ph:?}");
    let start = w["start"].as_str().unwrap();
    assert!(start.starts_with("woke in 0."), "{start}");
    let logs =
        p.api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?stream=platform&limit=200"), None).await.text();
    assert!(logs.contains("worker ready: cold start") && logs.contains("worker ready: woke in"), "{logs}");
    assert!(logs.contains("worker asleep") && logs.contains("waking worker"), "{logs}");

    // The anatomy in /metrics, and the sleeping seconds in the ledger.
    let m = p.api_call(Method::GET, "/metrics", None).await.text();
    assert!(m.contains(r#"sluice_worker_start_phase_seconds_count{phase="wake"} 1"#), "{m}");
    assert!(m.contains(r#"sluice_worker_start_phase_seconds_count{phase="load"}"#));
    let store = sluice_store::Store::open_sqlite(&p.data_dir().join("sluice.db")).await.unwrap();
    let worker = sluice_core::WorkerId::parse(w["id"].as_str().unwrap()).unwrap();
    let ledger = eventually("awake and asleep seconds in the ledger", Duration::from_secs(10), async || {
        let l = store.usage_by_class(&worker).await.ok()?;
        let asleep = l.iter().find(|(c, ..)| *c == sluice_core::billing::Class::Sleeping)?;
        let awake = l.iter().find(|(c, ..)| *c == sluice_core::billing::Class::Autoscaled)?;
        (asleep.1 >= 2 && awake.1 >= 3).then_some(l)
    })
    .await;
    let per =
        |c: sluice_core::billing::Class| ledger.iter().find(|x| x.0 == c).map(|x| x.2 as f64 / x.1 as f64).unwrap();
    let ratio = per(sluice_core::billing::Class::Sleeping) / per(sluice_core::billing::Class::Autoscaled);
    assert!((ratio - 0.1).abs() < 0.01, "a sleeping second costs a tenth: {ledger:?}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sleep_stops_the_worker_and_a_failed_wake_starts_a_fresh_one() {
    let p = Platform::start().await;
    let env = |k: &str| json!({"env": {"DEMO_STARTUP_DELAY_MS": "500", k: "1"}});
    let no_sleep = p.create_demo("nosleep", sleepy(env("DEMO_SLEEP_FAIL"))).await;
    let no_wake = p.create_demo("nowake", sleepy(env("DEMO_WAKE_FAIL"))).await;
    for id in [&no_sleep, &no_wake] {
        assert_eq!(p.get(id, "/").await.status, StatusCode::OK);
    }
    // The sleep call fails: stopped, as if it had not been asked to sleep.
    let stopped = eventually("the worker whose sleep failed stopped", Duration::from_secs(30), async || {
        p.workers(&no_sleep).await.into_iter().find(|w| w["state"] == "stopped")
    })
    .await;
    assert!(
        stopped["reason"].as_str().unwrap().starts_with("sleep failed (POST /sleep?level=1 answered 500"),
        "{stopped}"
    );
    assert!(p.workers_in(&no_sleep, "sleeping").await.is_empty());

    // Asleep fine, but its wake fails: that worker fails, and a fresh one answers the request.
    let asleep = until_state(&p, &no_wake, "sleeping", 30).await;
    let r = p.get(&no_wake, "/after").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers["x-sluice-wait"].to_str().unwrap().starts_with("cold-start; "));
    let failed = p.workers(&no_wake).await.into_iter().find(|w| w["id"] == asleep["id"]).unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["reason"], "wake failed: POST /wake_up answered 500 Internal Server Error");
    assert_ne!(r.json()["worker"], asleep["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_gives_its_gpu_to_another_endpoint_and_a_sleeper_past_its_ttl_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("one-gpu.toml");
    std::fs::write(
        &cfg,
        "[[nodes]]\nname = \"small\"\ndata_center = \"local\"\ngpus = [{ type = \"SIM\", count = 1 }]\n",
    )
    .unwrap();
    let p = Platform::start_in(dir, &["--no-demo", "--config", cfg.to_str().unwrap()]).await;
    let a = p.create_demo("a", sleepy(json!({"max_workers": 1, "env": {}}))).await;
    assert_eq!(p.get(&a, "/").await.status, StatusCode::OK);
    let sleeper = until_state(&p, &a, "sleeping", 30).await;
    assert_eq!(sleeper["gpus"], json!([0]), "a sleeper keeps its GPU");
    // Another endpoint needs that GPU: the sleeper is stopped to make room, not waited for.
    let b = p.create_demo("b", json!({"active_workers": 1, "max_workers": 1})).await;
    p.wait_ready(&b, 1).await;
    let gone = p.workers(&a).await.into_iter().find(|w| w["id"] == sleeper["id"]).unwrap();
    assert_eq!(gone["state"], "stopped");
    assert_eq!(gone["reason"], format!("asleep; stopped to free its GPUs for a worker of endpoint {b}"));

    // The TTL: a sleeper is stopped that long after it went to sleep.
    let c = p.create_demo("c", sleepy(json!({"max_workers": 1, "sleep_ttl_secs": 10, "env": {}}))).await;
    let r = p.api_call(Method::PATCH, &format!("/v1/endpoints/{b}"), Some(json!({"active_workers": 0}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(p.get(&c, "/").await.status, StatusCode::OK);
    let s = until_state(&p, &c, "sleeping", 60).await;
    let ended = eventually("the sleeper stopped after its TTL", Duration::from_secs(30), async || {
        p.workers(&c).await.into_iter().find(|w| w["id"] == s["id"] && w["state"] == "stopped")
    })
    .await;
    assert_eq!(ended["reason"], "asleep for 10 s (sleep_ttl_secs)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_stays_asleep_across_a_kill_9_and_wakes_after() {
    let p = Platform::start().await;
    let id = p.create_demo("sleepy", sleepy(json!({}))).await;
    assert_eq!(p.get(&id, "/").await.status, StatusCode::OK);
    let asleep = until_state(&p, &id, "sleeping", 30).await;
    eventually("the sleep call answered", Duration::from_secs(10), async || {
        let w = p.workers(&id).await.into_iter().find(|w| w["id"] == asleep["id"])?;
        phases(&w).contains(&"slept".to_owned()).then_some(())
    })
    .await;
    let pid = asleep["pid"].as_u64().unwrap() as u32;
    let p = Platform::start_in(p.kill9(), &["--no-demo"]).await;
    // Adopted, still asleep: the same process, not ready, not restarted.
    let again = until_state(&p, &id, "sleeping", 30).await;
    assert_eq!((again["id"].clone(), again["pid"].as_u64()), (asleep["id"].clone(), Some(u64::from(pid))));
    assert!(p.workers_in(&id, "ready").await.is_empty());
    let r = p.get(&id, "/woken").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["x-sluice-wait"].to_str().unwrap().starts_with("wake; "), "{:?}", r.headers);
    assert_eq!(r.json()["pid"].as_u64(), Some(u64::from(pid)));
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_settings_are_validated_and_refused_for_pull_workers() {
    let p = Platform::start().await;
    for (body, field) in [
        (json!({"name": "x", "start_command": "x", "max_sleeping": 1}), "sleep_path"),
        (
            json!({"name": "x", "start_command": "x", "max_sleeping": 1, "sleep_path": "/s", "wake_path": "w"}),
            "wake_path",
        ),
        (
            json!({"name": "x", "start_command": "x", "max_workers": 1, "max_sleeping": 2, "sleep_path": "/s", "wake_path": "/w"}),
            "max_sleeping",
        ),
        (
            json!({"name": "x", "start_command": "x", "type": "queue", "max_sleeping": 1, "sleep_path": "/s", "wake_path": "/w"}),
            "max_sleeping",
        ),
        (json!({"name": "x", "start_command": "x", "sleep_ttl_secs": 1}), "sleep_ttl_secs"),
    ] {
        let r = p.api_call(Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{}", r.text());
    }
    // The CLI sets them, and shows them.
    let (ok, out, err) = cli(
        &p,
        &[
            "endpoint",
            "create",
            "--name",
            "cli",
            "--start-command",
            &demo_cmd(),
            "--max-sleeping",
            "1",
            "--sleep-path",
            "/sleep?level=1",
            "--wake-path",
            "/wake_up",
        ],
    );
    assert!(ok, "{err}");
    let id = out.split_whitespace().find(|w| w.len() == 12).map(str::to_owned).unwrap_or_default();
    let list: Value = serde_json::from_str(&cli(&p, &["endpoint", "list", "--json"]).1).unwrap();
    let e = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "cli").unwrap().clone();
    assert_eq!((e["max_sleeping"].as_u64(), e["wake_path"].as_str()), (Some(1), Some("/wake_up")));
    let (ok, out, _) = cli(&p, &["endpoint", "get", e["id"].as_str().unwrap()]);
    assert!(ok && out.contains("up to 1 asleep (POST /sleep?level=1, wake POST /wake_up"), "{out} {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_sleeps_and_wakes_like_a_process() {
    let (p, _, image) = crate::docker::start_docker(tempfile::tempdir().unwrap()).await;
    let id = p
        .create(sleepy(json!({
            "image": image, "start_command": "exec /sluice demo-worker --host 0.0.0.0", "http_port": 9000,
            "name": "boxed", "env": {"DEMO_STARTUP_DELAY_MS": "1000", "DEMO_WAKE_DELAY_MS": "200"},
        })))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = p.get(&id, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    let worker = r.json()["worker"].as_str().unwrap().to_owned();
    let asleep = until_state(&p, &id, "sleeping", 60).await;
    assert_eq!(asleep["id"], worker.as_str());
    // The container keeps running while its worker sleeps.
    let running = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=io.sluice.worker={worker}")])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&running.stdout).trim().is_empty(), "its container still runs");
    // The anatomy of a container start has its image phase.
    assert!(phases(&asleep).contains(&"image".to_owned()), "{asleep}");
    let r = p.get(&id, "/again").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["worker"], worker.as_str());
    assert!(r.headers["x-sluice-wait"].to_str().unwrap().starts_with("wake; "));
    p.stop();
}
