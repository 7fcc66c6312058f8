//! Logs (R2.6, R7.2): worker output and platform events stored per endpoint, searched through
//! the API and the CLI, followed live as server-sent events and resumed with Last-Event-ID.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

async fn logs(p: &Platform, id: &str, query: &str) -> Value {
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?{query}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

fn lines(v: &Value) -> Vec<Value> {
    v["lines"].as_array().unwrap().clone()
}

/// Follows the endpoint's log for `for_how_long`, from `last_id` when given; returns the
/// (id, line) pairs received.
async fn follow(p: &Platform, path: String, last_id: Option<String>, for_how_long: Duration) -> Vec<(String, Value)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let client = p.client();
    let _ = tokio::time::timeout(
        for_how_long,
        client.follow_events(&path, last_id, move |id, data| {
            sink.lock().unwrap().push((id.unwrap_or("").to_owned(), serde_json::from_str(data).unwrap()));
        }),
    )
    .await;
    got.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_output_and_platform_events_are_searched_followed_and_resumed() {
    let p = Platform::start().await;
    // A worker that writes a line to stdout every 100 ms and one to stderr at start.
    let cmd = format!(
        "echo starting up >&2; (i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done) & {}",
        demo_cmd()
    );
    let id = p.create_demo("chatty", json!({"start_command": cmd})).await;
    let w = p.wait_ready(&id, 1).await.remove(0);
    let wid = w["id"].as_str().unwrap().to_owned();

    // Stored with worker, stream and time; platform events beside them.
    let all = eventually("ticks in the log", Duration::from_secs(20), async || {
        let v = logs(&p, &id, "limit=1000").await;
        (lines(&v).iter().filter(|l| l["line"].as_str().unwrap().starts_with("tick")).count() >= 5).then_some(v)
    })
    .await;
    let ls = lines(&all);
    let tick = ls.iter().find(|l| l["line"] == "tick 1").expect("the first tick");
    assert_eq!((tick["worker"].as_str(), tick["stream"].as_str()), (Some(wid.as_str()), Some("stdout")), "{tick}");
    assert!(tick["time"].as_str().unwrap().ends_with('Z') && tick["ts_ms"].as_u64().is_some());
    assert!(ls.iter().any(|l| l["line"] == "starting up" && l["stream"] == "stderr"), "{all}");
    let platform: Vec<&str> =
        ls.iter().filter(|l| l["stream"] == "platform").map(|l| l["line"].as_str().unwrap()).collect();
    assert!(platform.iter().any(|l| l.starts_with("worker launched")), "{platform:?}");
    assert!(platform.iter().any(|l| l.starts_with("worker ready")), "{platform:?}");
    assert!(ls.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()), "oldest first");
    assert_eq!(all["dropped"], 0);

    // Search: a pattern, a stream, a worker, a time window, a limit.
    let v = logs(&p, &id, "q=TICK%201&limit=5000").await;
    assert!(lines(&v).iter().all(|l| l["line"].as_str().unwrap().to_lowercase().contains("tick 1")), "{v}");
    assert!(lines(&v).iter().any(|l| l["line"] == "tick 1"));
    let v = logs(&p, &id, "q=star*up").await;
    assert_eq!(lines(&v).len(), 1, "{v}");
    let v = logs(&p, &id, "stream=platform").await;
    assert!(lines(&v).iter().all(|l| l["stream"] == "platform"));
    let v = logs(&p, &id, &format!("worker={wid}&limit=3")).await;
    assert_eq!(lines(&v).len(), 3);
    let v = logs(&p, &id, "worker=nobodyhere00").await;
    assert!(lines(&v).is_empty());
    let v = logs(&p, &id, "since=1h&until=1700000000000").await;
    assert!(lines(&v).is_empty(), "until before since: nothing");
    // Bad queries name the field and change nothing.
    for (q, field) in [("since=yesterday", "since"), ("limit=0", "limit"), ("stream=stdin", "stream")] {
        let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?{q}"), None).await;
        assert!(r.status.is_client_error(), "{q}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{q}: {}", r.text());
    }
    assert_eq!(p.api_call(Method::GET, "/v1/endpoints/nosuchthing0/logs", None).await.status, StatusCode::NOT_FOUND);

    // Follow: the newest line first (limit=1), then new ticks as they are written.
    let path = format!("/v1/endpoints/{id}/logs?q=tick&limit=1&follow=true");
    let got = follow(&p, path.clone(), None, Duration::from_millis(1500)).await;
    assert!(got.len() >= 5, "live ticks: {got:?}");
    let n = |v: &Value| v["line"].as_str().unwrap()[5..].parse::<u64>().unwrap();
    assert!(got.windows(2).all(|w| n(&w[1].1) == n(&w[0].1) + 1), "in order, none missing: {got:?}");
    assert!(got.iter().all(|(id, v)| id == &v["id"].to_string()), "the event id is the line id");
    // Resume after the last one received: the next tick, nothing repeated, nothing skipped.
    let (last_id, last) = got.last().unwrap().clone();
    let more = follow(&p, path, Some(last_id), Duration::from_millis(800)).await;
    assert_eq!(n(&more[0].1), n(&last) + 1, "{more:?}");

    // The CLI: search and follow.
    let (ok, out, err) = cli(&p, &["logs", &id, "--grep", "starting", "--worker", &wid]);
    assert!(ok && out.contains("starting up") && out.contains("stderr") && out.contains(&wid), "{out}{err}");
    let (ok, _, err) = cli(&p, &["logs", &id, "--since", "soon"]);
    assert!(!ok && err.contains("since"), "{err}");
    let mut child = std::process::Command::new(BIN)
        .args(["logs", &id, "-f", "--grep", "tick", "--limit", "1", "--api", &p.api, "--api-key", &p.key])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    child.kill().unwrap();
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.lines().filter(|l| l.contains("tick")).count() >= 3, "sluice logs -f:\n{out}");

    // A stopped worker's events and last lines are there too.
    p.api_call(Method::POST, &format!("/v1/endpoints/{id}/stop"), None).await;
    eventually("the stop in the log", Duration::from_secs(20), async || {
        let v = logs(&p, &id, "stream=platform").await;
        lines(&v).iter().any(|l| l["line"].as_str().unwrap().starts_with("worker stopped")).then_some(())
    })
    .await;
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_never_blocks_the_worker_and_drops_are_counted() {
    let p = Platform::start().await;
    // 400,000 lines at once, then the worker serves: it must not wait on the platform.
    let cmd = format!("yes flood | head -n 400000; {}", demo_cmd());
    let id = p.create_demo("flood", json!({"start_command": cmd})).await;
    p.wait_ready(&id, 1).await;
    let v = eventually("the flood is stored or counted", Duration::from_secs(30), async || {
        let v = logs(&p, &id, "q=flood&limit=1").await;
        // What fit in the buffer is stored; the rest is counted, not silently lost.
        (v["dropped"].as_u64() > Some(0) && !lines(&v).is_empty()).then_some(v)
    })
    .await;
    assert!(v["dropped"].as_u64().unwrap() <= 400_000, "{v}");
    assert!(p.get(&id, "/hello").await.status.is_success());
    // Other endpoints are not held up by one endpoint's flood.
    let quiet = p.create_demo("quiet", json!({})).await;
    p.wait_ready(&quiet, 1).await;
    eventually("the quiet endpoint's events", Duration::from_secs(20), async || {
        let v = logs(&p, &quiet, "stream=platform").await;
        (lines(&v).len() >= 2).then_some(())
    })
    .await;
    p.stop();
}
