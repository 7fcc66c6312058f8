//! The gateway with real worker processes: both URL forms, round-robin, SSE, WebSocket, h2c,
//! large bodies, execution timeout, stopped and unknown endpoints, waiting for a first worker.
use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

#[tokio::test]
async fn routes_by_host_and_path_and_spreads_round_robin() {
    let p = Platform::start().await;
    let id = p.create_demo("rr", json!({"active_workers": 2, "gpus_per_worker": 2})).await;
    let ready = p.wait_ready(&id, 2).await;
    let ids: Vec<String> = ready.iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect();
    // Whole GPUs, never shared.
    let gpus: Vec<Vec<u64>> =
        ready.iter().map(|w| w["gpus"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect()).collect();
    assert_eq!(gpus[0].len(), 2);
    assert!(gpus[0].iter().all(|g| !gpus[1].contains(g)), "{gpus:?}");

    // Host form: {id}.{dc}.{domain}, path kept.
    let host = format!("{id}.local.localhost:{}", p.gateway_port());
    let r = get_with_host(&format!("{}/v1/items?q=1", p.gateway), &host).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["path"], "/v1/items");
    assert_eq!(j["query"], "q=1");
    // Server-Timing: no start was waited for; the worker's part and the gateway's.
    let timing = r.headers["server-timing"].to_str().unwrap();
    assert!(timing.starts_with("queue;dur=0.000, upstream;dur=") && timing.contains(", gateway;dur="), "{timing}");
    assert_eq!(j["headers"]["x-forwarded-host"], host);
    assert_eq!(j["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "http");
    let cuda = j["cuda_visible_devices"].as_str().unwrap().to_owned();
    assert_eq!(cuda.split(',').count(), 2, "{cuda}");

    // Path form: prefix stripped, prefix reported.
    let r = p.get(&id, "/v1/items?q=2").await;
    let j = r.json();
    assert_eq!(j["path"], "/v1/items");
    assert_eq!(j["query"], "q=2");
    assert_eq!(j["headers"]["x-forwarded-prefix"], format!("/e/{id}"));
    assert_eq!(p.get(&id, "").await.json()["path"], "/");

    // Round-robin: an even spread over both workers.
    let mut hits: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let w = p.get(&id, "/").await.json()["worker"].as_str().unwrap().to_owned();
        *hits.entry(w).or_default() += 1;
    }
    assert_eq!(hits.len(), 2, "{hits:?}");
    for w in &ids {
        assert_eq!(hits[w], 10, "{hits:?}");
    }

    // Least-outstanding-requests: a busy worker is avoided.
    let r = p
        .api_call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({"load_balancing": "least_outstanding_requests"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let slow = tokio::spawn({
        let gw = p.gateway.clone();
        let id = id.clone();
        async move { send(Method::GET, &format!("{gw}/e/{id}/sleep?ms=1500"), &[], Bytes::new()).await.json() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut free = HashMap::<String, usize>::new();
    for _ in 0..6 {
        *free.entry(p.get(&id, "/").await.json()["worker"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let busy = slow.await.unwrap()["worker"].as_str().unwrap().to_owned();
    assert_eq!(free.len(), 1, "{free:?}");
    assert!(!free.contains_key(&busy), "busy worker {busy} got traffic: {free:?}");

    // Unknown endpoint: 404 JSON; no endpoint in the request: 404 JSON.
    let r = p.get("nosuchendpoint", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "endpoint_not_found");
    let r = send(Method::GET, &format!("{}/", p.gateway), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "no_endpoint");

    // Stopped: 503 JSON with a clear message; started again: served.
    p.api_call(Method::POST, &format!("/v1/endpoints/{id}/stop"), None).await;
    // The API answers once the routing table reflects the change.
    let r = p.get(&id, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "endpoint_stopped");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("stopped"));
    eventually("workers stopped", Duration::from_secs(15), || async {
        (p.workers_in(&id, "ready").await.is_empty() && p.workers_in(&id, "draining").await.is_empty()).then_some(())
    })
    .await;
    for w in ready {
        assert!(!alive(w["pid"].as_u64().unwrap() as u32), "worker process survived stop");
    }
    p.api_call(Method::POST, &format!("/v1/endpoints/{id}/start"), None).await;
    let r = p.get(&id, "/after-start").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    p.stop();
}

// Multi-threaded: `Platform::stop` blocks the test thread, and the test's own h2 client must keep
// answering the gateway's GOAWAY/PING meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_sse_websocket_h2c_large_bodies_and_enforces_the_execution_timeout() {
    let p = Platform::start().await;
    let id = p.create_demo("stream", json!({"execution_timeout_secs": 2})).await;
    p.wait_ready(&id, 1).await;

    // SSE: the first event arrives long before the stream ends.
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let start = Instant::now();
    let resp = client.get(format!("{}/e/{id}/stream?n=4&interval_ms=400", p.gateway).parse().unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut first_at = None;
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first_at.get_or_insert(start.elapsed());
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let total = start.elapsed();
    let first = first_at.unwrap();
    assert!(text.contains("data: token 0") && text.contains("data: token 3"), "{text}");
    assert!(total >= Duration::from_millis(1200), "{total:?}");
    assert!(first + Duration::from_millis(900) < total, "first event at {first:?}, end at {total:?}: buffered?");

    // WebSocket echo through the gateway.
    let url = format!("ws://{}/e/{id}/ws", p.gateway.trim_start_matches("http://"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.expect("websocket upgrade through the gateway");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for msg in ["hello", "wörld 🦀"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    ws.close(None).await.unwrap();

    // h2c (HTTP/2 with prior knowledge) from the client.
    let h2: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new());
    let resp = h2.get(format!("{}/e/{id}/over-h2", p.gateway).parse().unwrap()).await.expect("h2c through the gateway");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let j: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(j["path"], "/over-h2");

    // A large body streams through intact.
    let big = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let r = send(Method::POST, &format!("{}/e/{id}/upload", p.gateway), &[], big).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_bytes"], 8 * 1024 * 1024);

    // Execution timeout: before the head (504 JSON) and during a streamed body (cut off).
    let start = Instant::now();
    let r = p.get(&id, "/sleep?ms=5000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "execution_timeout");
    assert!(start.elapsed() < Duration::from_millis(4000), "{:?}", start.elapsed());
    let start = Instant::now();
    let resp = client.get(format!("{}/e/{id}/stream?n=50&interval_ms=200", p.gateway).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await;
    assert!(collected.is_err(), "a stream past the deadline must be cut off");
    assert!(start.elapsed() < Duration::from_millis(4000), "{:?}", start.elapsed());
    p.stop();
}

#[tokio::test]
async fn a_request_at_zero_waits_for_the_first_worker() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "zero",
            json!({"active_workers": 0, "idle_timeout_secs": 2, "scale_down_delay_secs": 1, "env": {"DEMO_STARTUP_DELAY_MS": "500"}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(p.workers(&id).await.is_empty(), "no traffic, no worker");
    // Concurrent requests at zero all succeed once the worker is ready.
    let reqs: Vec<_> = (0..5)
        .map(|i| {
            let gw = p.gateway.clone();
            let id = id.clone();
            tokio::spawn(async move { send(Method::GET, &format!("{gw}/e/{id}/first/{i}"), &[], Bytes::new()).await })
        })
        .collect();
    for r in reqs {
        let r = r.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(p.workers_in(&id, "ready").await.len(), 1);
    // Idle for the idle timeout: back to zero, the worker drained and stopped.
    let w = eventually("scale to zero", Duration::from_secs(15), || async {
        let ws = p.workers(&id).await;
        ws.iter().all(|w| w["state"] == "stopped").then_some(ws)
    })
    .await;
    assert_eq!(w.len(), 1);
    assert!(!alive(w[0]["pid"].as_u64().unwrap() as u32));
    p.stop();
}

/// Sends raw bytes to the gateway (`close_write`: then half-close, as a client that is gone),
/// and reads what comes back until the connection closes or 5 s pass.
async fn raw_exchange(gateway: &str, bytes: &[u8], close_write: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gateway.trim_start_matches("http://")).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if close_write {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request whose body breaks part-way is the client's fault: 400 (when the client is still
/// there to read it), never a 502 blamed on the worker, never retried on another worker, and
/// counted as a client error, not a worker error.
#[tokio::test]
async fn a_broken_request_body_is_the_clients_fault() {
    let p = Platform::start().await;
    let id = p.create_demo("body", json!({"active_workers": 2, "env": {"DEMO_LOG_REQUESTS": "1"}})).await;
    p.wait_ready(&id, 2).await;
    // A chunk size that is not hex.
    let bad_chunk = format!(
        "POST /e/{id}/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n"
    );
    let answer = raw_exchange(&p.gateway, bad_chunk.as_bytes(), false).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_request_body"), "{answer}");
    // Fewer bytes than announced, then the client is gone.
    let short = format!("POST /e/{id}/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc");
    let answer = raw_exchange(&p.gateway, short.as_bytes(), true).await;
    assert!(!answer.contains(" 502 "), "{answer}");
    // The workers are fine and still serve.
    assert_eq!(p.get(&id, "/after").await.status, StatusCode::OK);
    // Each broken request reached one worker at most (never retried on the other).
    let logs = p.data_dir().join("logs").join(&id);
    let uploads: usize =
        std::fs::read_dir(&logs).unwrap().map(|f| read(&f.unwrap().path()).matches("POST /upload").count()).sum();
    assert!(uploads <= 2, "{uploads} uploads reached workers");
    // Counted against the client, not a worker; and no 502.
    let m = send(
        Method::GET,
        &format!("{}/metrics", p.api),
        &[("authorization".into(), format!("Bearer {}", p.key))],
        Bytes::new(),
    )
    .await
    .text();
    let line = |fault: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("sluice_gateway_errors_total")
                    && l.contains(&id)
                    && l.contains(&format!("fault=\"{fault}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(line("client"), Some(2), "{m}");
    assert_eq!(line("worker"), Some(0), "{m}");
    assert!(
        !m.lines()
            .any(|l| l.starts_with("sluice_gateway_requests_total") && l.contains(&id) && l.contains("code=\"502\"")),
        "{m}"
    );
    p.stop();
}
