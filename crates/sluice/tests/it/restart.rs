//! Restarts: a killed platform's workers are adopted by the next run; strays are stopped;
//! Ctrl-C leaves no worker behind; `sluice up` prints what it promises.
use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use http::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn workers_survive_a_crash_of_the_platform_and_are_adopted() {
    let p = Platform::start().await;
    let id = p.create_demo("keep", json!({"active_workers": 1})).await;
    let before = p.wait_ready(&id, 1).await.remove(0);
    let pid = before["pid"].as_u64().unwrap() as u32;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let instance = String::from_utf8_lossy(&environ)
        .split('\0')
        .find_map(|kv| kv.strip_prefix("SLUICE_INSTANCE=").map(str::to_owned))
        .expect("worker carries the instance marker");

    let dir = p.kill9();
    assert!(alive(pid), "the worker keeps running while the platform is down");
    // A stray process of this instance that no record knows (a crash between launch and record).
    let mut stray = Command::new("sleep")
        .arg("300")
        .env("SLUICE_INSTANCE", &instance)
        .env("SLUICE_WORKER_ID", "straystray01")
        .process_group(0)
        .spawn()
        .unwrap();

    let p = Platform::start_in(dir, &["--no-demo"]).await;
    let after = p.wait_ready(&id, 1).await.remove(0);
    assert_eq!(after["id"], before["id"], "the same worker is adopted");
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(p.get(&id, "/again").await.status, StatusCode::OK);
    eventually("the stray stopped", Duration::from_secs(10), async || stray.try_wait().unwrap().map(|_| ())).await;
    assert_eq!(p.workers(&id).await.iter().filter(|w| w["state"] == "ready").count(), 1);
    p.stop();
    assert!(!alive(pid), "Ctrl-C stops adopted workers too");
}

#[tokio::test]
async fn up_prints_its_addresses_and_demo_and_ctrl_c_leaves_no_worker() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), &[]).await;
    let out = eventually("the banner", Duration::from_secs(10), || async {
        let o = p.stdout();
        o.contains("Data directory").then_some(o)
    })
    .await;
    assert!(out.contains(&p.api) && out.contains(&p.key) && out.contains(&p.gateway), "{out}");
    let line = out.lines().find(|l| l.contains("Demo endpoint")).expect("demo line");
    let id = line.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_owned();
    assert!(line.contains(&format!("http://{id}.local.localhost:{}/", p.gateway_port())), "{line}");
    let workers = p.wait_ready(&id, 1).await;
    let r = get_with_host(&format!("{}/hello", p.gateway), &format!("{id}.local.localhost")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/hello");
    let pid = workers[0]["pid"].as_u64().unwrap() as u32;
    let dir = p.stop();
    assert!(!alive(pid), "a worker outlived Ctrl-C");
    // The demo endpoint is reused, not duplicated, on the next start; the admin key, printed in
    // full when it was created, is now shown masked with where it is kept.
    let p = Platform::start_in(dir, &[]).await;
    let out = eventually("the second banner", Duration::from_secs(10), || async {
        let o = p.stdout();
        (o.matches("Data directory").count() == 2).then_some(o)
    })
    .await;
    assert_eq!(out.matches(&p.key).count(), 1, "the full key is printed once, on the first start:\n{out}");
    let second = out.rsplit("Sluice is up").next().unwrap();
    assert!(second.contains(&format!("Admin key: {}…", &p.key[..8])) && second.contains("admin.key"), "{second}");
    let (ok, list, _) = cli(&p, &["endpoint", "list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(v["endpoints"][0]["id"], id.as_str());
    p.stop();
}

/// Ctrl-C in the instant after `sluice up` printed that it is up (its first pass has started the
/// demo's worker) stops that worker too: the signal handlers are installed before anything starts,
/// so the signal never takes its default action, which killed the platform and orphaned its workers
/// (7 times in 10 before the fix).
#[tokio::test]
async fn ctrl_c_right_after_startup_leaves_no_worker() {
    use std::io::BufRead;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(BIN)
            .args(["up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = out.lines().map_while(Result::ok);
        assert!(lines.any(|l| l.starts_with("Data directory")), "sluice up did not come up");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = child.wait().unwrap();
        let left = processes_writing_into(&data);
        for pid in &left {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(status.success(), "sluice up did not exit cleanly on Ctrl-C: {status}");
        assert!(left.is_empty(), "workers left running after Ctrl-C: {left:?}");
    }
}

/// Ctrl-C waits for requests in flight; a second Ctrl-C exits at once (130), leaving the workers
/// running, and the next run adopts them as after a crash.
#[tokio::test]
async fn a_second_ctrl_c_while_stopping_exits_at_once_and_the_next_run_adopts_the_workers() {
    let mut p = Platform::start().await;
    let id = p.create_demo("hold", json!({"active_workers": 1})).await;
    let pid = p.wait_ready(&id, 1).await[0]["pid"].as_u64().unwrap() as u32;
    let _held = sleep_reqs(&p, &id, 1, 120_000);
    eventually("the request at the worker", Duration::from_secs(10), async || {
        let s = p.api_call(http::Method::GET, &format!("/v1/endpoints/{id}/status"), None).await.json();
        (s["running_requests"] == 1).then_some(())
    })
    .await;
    let platform = nix::unistd::Pid::from_raw(p.pid() as i32);
    nix::sys::signal::kill(platform, nix::sys::signal::Signal::SIGINT).unwrap();
    eventually("stopping", Duration::from_secs(10), async || p.stderr().contains("shutting down").then_some(())).await;
    assert_eq!(p.exit_status(Duration::from_millis(300)), None, "the first Ctrl-C waits for the request");
    nix::sys::signal::kill(platform, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = p.exit_status(Duration::from_secs(10)).expect("the second Ctrl-C exits at once");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(p.stderr().contains("second signal"), "{}", p.stderr());
    assert!(alive(pid), "the worker is left running");
    let p = Platform::start_in(p.kill9(), &["--no-demo"]).await;
    assert_eq!(p.wait_ready(&id, 1).await[0]["pid"].as_u64(), Some(u64::from(pid)), "adopted");
    p.stop();
    assert!(!alive(pid));
}
