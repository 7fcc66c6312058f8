//! The demo worker's OpenAI mode: an honest stand-in for an LLM engine, for the tests and the
//! routing benchmark. `POST /v1/chat/completions` and `/v1/completions` answer in OpenAI's JSON
//! and SSE chunk formats (with `usage`); `GET /metrics` has vLLM's metric names.
//!
//! What makes routing matter is modelled: a prompt is `bytes_per_token` bytes a token; its
//! blocks (`block_tokens` tokens, hashed in a chain so equal hashes mean equal prefixes) are
//! looked up in a per-worker prefix cache (LRU, `cache_blocks`); prefill takes
//! `prefill_us_per_token` for every token not cached, one prefill at a time; then each output
//! token takes `decode_us_per_token`, with up to `max_seqs` sequences at once (continuous
//! batching; the rest wait). A client that goes away aborts its sequence (counted), which frees
//! its slot.
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    hash::Hasher,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

/// The engine's parameters (flags of `sluice demo-worker`, so benchmarks can state them).
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// The model name the OpenAI routes report (any requested name is served).
    #[arg(long, env = "DEMO_SERVED_MODEL", default_value = "demo")]
    pub served_model_name: String,
    /// Prompt bytes per token (the engine's stand-in for a tokenizer).
    #[arg(long, env = "DEMO_BYTES_PER_TOKEN", default_value_t = 4)]
    pub bytes_per_token: usize,
    /// Tokens per prefix-cache block.
    #[arg(long, env = "DEMO_BLOCK_TOKENS", default_value_t = 16)]
    pub block_tokens: usize,
    /// Prefix-cache capacity, in blocks (least recently used out first).
    #[arg(long, env = "DEMO_CACHE_BLOCKS", default_value_t = 8192)]
    pub cache_blocks: usize,
    /// Prefill time per prompt token not in the cache, microseconds.
    #[arg(long, env = "DEMO_PREFILL_US_PER_TOKEN", default_value_t = 20)]
    pub prefill_us_per_token: u64,
    /// Decode time per output token, microseconds.
    #[arg(long, env = "DEMO_DECODE_US_PER_TOKEN", default_value_t = 2000)]
    pub decode_us_per_token: u64,
    /// Sequences decoded at once; more wait.
    #[arg(long, env = "DEMO_MAX_SEQS", default_value_t = 64)]
    pub max_seqs: usize,
}

impl Default for EngineArgs {
    fn default() -> Self {
        EngineArgs {
            served_model_name: "demo".into(),
            bytes_per_token: 4,
            block_tokens: 16,
            cache_blocks: 8192,
            prefill_us_per_token: 20,
            decode_us_per_token: 2000,
            max_seqs: 64,
        }
    }
}

/// A least-recently-used set of block hashes.
#[derive(Default)]
struct Lru {
    stamp: u64,
    at: HashMap<u64, u64>,
    order: BTreeMap<u64, u64>,
}

impl Lru {
    fn contains(&self, h: u64) -> bool {
        self.at.contains_key(&h)
    }
    fn touch(&mut self, h: u64, cap: usize) {
        self.stamp += 1;
        if let Some(old) = self.at.insert(h, self.stamp) {
            self.order.remove(&old);
        }
        self.order.insert(self.stamp, h);
        while self.at.len() > cap {
            let Some((_, victim)) = self.order.pop_first() else { break };
            self.at.remove(&victim);
        }
    }
}

#[derive(Default)]
struct Counters {
    running: AtomicU64,
    waiting: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    /// Prompt tokens looked up in the prefix cache, and those found.
    prefix_queries: AtomicU64,
    prefix_hits: AtomicU64,
    finished: AtomicU64,
    aborted: AtomicU64,
    /// When the latest abort was noticed, Unix µs (the cancel benchmark reads it).
    last_abort_us: AtomicU64,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Counters {
    fn abort(&self) {
        self.aborted.fetch_add(1, Relaxed);
        self.last_abort_us.store(unix_us(), Relaxed);
    }
}

pub struct Engine {
    args: EngineArgs,
    /// Its worker id (`SLUICE_WORKER_ID`), sent back as `x-demo-worker` so tests and benchmarks
    /// see where a request went.
    worker: String,
    cache: Mutex<Lru>,
    /// One prefill at a time, in arrival order.
    prefill: tokio::sync::Mutex<()>,
    seqs: Arc<Semaphore>,
    n: Counters,
}

/// The chained hashes of a prompt's whole blocks: equal hashes mean equal prefixes.
pub fn block_hashes(prompt: &[u8], block_bytes: usize) -> Vec<u64> {
    let mut prev = 0u64;
    prompt
        .chunks_exact(block_bytes.max(1))
        .map(|b| {
            let mut h = std::hash::DefaultHasher::new();
            h.write_u64(prev);
            h.write(b);
            prev = h.finish();
            prev
        })
        .collect()
}

impl Engine {
    pub fn new(args: EngineArgs) -> Arc<Engine> {
        let seqs = Arc::new(Semaphore::new(args.max_seqs.max(1)));
        Arc::new(Engine {
            args,
            worker: std::env::var("SLUICE_WORKER_ID").unwrap_or_default(),
            cache: Mutex::default(),
            prefill: tokio::sync::Mutex::new(()),
            seqs,
            n: Counters::default(),
        })
    }

    fn tokens(&self, prompt: &[u8]) -> u64 {
        (prompt.len().div_ceil(self.args.bytes_per_token.max(1)) as u64).max(1)
    }

    /// Looks `prompt` up in the prefix cache and takes its blocks in: the cached tokens, and
    /// how long prefilling the others takes.
    fn lookup(&self, prompt: &[u8]) -> (u64, Duration) {
        let block_bytes = self.args.block_tokens.max(1) * self.args.bytes_per_token.max(1);
        let hashes = block_hashes(prompt, block_bytes);
        let total = self.tokens(prompt);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let cached_blocks = hashes.iter().take_while(|h| cache.contains(**h)).count();
        let cached = ((cached_blocks * self.args.block_tokens) as u64).min(total);
        for h in &hashes {
            cache.touch(*h, self.args.cache_blocks);
        }
        self.n.prompt_tokens.fetch_add(total, Relaxed);
        self.n.prefix_queries.fetch_add(total, Relaxed);
        self.n.prefix_hits.fetch_add(cached, Relaxed);
        (cached, Duration::from_micros((total - cached) * self.args.prefill_us_per_token))
    }

    /// Prefills `prompt`, one prompt at a time: the cached leading blocks are free, the rest
    /// take time. Returns the cached tokens.
    async fn prefill(&self, prompt: &[u8]) -> u64 {
        let _one = self.prefill.lock().await;
        let (cached, took) = self.lookup(prompt);
        tokio::time::sleep(took).await;
        cached
    }

    /// Generates `max_tokens` tokens for `prompt`, sending each as it is made; stops early
    /// (an abort) when the receiver is gone.
    async fn generate(self: Arc<Self>, prompt: Vec<u8>, max_tokens: u64, tx: mpsc::Sender<Event>) {
        self.n.waiting.fetch_add(1, Relaxed);
        let permit = tokio::select! {
            Ok(p) = self.seqs.clone().acquire_owned() => p,
            () = tx.closed() => {
                self.n.waiting.fetch_sub(1, Relaxed);
                self.n.abort();
                return;
            }
        };
        self.n.waiting.fetch_sub(1, Relaxed);
        self.n.running.fetch_add(1, Relaxed);
        let _running = Running { n: &self.n, _slot: permit };
        let prompt_tokens = self.tokens(&prompt);
        let cached = tokio::select! {
            c = self.prefill(&prompt) => c,
            () = tx.closed() => {
                self.n.abort();
                return;
            }
        };
        for i in 0..max_tokens.max(1) {
            if i > 0 {
                // A client gone between tokens is noticed at once, as an engine's abort.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_micros(self.args.decode_us_per_token)) => {}
                    () = tx.closed() => {
                        self.n.abort();
                        return;
                    }
                }
            }
            self.n.generation_tokens.fetch_add(1, Relaxed);
            if tx.send(Event::Token).await.is_err() {
                self.n.abort();
                return;
            }
        }
        self.n.finished.fetch_add(1, Relaxed);
        let _ = tx.send(Event::Done { prompt_tokens, cached, completion_tokens: max_tokens.max(1) }).await;
    }

    fn metrics(&self) -> String {
        let m = &self.args.served_model_name;
        let usage = {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.at.len() as f64 / self.args.cache_blocks.max(1) as f64
        };
        let g = |v: &AtomicU64| v.load(Relaxed);
        let mut out = String::new();
        for (name, kind, help, v) in [
            ("vllm:num_requests_running", "gauge", "Sequences being decoded.", g(&self.n.running) as f64),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting for a sequence slot.", g(&self.n.waiting) as f64),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage (1 is full).", usage),
            ("vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage (vLLM v0's name).", usage),
            (
                "vllm:prefix_cache_queries",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                g(&self.n.prefix_queries) as f64,
            ),
            (
                "vllm:prefix_cache_hits",
                "counter",
                "Prompt tokens found in the prefix cache.",
                g(&self.n.prefix_hits) as f64,
            ),
            ("vllm:prompt_tokens", "counter", "Prompt tokens processed.", g(&self.n.prompt_tokens) as f64),
            ("vllm:generation_tokens", "counter", "Tokens generated.", g(&self.n.generation_tokens) as f64),
            ("vllm:request_success", "counter", "Requests finished.", g(&self.n.finished) as f64),
            ("demo:aborted_requests", "counter", "Requests whose client went away.", g(&self.n.aborted) as f64),
            ("demo:last_abort_unix_us", "gauge", "When the latest abort was noticed.", g(&self.n.last_abort_us) as f64),
        ] {
            let suffix = if kind == "counter" { "_total" } else { "" };
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{suffix}{{model_name=\"{m}\"}} {v}\n"
            ));
        }
        out
    }
}

/// Holds a sequence slot; counts the sequence as running until dropped.
struct Running<'a> {
    n: &'a Counters,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.n.running.fetch_sub(1, Relaxed);
    }
}

enum Event {
    Token,
    Done { prompt_tokens: u64, cached: u64, completion_tokens: u64 },
}

#[derive(Deserialize)]
pub struct Completion {
    model: Option<String>,
    /// Chat: the prompt is the messages' contents, in order.
    messages: Option<Vec<Message>>,
    /// Completions: the prompt.
    prompt: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

fn text_of(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => parts.iter().for_each(|p| text_of(p.get("text").unwrap_or(p), out)),
        _ => {}
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})))
        .into_response()
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(e): State<Arc<Engine>>, Json(req): Json<Completion>) -> Response {
    complete(e, true, req).await
}

/// `POST /v1/completions`.
pub async fn completions(State(e): State<Arc<Engine>>, Json(req): Json<Completion>) -> Response {
    complete(e, false, req).await
}

async fn complete(e: Arc<Engine>, chat: bool, req: Completion) -> Response {
    let mut prompt = String::new();
    match (chat, &req.messages, &req.prompt) {
        (true, Some(ms), _) => ms.iter().for_each(|m| text_of(&m.content, &mut prompt)),
        (false, _, Some(p)) => text_of(p, &mut prompt),
        (true, ..) => return error(StatusCode::BAD_REQUEST, "messages is required"),
        (false, ..) => return error(StatusCode::BAD_REQUEST, "prompt is required"),
    }
    let model = req.model.clone().unwrap_or_else(|| e.args.served_model_name.clone());
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(16).clamp(1, 1 << 20);
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(e.clone().generate(prompt.into_bytes(), max_tokens, tx));
    let id = format!("cmpl-{:016x}", std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), created_ms()));
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (object, chunk_object) =
        if chat { ("chat.completion", "chat.completion.chunk") } else { ("text_completion", "text_completion") };
    let usage = |p: u64, c: u64, cached: u64| {
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
               "prompt_tokens_details": {"cached_tokens": cached}})
    };
    if !req.stream {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token => text.push_str(" x"),
                Event::Done { prompt_tokens, cached, completion_tokens } => {
                    let choice = if chat {
                        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length", "logprobs": null})
                    } else {
                        json!({"index": 0, "text": text, "finish_reason": "length", "logprobs": null})
                    };
                    let body = json!({"id": id, "object": object, "created": created, "model": model,
                        "choices": [choice], "usage": usage(prompt_tokens, completion_tokens, cached)});
                    return ([("x-demo-worker", e.worker.clone())], Json(body)).into_response();
                }
            }
        }
        return error(StatusCode::SERVICE_UNAVAILABLE, "the generation ended early");
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |choice: Value, usage: Value| {
        let mut c = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": [choice]});
        if !usage.is_null() {
            c["choices"] = json!([]);
            c["usage"] = usage;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let stream = async_stream(move |out: mpsc::Sender<Result<Bytes, Infallible>>| async move {
        let mut first = true;
        loop {
            // The body dropped (the client went away): stop at once, which the generation
            // notices as its receiver going.
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = out.closed() => return,
            };
            let Some(ev) = ev else { return };
            let piece = match ev {
                Event::Token if chat => {
                    let delta =
                        if first { json!({"role": "assistant", "content": " x"}) } else { json!({"content": " x"}) };
                    chunk(json!({"index": 0, "delta": delta, "finish_reason": null, "logprobs": null}), Value::Null)
                }
                Event::Token => {
                    chunk(json!({"index": 0, "text": " x", "finish_reason": null, "logprobs": null}), Value::Null)
                }
                Event::Done { prompt_tokens, cached, completion_tokens } => {
                    let end = if chat {
                        json!({"index": 0, "delta": {}, "finish_reason": "length", "logprobs": null})
                    } else {
                        json!({"index": 0, "text": "", "finish_reason": "length", "logprobs": null})
                    };
                    let mut last = chunk(end, Value::Null).to_vec();
                    if include_usage {
                        last.extend_from_slice(&chunk(Value::Null, usage(prompt_tokens, completion_tokens, cached)));
                    }
                    last.extend_from_slice(b"data: [DONE]\n\n");
                    Bytes::from(last)
                }
            };
            first = false;
            if out.send(Ok(piece)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-demo-worker", e.worker.as_str())
        .header(header::CACHE_CONTROL, "no-cache")
        .body(stream)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// A body fed by a task; dropping the body (the client went away) ends the task at its next
/// send, and with it the generation's receiver.
fn async_stream<F, Fut>(f: F) -> Body
where
    F: FnOnce(mpsc::Sender<Result<Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }))
}

fn created_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// `GET /metrics`: vLLM's names.
pub async fn metrics(State(e): State<Arc<Engine>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], e.metrics())
}

/// `GET /v1/models`.
pub async fn models(State(e): State<Arc<Engine>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": e.args.served_model_name, "object": "model", "created": 0, "owned_by": "sluice-demo"}]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_hash_alike_and_the_cache_forgets_the_oldest() {
        let a = block_hashes(b"aaaabbbbccccdd", 4);
        let b = block_hashes(b"aaaabbbbXXXX", 4);
        assert_eq!(a.len(), 3, "whole blocks only");
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        // Chained: the same block after another prefix is another block.
        assert_ne!(block_hashes(b"bbbb", 4)[0], a[1]);
        let mut lru = Lru::default();
        for h in [1, 2, 3] {
            lru.touch(h, 2);
        }
        assert!(!lru.contains(1) && lru.contains(2) && lru.contains(3));
        lru.touch(2, 2);
        lru.touch(4, 2);
        assert!(lru.contains(2) && !lru.contains(3) && lru.contains(4), "2 was used more recently than 3");
    }

    #[tokio::test]
    async fn cached_prefixes_prefill_faster_and_gone_clients_abort() {
        let e = Engine::new(EngineArgs {
            prefill_us_per_token: 1000,
            block_tokens: 1,
            bytes_per_token: 1,
            ..Default::default()
        });
        assert_eq!(e.lookup(b"0123456789"), (0, Duration::from_millis(10)));
        assert_eq!(e.lookup(b"0123456789ab"), (10, Duration::from_millis(2)), "only the uncached tokens take time");
        assert_eq!(e.lookup(b"x123456789ab"), (0, Duration::from_millis(12)), "a prefix, not any shared block");
        // A whole generation: the tokens asked for, then the usage.
        let (tx, mut rx) = mpsc::channel(64);
        tokio::spawn(e.clone().generate(b"0123456789ab".to_vec(), 3, tx));
        let mut tokens = 0;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token => tokens += 1,
                Event::Done { prompt_tokens, cached, completion_tokens } => {
                    assert_eq!((prompt_tokens, cached, completion_tokens), (12, 12, 3));
                }
            }
        }
        assert_eq!(tokens, 3);
        // A client gone while its prompt prefills: aborted, its slot freed.
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(e.clone().generate(b"zzzzzzzzzzzzzzzzzzzz".to_vec(), 100, tx));
        tokio::task::yield_now().await;
        drop(rx);
        task.await.unwrap();
        assert_eq!(e.n.aborted.load(Relaxed), 1);
        assert_eq!(e.n.running.load(Relaxed), 0);
        assert!(e.metrics().contains("vllm:num_requests_running{model_name=\"demo\"} 0"));
    }
}
