//! LLM-aware serving (issue 19) with real worker processes: the demo worker's OpenAI mode (a
//! per-worker prefix cache, prefill and decode times, vLLM's metric names) behind the gateway,
//! OpenAI's own SDK streaming through it, and the `prefix_aware` and `session_affinity`
//! choices sending a conversation back to the worker that holds it.
use std::{collections::HashSet, process::Command};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A chat completion through the gateway: (the worker that answered, the answer).
async fn chat(p: &Platform, id: &str, body: Value, headers: &[(&str, &str)]) -> (String, Value) {
    let mut h: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
    h.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let r = send(Method::POST, &format!("{}/e/{id}/v1/chat/completions", p.gateway), &h, Bytes::from(body.to_string()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    (r.headers["x-demo-worker"].to_str().unwrap().to_owned(), r.json())
}

/// Text of `kb` KiB, different for each `seed`.
fn text(seed: u32, kb: usize) -> String {
    (0..kb * 64).map(|i| format!("s{seed:05}w{:09}", i)).collect::<String>()[..kb * 1024].to_owned()
}

fn conversation(c: u32, turns: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": text(0, 2)})];
    for t in 0..turns {
        messages.push(json!({"role": "user", "content": text(1000 * c + t as u32, 3)}));
        if t + 1 < turns {
            messages.push(json!({"role": "assistant", "content": text(5000 + 1000 * c + t as u32, 1)}));
        }
    }
    json!({"model": "demo", "messages": messages, "max_tokens": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_aware_routing_sends_each_conversation_back_to_the_worker_holding_it() {
    let p = Platform::start().await;
    let engine = json!({"DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": "100"});
    let id = p
        .create_demo(
            "chat",
            json!({"active_workers": 3, "max_workers": 3, "load_balancing": "prefix_aware", "env": engine}),
        )
        .await;
    p.wait_ready(&id, 3).await;

    let mut first_workers = HashSet::new();
    for c in 0..6 {
        let (w1, a1) = chat(&p, &id, conversation(c, 1), &[]).await;
        // A new conversation: at most the shared system prompt (2 KiB, 512 tokens) is cached.
        assert!(a1["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() <= Some(512), "{a1}");
        first_workers.insert(w1.clone());
        for turns in 2..4 {
            let (w, a) = chat(&p, &id, conversation(c, turns), &[]).await;
            assert_eq!(w, w1, "conversation {c}, turn {turns} went elsewhere");
            let cached = a["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
            let prompt = a["usage"]["prompt_tokens"].as_u64().unwrap();
            assert!(cached > prompt / 2, "turn {turns} of {c}: {cached} of {prompt} tokens cached");
        }
    }
    // New conversations spread over the workers (they share only the system prompt).
    assert!(first_workers.len() >= 2, "{first_workers:?}");

    // Round robin, for contrast, on a fresh endpoint: the later turns mostly miss.
    let rr = p.create_demo("rr", json!({"active_workers": 3, "max_workers": 3, "env": engine})).await;
    p.wait_ready(&rr, 3).await;
    let mut misses = 0;
    for c in 10..13 {
        for turns in 1..4 {
            let (_, a) = chat(&p, &rr, conversation(c, turns), &[]).await;
            if turns > 1 && a["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() < 1000 {
                misses += 1;
            }
        }
    }
    assert!(misses >= 3, "round robin hit the cache {} of 6 times", 6 - misses);
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_to_a_worker_by_header_or_user_and_the_openai_sdk_streams_through() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "sessions",
            json!({"active_workers": 3, "max_workers": 3, "load_balancing": "session_affinity",
                                         "env": {"DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": "100"}}),
        )
        .await;
    p.wait_ready(&id, 3).await;
    let small = |user: Option<&str>| {
        let mut b = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
        if let Some(u) = user {
            b["user"] = json!(u);
        }
        b
    };
    let mut owners = HashSet::new();
    for s in 0..8 {
        let session = format!("session-{s}");
        let (w, _) = chat(&p, &id, small(None), &[("x-session-id", &session)]).await;
        for _ in 0..3 {
            assert_eq!(chat(&p, &id, small(None), &[("x-session-id", &session)]).await.0, w, "{session} moved");
        }
        // Without the header, the OpenAI `user` field is the key.
        let user = format!("user-{s}");
        let (u, _) = chat(&p, &id, small(Some(&user)), &[]).await;
        assert_eq!(chat(&p, &id, small(Some(&user)), &[]).await.0, u, "{user} moved");
        owners.insert(w);
    }
    assert!(owners.len() >= 2, "sessions spread: {owners:?}");
    // The session header is the endpoint's to name.
    let r = p
        .api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"session_header": "X-Conversation"})))
        .await;
    assert_eq!(r.json()["session_header"], "x-conversation", "{}", r.text());
    eventually("the new header in use", std::time::Duration::from_secs(10), async || {
        let a = chat(&p, &id, small(None), &[("x-conversation", "c-1")]).await.0;
        let all_same = {
            let mut same = true;
            for _ in 0..4 {
                same &= chat(&p, &id, small(None), &[("x-conversation", "c-1")]).await.0 == a;
            }
            same
        };
        all_same.then_some(())
    })
    .await;

    // OpenAI's SDK, unmodified, against the endpoint's URL: plain, streamed with usage, and a
    // text completion.
    let o = Command::new(python())
        .arg(py_script("openai_check.py"))
        .arg(format!("{}/e/{id}/v1", p.gateway))
        .arg("demo")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chat"]["content"], " x x x x x", "{v}");
    assert_eq!(v["chat"]["finish_reason"], "length");
    assert_eq!(v["stream"]["content"], " x x x x x x x");
    assert_eq!(v["stream"]["usage"]["completion_tokens"], 7);
    assert!(v["stream"]["usage"]["prompt_tokens"].as_u64() > Some(100), "{v}");
    assert_eq!(v["completion"]["text"], " x x x");
    // The gateway metered the stream: time to first token, between tokens, and the tokens
    // from its final usage chunk.
    let st = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/status"), None).await.json();
    assert_eq!((st["streams_total"].as_u64(), st["output_tokens_total"].as_u64()), (Some(1), Some(7)), "{st}");
    assert!(st["ttft_p50_ms"].as_f64().is_some() && st["itl_p99_ms"].as_f64().is_some(), "{st}");
    let m = p.api_call(Method::GET, "/metrics", None).await.text();
    for name in [
        "sluice_llm_time_to_first_token_seconds_bucket",
        "sluice_llm_inter_token_latency_seconds_count",
        "sluice_llm_output_tokens_total",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name) && l.contains(&id)), "{name} missing");
    }

    // vLLM's metric names on the worker.
    let w = p.workers(&id).await.remove(0);
    let m = send(Method::GET, &format!("http://{}/metrics", w["address"].as_str().unwrap()), &[], Bytes::new()).await;
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
    ] {
        assert!(m.text().contains(name), "{name} missing:\n{}", m.text());
    }
    p.stop();
}

/// Runs `openai_front.py` against `base` with `key`: one JSON result per call.
fn front(base: &str, key: &str, calls: &[&str]) -> Vec<Value> {
    let o = Command::new(python()).arg(py_script("openai_front.py")).args([base, key]).args(calls).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_openai_base_url_serves_an_accounts_models_with_openai_errors() {
    let p = Platform::start().await;
    let account = async |name: &str| {
        let r = p.api_call(Method::POST, "/v1/accounts", Some(json!({"name": name}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let c =
            p.api_call(Method::POST, &format!("/v1/accounts/{name}/credit"), Some(json!({"amount_usd": 100}))).await;
        assert_eq!(c.status, StatusCode::OK);
        r.json()["key"]["key"].as_str().unwrap().to_owned()
    };
    let (alice, bob) = (account("alice").await, account("bob").await);
    let create = async |key: &str, body: Value| {
        let mut body = body;
        body["start_command"] = json!(demo_cmd());
        body["env"] = json!({"DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": "100"});
        p.api_as(key, Method::POST, "/v1/endpoints", Some(body)).await
    };
    // Two of Alice's endpoints behind one base URL (private: the key is needed anyway), one of
    // them limited to 1 request a minute and scaling from zero.
    let a =
        create(&alice, json!({"name": "alpha", "active_workers": 1, "served_models": ["alpha", "org/alpha-7b"]})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.json()["served_models"], json!(["alpha", "org/alpha-7b"]));
    let b = create(
        &alice,
        json!({"name": "beta", "active_workers": 0, "max_requests_per_minute": 1, "served_models": ["beta"]}),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text());
    // A name is served by one endpoint of an account; another account may use it.
    let dup = create(&alice, json!({"name": "gamma", "served_models": ["beta"]})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text());
    assert!(dup.text().contains("served_models[0]"), "{}", dup.text());
    let bad = create(&alice, json!({"name": "delta", "served_models": ["has space"]})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text());
    assert_eq!(bad.json()["error"]["field"], "served_models[0]");
    let bobs = create(&bob, json!({"name": "bob-beta", "active_workers": 0, "served_models": ["beta"]})).await;
    assert_eq!(bobs.status, StatusCode::CREATED, "{}", bobs.text());

    let base = format!("{}/openai/v1", p.gateway);
    let r = front(
        &base,
        &alice,
        &["models", "chat:alpha", "stream:org/alpha-7b", "complete:alpha", "chat:beta", "chat:beta", "chat:nope"],
    );
    assert_eq!(r[0]["models"], json!(["alpha", "beta", "org/alpha-7b"]), "{:?}", r[0]);
    assert_eq!(r[1]["content"], " x x x", "{:?}", r[1]);
    assert_eq!(r[1]["model"], "alpha");
    assert_eq!(r[2]["content"], " x x x x", "{:?}", r[2]);
    assert_eq!(r[2]["usage"]["completion_tokens"], 4);
    assert_eq!(r[3]["text"], " x x");
    // beta starts from zero for the first request; the second is over its 1 a minute.
    assert_eq!(r[4]["ok"], true, "{:?}", r[4]);
    assert_eq!((r[5]["error"].as_str(), r[5]["status"].as_u64()), (Some("RateLimitError"), Some(429)), "{:?}", r[5]);
    assert!(r[5]["retry_after"].as_str().is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{:?}", r[5]);
    assert_eq!(
        (r[6]["error"].as_str(), r[6]["code"].as_str()),
        (Some("NotFoundError"), Some("model_not_found")),
        "{:?}",
        r[6]
    );

    // Bob sees his own `beta` only, and cannot reach Alice's `alpha`; no key, no models.
    let r = front(&base, &bob, &["models", "chat:alpha"]);
    assert_eq!(r[0]["models"], json!(["beta"]));
    assert_eq!(r[1]["code"], "model_not_found");
    let r = front(&base, "sk_not_a_key", &["models"]);
    assert_eq!(
        (r[0]["error"].as_str(), r[0]["status"].as_u64()),
        (Some("AuthenticationError"), Some(401)),
        "{:?}",
        r[0]
    );
    p.stop();
}

/// A worker's value of a metric line that starts with `name{`.
async fn metric(addr: &str, name: &str) -> f64 {
    let m = send(Method::GET, &format!("http://{addr}/metrics"), &[], Bytes::new()).await.text();
    m.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Sends a raw HTTP/1.1 POST of `body` to `path` and returns the open connection.
async fn raw_post(gateway: &str, path: &str, body: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = gateway.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_queue_and_aborts_its_request_at_the_worker() {
    use tokio::io::AsyncReadExt;
    let p = Platform::start().await;
    // One worker, one request at a time, slow tokens.
    let id = p
        .create_demo(
            "cancel",
            json!({"active_workers": 1, "max_workers": 1, "concurrency_per_worker": 1,
            "env": {"DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": "20000"}}),
        )
        .await;
    let w = p.wait_ready(&id, 1).await.remove(0);
    let addr = w["address"].as_str().unwrap().to_owned();
    let path = format!("/e/{id}/v1/chat/completions");
    let long =
        json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500, "stream": true})
            .to_string();

    // A streaming request takes the only slot; a second one waits in the gateway's queue.
    let mut first = raw_post(&p.gateway, &path, &long).await;
    let mut head = vec![0u8; 256];
    let n = first.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
    let second = raw_post(&p.gateway, &path, &long).await;
    let queued = async || {
        let m = p.api_call(Method::GET, "/metrics", None).await.text();
        m.lines()
            .find(|l| l.starts_with("sluice_gateway_queued_requests{") && l.contains(&id))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    eventually("the second request queued", std::time::Duration::from_secs(10), async || {
        (queued().await == Some(1)).then_some(())
    })
    .await;
    // Its client goes away: it leaves the queue and never takes the slot.
    drop(second);
    eventually("the queue empty again", std::time::Duration::from_secs(10), async || {
        (queued().await == Some(0)).then_some(())
    })
    .await;

    // The streaming client goes away mid-answer: the worker aborts the sequence, its slot frees.
    drop(first);
    eventually("the worker aborted the request", std::time::Duration::from_secs(10), async || {
        (metric(&addr, "demo:aborted_requests_total").await == 1.0
            && metric(&addr, "vllm:num_requests_running").await == 0.0)
            .then_some(())
    })
    .await;
    // The next request gets the slot at once; only one request ever reached the worker before.
    let (_, a) =
        chat(&p, &id, json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}), &[])
            .await;
    assert_eq!(a["usage"]["completion_tokens"], 1);
    assert_eq!(metric(&addr, "vllm:request_success_total").await, 1.0, "the queued request never reached the worker");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runsync_client_that_goes_away_ends_only_its_wait_and_the_job_completes() {
    let p = Platform::start().await;
    let id = p
        .create_demo(
            "jobs",
            json!({"type": "queue", "delivery": "push", "job_path": "/_demo/job", "active_workers": 1}),
        )
        .await;
    p.wait_ready(&id, 1).await;
    let health = async || {
        let h = [("authorization".to_owned(), p.key.clone())];
        send(Method::GET, &format!("{}/v2/{id}/health", p.gateway), &h, Bytes::new()).await.json()
    };
    // A /runsync whose job takes a while; its client goes away while it runs.
    use tokio::io::AsyncWriteExt;
    let addr = p.gateway.trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"input": {"sleep_ms": 1500}}).to_string();
    let req = format!(
        "POST /v2/{id}/runsync HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        p.key,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    eventually("the job running", std::time::Duration::from_secs(10), async || {
        (health().await["jobs"]["inProgress"] == 1).then_some(())
    })
    .await;
    drop(s);
    // The job was accepted: it still runs to the end; only the wait ended.
    eventually("the job completed", std::time::Duration::from_secs(20), async || {
        let h = health().await;
        (h["jobs"]["completed"] == 1 && h["jobs"]["inProgress"] == 0).then_some(())
    })
    .await;
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_own_queue_scales_the_endpoint_and_the_decision_shows_it() {
    let p = Platform::start().await;
    // Engines that decode one sequence at a time: a second request waits inside the engine,
    // where the gateway's counts cannot see it (the gateway allows 8 at once per worker).
    let body = json!({"active_workers": 1, "max_workers": 3, "concurrency_per_worker": 8,
        "metrics_path": "/metrics", "scaling_signal": "engine_queue", "scaling_target": 1,
        "load_balancing": "least_engine_load",
        "env": {"DEMO_MAX_SEQS": "1", "DEMO_PREFILL_US_PER_TOKEN": "1", "DEMO_DECODE_US_PER_TOKEN": "5000"}});
    // Engine signals need the metrics path.
    let mut bad = body.clone();
    bad["metrics_path"] = json!("");
    bad["name"] = json!("bad");
    bad["start_command"] = json!(demo_cmd());
    let r = p.api_call(Method::POST, "/v1/endpoints", Some(bad)).await;
    assert_eq!(r.json()["error"]["field"], "load_balancing", "{}", r.text());
    let id = p.create_demo("engine", body).await;
    let first = p.wait_ready(&id, 1).await.remove(0)["id"].as_str().unwrap().to_owned();
    let long =
        json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000, "stream": true})
            .to_string();
    let path = format!("/e/{id}/v1/chat/completions");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw_post(&p.gateway, &path, &long).await);
    }
    // 1 running and 3 waiting in the engine: the scaler reads them and adds workers.
    let ev = eventually("a scale-up on the engine's queue", std::time::Duration::from_secs(30), async || {
        let v = p.api_call(Method::GET, &format!("/v1/endpoints/{id}/events?limit=10"), None).await.json();
        v["events"]
            .as_array()?
            .iter()
            .find(|e| e["to"].as_u64() > Some(1) && e["inputs"]["engine_waiting"].as_u64() >= Some(1))
            .cloned()
    })
    .await;
    assert_eq!(ev["inputs"]["signal"], "engine_queue", "{ev}");
    assert!(ev["inputs"]["engine_running"].as_u64() >= Some(1), "{ev}");
    // More than one worker in the routing table (the counts are published with it; a worker
    // record turns ready a moment before).
    eventually("more routed workers", std::time::Duration::from_secs(30), async || {
        let v = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
        (v["workers"]["ready"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    // The first worker's engine holds the four streams; least_engine_load sends the next
    // request to an idle one.
    let quick = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let (w, _) = chat(&p, &id, quick, &[]).await;
    assert_ne!(w, first, "sent to the busy engine");
    drop(held);
    p.stop();
}
