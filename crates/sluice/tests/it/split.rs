//! Separate processes (R8.3): `sluice control` with two `sluice gateway`s in front. The gateways
//! follow the routing table over HTTP, the autoscaler sums their reports, the queue API works
//! through any of them, and they keep serving while the control plane is away.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGINT);
        for _ in 0..400 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `sluice control` on `api`; returns it once addresses.json is written.
async fn control(dir: &std::path::Path, api: &str) -> Proc {
    let _ = std::fs::remove_file(dir.join("addresses.json"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log")).unwrap();
    let child = Command::new(BIN)
        .args(["control", "--no-demo", "--api-addr", api, "--gateway-addr", "127.0.0.1:1", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    eventually("the control plane up", Duration::from_secs(30), async || {
        dir.join("addresses.json").exists().then_some(())
    })
    .await;
    Proc(child)
}

async fn gateway(api: &str, key: &str, port: u16, id: &str, metrics: Option<u16>) -> Proc {
    let mut c = Command::new(BIN);
    c.args(["gateway", "--control", &format!("http://{api}"), "--api-key", key, "--id", id])
        .args(["--gateway-addr", &format!("127.0.0.1:{port}")]);
    if let Some(m) = metrics {
        c.args(["--metrics-addr", &format!("127.0.0.1:{m}")]);
    }
    let child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    eventually("the gateway listening", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    })
    .await;
    Proc(child)
}

async fn call(method: Method, url: &str, key: &str, body: Option<Value>) -> Resp {
    let b = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    send(
        method,
        url,
        &[("authorization".into(), format!("Bearer {key}")), ("content-type".into(), "application/json".into())],
        b,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_and_two_gateways_in_separate_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("control");
    let api = format!("127.0.0.1:{}", free_port());
    let ctl = control(&dir, &api).await;
    let key = std::fs::read_to_string(dir.join("admin.key")).unwrap().trim().to_owned();
    let (pa, pb, ma) = (free_port(), free_port(), free_port());
    let _ga = gateway(&api, &key, pa, "ga", Some(ma)).await;
    let _gb = gateway(&api, &key, pb, "gb", None).await;
    let v1 = |path: &str| format!("http://{api}/v1{path}");

    // Scale from zero through gateway B: its report of a waiting request wakes the autoscaler.
    let e = call(
        Method::POST,
        &v1("/endpoints"),
        &key,
        Some(json!({"name": "e", "public": true, "start_command": demo_cmd(),
        "active_workers": 0, "max_workers": 2, "concurrency_per_worker": 8})),
    )
    .await;
    assert_eq!(e.status, StatusCode::CREATED, "{}", e.text());
    let id = e.json()["id"].as_str().unwrap().to_owned();
    let through = |port: u16, path: &str| format!("http://127.0.0.1:{port}/e/{id}{path}");
    let r = eventually("the endpoint routable at gateway B", Duration::from_secs(20), async || {
        let r = send(Method::GET, &through(pb, "/hello"), &[], Bytes::new()).await;
        (r.status != StatusCode::NOT_FOUND).then_some(r)
    })
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(send(Method::GET, &through(pa, "/hello"), &[], Bytes::new()).await.status, StatusCode::OK);

    // The control plane sees the sum of both gateways' in-flight requests.
    let load: Vec<_> = [pa, pa, pb, pb, pb]
        .into_iter()
        .map(|port| {
            let url = through(port, "/sleep?ms=3000");
            tokio::spawn(async move { send(Method::GET, &url, &[], Bytes::new()).await.status })
        })
        .collect();
    eventually("5 running requests summed over both gateways", Duration::from_secs(10), async || {
        let s = call(Method::GET, &v1(&format!("/endpoints/{id}/status")), &key, None).await.json();
        (s["running_requests"] == 5).then_some(())
    })
    .await;
    for l in load {
        assert_eq!(l.await.unwrap(), StatusCode::OK);
    }
    // The control plane's /metrics sums both gateways: 2 + 5 responses.
    let want = format!("sluice_gateway_requests_total{{endpoint=\"{id}\",code=\"200\"}} 7");
    eventually("both gateways' responses in /metrics", Duration::from_secs(10), async || {
        let m = call(Method::GET, &format!("http://{api}/metrics"), &key, None).await.text();
        m.contains(&want).then_some(())
    })
    .await;
    let own = |m: u16| async move {
        send(Method::GET, &format!("http://127.0.0.1:{m}/metrics"), &[], Bytes::new()).await.text()
    };
    assert!(own(ma).await.contains("sluice_gateway_control_plane_up{} 1"), "{}", own(ma).await);
    // Both gateways' recorded requests reach the control plane's store: all 7 are in the trace.
    eventually("both gateways' requests in the recorded trace", Duration::from_secs(10), async || {
        let t = call(Method::GET, &v1(&format!("/endpoints/{id}/trace?since=1h")), &key, None).await.text();
        (t.lines().count() == 8).then_some(())
    })
    .await;

    // The queue API through a gateway (forwarded to the control plane; jobs live in its store).
    let q = call(
        Method::POST,
        &v1("/endpoints"),
        &key,
        Some(json!({"name": "q", "type": "queue", "start_command": demo_cmd(),
        "active_workers": 1})),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send(
        Method::POST,
        &format!("http://127.0.0.1:{pa}/v2/{q}/runsync"),
        &[("authorization".into(), key.clone())],
        Bytes::from(json!({"input": {"n": 1}}).to_string()),
    )
    .await;
    assert_eq!(r.json()["status"], "COMPLETED", "{}", r.text());

    // The control plane dies: both gateways keep serving from their last table.
    let mut ctl = ctl;
    let _ = ctl.0.kill();
    let _ = ctl.0.wait();
    for port in [pa, pb] {
        assert_eq!(send(Method::GET, &through(port, "/still"), &[], Bytes::new()).await.status, StatusCode::OK);
    }
    // ...and gateway A's own metrics say so.
    eventually("the gateway reporting the control plane down", Duration::from_secs(10), async || {
        own(ma).await.contains("sluice_gateway_control_plane_up{} 0").then_some(())
    })
    .await;
    // The queue API says the control plane is away, with a status clients retry.
    let r = send(
        Method::GET,
        &format!("http://127.0.0.1:{pa}/v2/{q}/health"),
        &[("authorization".into(), key.clone())],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.headers["retry-after"], "1");

    // Back on the same address: the gateways pick up its table (a new endpoint routes).
    let _ctl = control(&dir, &api).await;
    let e2 = call(
        Method::POST,
        &v1("/endpoints"),
        &key,
        Some(json!({"name": "e2", "public": true, "start_command": demo_cmd()})),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the new endpoint routable at gateway A", Duration::from_secs(30), async || {
        let r = send(Method::GET, &format!("http://127.0.0.1:{pa}/e/{e2}/hi"), &[], Bytes::new()).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
}

/// `sluice control` against a shared PostgreSQL, logging to `log`; `leader_dir` gets
/// addresses.json once this process leads.
fn shared_control(dir: &std::path::Path, api: &str, database: &str, workers_reach: &str, log: &str) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(log)).unwrap();
    let child = Command::new(BIN)
        .args(["control", "--no-demo", "--api-addr", api, "--gateway-addr", "127.0.0.1:1", "--database", database])
        .args(["--metering-interval-secs", "1", "--worker-api-url", workers_reach, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

fn leader_api(dir: &std::path::Path) -> Option<String> {
    let a: Value = serde_json::from_slice(&std::fs::read(dir.join("addresses.json")).ok()?).ok()?;
    a["api"].as_str().map(str::to_owned)
}

/// Two control processes on one PostgreSQL (R8.3): one leads, the other serves the API by
/// forwarding to it. Kill -9 the leader: the other takes over within seconds, adopts the
/// workers (none started twice, none leaked), meters nothing twice, and loses no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_control_process_takes_over_when_the_leader_dies() {
    let pg = sluice_store::testing::TestPostgres::start().unwrap();
    let database = pg.url("postgres");
    let tmp = tempfile::tempdir().unwrap();
    // Worker processes run on this host, so both control processes share its data directory
    // (admin key, worker logs). Workers reach the platform through the gateway, as they would
    // through a load balancer: whichever control process leads is behind it.
    let dir = tmp.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    let (a_api, b_api, gw_port) =
        (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()), free_port());
    let workers_reach = format!("http://127.0.0.1:{gw_port}");
    let mut a = shared_control(&dir, &a_api, &database, &workers_reach, "a.log");
    eventually("control A leading", Duration::from_secs(30), async || {
        (leader_api(&dir)? == format!("http://{a_api}")).then_some(())
    })
    .await;
    let b = shared_control(&dir, &b_api, &database, &workers_reach, "b.log");
    let key = std::fs::read_to_string(dir.join("admin.key")).unwrap().trim().to_owned();
    // B stands by, and its API answers (forwarded to A).
    let via_b = |path: &str| format!("http://{b_api}/v1{path}");
    eventually("control B listening", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(b_api.as_str()).ok().map(drop)
    })
    .await;
    eventually("control B's API answering", Duration::from_secs(20), async || {
        let r = call(Method::GET, &via_b("/endpoints"), &key, None).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    let _gw = gateway(&format!("{a_api},http://{b_api}"), &key, gw_port, "g", None).await;

    let create = async |body: Value| {
        let r = call(Method::POST, &via_b("/endpoints"), &key, Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let e = create(json!({"name": "e", "public": true, "start_command": demo_cmd(), "active_workers": 2})).await;
    let q = create(json!({"name": "q", "type": "queue", "start_command": demo_cmd(), "active_workers": 1})).await;
    let live = async |id: &str| -> Vec<(String, String)> {
        let r = call(Method::GET, &via_b(&format!("/endpoints/{id}/workers")), &key, None).await;
        let mut v: Vec<(String, String)> = r.json()["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| !matches!(w["state"].as_str(), Some("stopped" | "failed")))
                    .map(|w| (w["id"].as_str().unwrap_or("").to_owned(), w["state"].as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let all_ready = async || {
        let (we, wq) = (live(&e).await, live(&q).await);
        (we.len() == 2 && wq.len() == 1 && we.iter().chain(&wq).all(|(_, s)| s == "ready")).then_some((we, wq))
    };
    let before = eventually("3 ready workers", Duration::from_secs(30), all_ready).await;
    let through = |path: &str| format!("http://127.0.0.1:{gw_port}{path}");
    let run = |input: Value| {
        let (url, key) = (through(&format!("/v2/{q}/run")), key.clone());
        async move {
            // A client retries what was not accepted: while no process leads, /v2 answers 503
            // with Retry-After (what RunPod's SDK retries), never 502.
            eventually("the job accepted", Duration::from_secs(30), async || {
                let r = call(Method::POST, &url, &key, Some(json!({ "input": input }))).await;
                if r.status != StatusCode::OK {
                    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "during a change of leader: {}", r.text());
                    assert!(r.headers.contains_key("retry-after"), "503 without Retry-After: {}", r.text());
                }
                (r.status == StatusCode::OK).then(|| r.json()["id"].as_str().unwrap().to_owned())
            })
            .await
        }
    };
    let first = run(json!({"n": 0})).await;
    // Let usage be metered for a few intervals under A.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Kill -9 the leader.
    let killed = tokio::time::Instant::now();
    let _ = a.0.kill();
    let _ = a.0.wait();
    // The data plane does not notice: the gateway routes from its table to the same workers.
    assert_eq!(send(Method::GET, &through(&format!("/e/{e}/hi")), &[], Bytes::new()).await.status, StatusCode::OK);
    // Jobs submitted now are accepted once B leads (the client retries the 502/503 before), and
    // none is lost.
    let mut ids = vec![first];
    for n in 1..=5 {
        ids.push(run(json!({ "n": n })).await);
    }
    eventually("control B leading", Duration::from_secs(20), async || {
        (leader_api(&dir)? == format!("http://{b_api}")).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "takeover took {took:?}");
    eprintln!("takeover took {took:?}");
    let log_b = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(log_b.contains("standing by") && log_b.contains("this control process leads"), "{log_b}");
    for id in &ids {
        eventually(&format!("job {id} completed"), Duration::from_secs(30), async || {
            let r = call(Method::GET, &through(&format!("/v2/{q}/status/{id}")), &key, None).await;
            (r.json()["status"] == "COMPLETED").then_some(())
        })
        .await;
    }
    // B adopted A's workers: the same ones, all ready, none started again, and it stays so.
    let after = eventually("the workers adopted", Duration::from_secs(20), all_ready).await;
    assert_eq!(after, before, "the new leader keeps exactly the workers it found");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!((live(&e).await, live(&q).await), before, "and starts none besides");
    assert_eq!(send(Method::GET, &through(&format!("/e/{e}/hi")), &[], Bytes::new()).await.status, StatusCode::OK);

    // Nothing metered twice: each worker's ledger holds at most its lifetime so far.
    let store = sluice_store::Store::open(&database).await.unwrap();
    let workers: Vec<sluice_core::WorkerId> =
        before.0.iter().chain(&before.1).map(|(id, _)| sluice_core::WorkerId::parse(id).unwrap()).collect();
    let billed = store.billed(&workers).await.unwrap();
    let unfinished = store.list_unfinished_workers().await.unwrap();
    for w in &workers {
        let rec = unfinished.iter().find(|r| &r.id == w).expect("a live worker");
        let lived_s = (sluice_control::now().0 - rec.launched_at.unwrap().0).div_ceil(1000);
        let secs = billed.get(w).map_or(0, |b| b.0);
        assert!(secs >= 3 && secs <= lived_s + 1, "worker {w}: billed {secs} s of {lived_s} s lived");
    }

    // A clean stop hands over at once: A comes back as a standby, B stops (SIGINT) and gives up
    // the lease, and A leads within a couple of seconds with the same workers, none stopped.
    let _a = shared_control(&dir, &a_api, &database, &workers_reach, "a.log");
    let via_a = |path: &str| format!("http://{a_api}/v1{path}");
    eventually("control A back, standing by", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(a_api.as_str()).ok().map(drop)
    })
    .await;
    let stopped = tokio::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(b.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    eventually("control A leading again", Duration::from_secs(20), async || {
        (leader_api(&dir)? == format!("http://{a_api}")).then_some(())
    })
    .await;
    let handover = stopped.elapsed();
    eprintln!("clean handover took {handover:?}");
    assert!(handover < Duration::from_secs(4), "{handover:?}: the lease was not given up");
    drop(b);
    let r = call(Method::GET, &via_a(&format!("/endpoints/{e}/workers")), &key, None).await;
    let mut ids: Vec<String> = r.json()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready")
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, before.0.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), "the same workers, still ready");

    // Deleting the endpoints (through A) stops their workers: nothing is left behind.
    for id in [&e, &q] {
        let r = call(Method::DELETE, &via_a(&format!("/endpoints/{id}")), &key, None).await;
        assert!(r.status.is_success(), "{}", r.text());
    }
    eventually("every worker stopped", Duration::from_secs(30), async || {
        store.list_unfinished_workers().await.unwrap().is_empty().then_some(())
    })
    .await;
    for w in &before.0 {
        let pid = unfinished.iter().find(|r| r.id.as_str() == w.0).and_then(|r| r.pid).unwrap();
        eventually("the worker process gone", Duration::from_secs(10), async || (!alive(pid)).then_some(())).await;
    }
    store.close().await;
}
