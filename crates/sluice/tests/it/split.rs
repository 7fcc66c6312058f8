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
    // The queue API says the control plane is away.
    let r = send(
        Method::GET,
        &format!("http://127.0.0.1:{pa}/v2/{q}/health"),
        &[("authorization".into(), key.clone())],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());

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
