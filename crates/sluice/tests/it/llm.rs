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
