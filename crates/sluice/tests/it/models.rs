//! Cached models (issue 18) against a Hugging Face hub on loopback (`tests/py/fake_hub.py`: the
//! hub's API, resolve URLs, LFS redirects to a second "CDN" origin, ranges, errors). The hub
//! itself cannot be reached from here; the fake is kept honest by downloading the same
//! repository with Hugging Face's own client (`huggingface_hub`, PyPI) and comparing the two
//! caches file by file. Workers then read the staged cache offline with that client, the demo
//! worker hashes every file it is given, and a Docker worker gets the same through a read-only
//! bind mount.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const COMMIT: &str = "1111111111111111111111111111111111111111";
const GATED_COMMIT: &str = "2222222222222222222222222222222222222222";
const TOKEN: &str = "hf_AliceHasAccessToTheGatedModel0001";
const OTHER_TOKEN: &str = "hf_BobIsKnownButHasNoAccess00000002";
/// Large enough for several parallel ranges (32 MiB each).
const BIG: u64 = 100_000_000;

/// The hub on loopback, its request log, and the folder it works in.
struct FakeHub {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeHub {
    fn start(spec: Value) -> FakeHub {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spec.json"), spec.to_string()).unwrap();
        let log = dir.path().join("log.jsonl");
        let mut child = Command::new(python())
            .arg(py_script("fake_hub.py"))
            .args(["--port", "0", "--cdn-port", "0", "--spec"])
            .arg(dir.path().join("spec.json"))
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python fake_hub.py");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        let port = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("fake hub said {first:?}"));
        FakeHub { url: format!("http://127.0.0.1:{port}"), child, log, _dir: dir }
    }

    /// Every request served so far (a stalled one is logged when it ends).
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The CDN's GETs of one file's bytes.
    fn downloads(&self, file: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["server"] == "cdn" && r["method"] == "GET" && r["file"] == file)
            .collect()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A public repository (a small JSON, a text file in a folder, one large LFS file), a gated
/// one, and a repository with a corrupt file.
fn repos(big: Value) -> Value {
    let mut big_file = json!({"path": "model.safetensors", "size": BIG, "lfs": true, "seed": 2});
    for (k, v) in big.as_object().unwrap() {
        big_file[k] = v.clone();
    }
    json!({
        "repos": {
            "acme/tiny": {"revisions": {"main": COMMIT}, "files": [
                {"path": "config.json", "content": "{\"model_type\": \"demo\"}"},
                {"path": "tokenizer/vocab.txt", "size": 3000, "seed": 1},
                big_file]},
            "acme/small": {"revisions": {"main": "3333333333333333333333333333333333333333"}, "files": [
                {"path": "weights.bin", "size": 2_000_000, "lfs": true, "seed": 3}]},
            "acme/gated": {"revisions": {"main": GATED_COMMIT}, "token": TOKEN, "gated": true, "files": [
                {"path": "config.json", "content": "{}"},
                {"path": "secret.bin", "size": 1_000_000, "lfs": true, "seed": 4}]},
            "acme/broken": {"revisions": {"main": "4444444444444444444444444444444444444444"}, "files": [
                {"path": "w.bin", "size": 1_000_000, "lfs": true, "seed": 5, "corrupt": true}]}
        },
        "tokens": [OTHER_TOKEN],
        "stall_hold_s": 4
    })
}

/// `sluice up` with the hub as `hf_endpoint` (and more settings).
async fn platform(dir: tempfile::TempDir, hub: &str, extra: &str, args: &[&str]) -> Platform {
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, format!("hf_endpoint = \"{hub}\"\n{extra}")).unwrap();
    // The Docker runtime's test uses the demo endpoint's image.
    let demo = args.contains(&"docker");
    let mut all = if demo { vec![] } else { vec!["--no-demo"] };
    all.extend(["--config", cfg.to_str().unwrap()]);
    all.extend(args);
    Platform::start_in(dir, &all).await
}

fn hub_check() -> String {
    format!("'{}' '{}'", python().display(), py_script("hub_check.py").display())
}

/// The model's view in `GET /v1/models` (as `key`), once `state` on every node.
async fn model_in(p: &Platform, key: &str, source: &str, state: &str, secs: u64) -> Value {
    eventually(&format!("{source} {state}"), Duration::from_secs(secs), async || {
        let r = p.api_as(key, Method::GET, "/v1/models", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let m = r.json()["models"].as_array().unwrap().iter().find(|m| m["source"] == source).cloned()?;
        let nodes = m["nodes"].as_array().unwrap();
        (!nodes.is_empty() && nodes.iter().all(|n| n["state"] == state)).then_some(m)
    })
    .await
}

/// A cache folder as a sorted map: path → link target (or "file <size>"/"dir").
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                todo.push(p.clone());
                "dir".into()
            } else if rel.starts_with("trees/") {
                // The listing: compared as JSON (the two write it with different spacing).
                serde_json::from_slice::<Value>(&std::fs::read(&p).unwrap()).unwrap().to_string()
            } else {
                format!("file {} {}", meta.len(), std::fs::read(&p).map(|b| b.len()).unwrap_or(0))
            };
            out.insert(rel, what);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_staged_once_in_the_hub_layout_and_workers_load_it_offline() {
    // The large file stalls once, mid-way, for a few seconds: meanwhile the worker waits.
    let hub = FakeHub::start(repos(json!({"stall_after": 60_000_000, "stall_times": 1})));
    let p = platform(tempfile::tempdir().unwrap(), &hub.url, "", &[]).await;
    let out = p.dir.path().join("worker-check.json");
    // The worker reads the cache with Hugging Face's own client, offline (as transformers and
    // vLLM do), then serves: the demo worker hashes every file it was given.
    let cmd = format!(
        "{} acme/tiny --offline --load config.json --load tokenizer/vocab.txt > '{}' && exec '{BIN}' demo-worker",
        hub_check(),
        out.display()
    );
    let e = p
        .create(json!({"name": "llm", "start_command": cmd, "active_workers": 1, "max_workers": 1,
                       "startup_timeout_secs": 60, "models": [{"source": "hf://acme/tiny"}]}))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["models"][0]["source"], "hf://acme/tiny", "{e}");

    // Creating did not wait on the hub; the worker stays pending while the model downloads.
    let pending = eventually("a worker pending on the download", Duration::from_secs(30), async || {
        let w = p.workers(&id).await.into_iter().find(|w| w["state"] == "pending")?;
        w["reason"].as_str().is_some_and(|r| r.starts_with("staging model ") && r.contains(" GB")).then_some(w)
    })
    .await;
    assert!(pending["pid"].is_null(), "nothing was started: {pending}");
    let m = model_in(&p, &p.key, "hf://acme/tiny", "downloading", 10).await;
    let n = &m["nodes"][0];
    assert!(n["bytes_total"].as_u64().unwrap() > BIG && n["bytes_done"].as_u64().unwrap() > 0, "{m}");
    assert!(n["ready_at"].is_null());

    let m = model_in(&p, &p.key, "hf://acme/tiny", "ready", 60).await;
    assert_eq!(m["commit"], COMMIT);
    assert_eq!(m["revision"], "main");
    assert_eq!(m["endpoints"], json!([id]));
    assert!(m["nodes"][0]["ready_at"].is_string() && m["nodes"][0]["rate_bytes_per_sec"].as_u64() > Some(0), "{m}");
    let w = p.wait_ready(&id, 1).await.remove(0);
    let r =
        send(Method::GET, &format!("http://{}/_demo/models", w["address"].as_str().unwrap()), &[], Bytes::new()).await;
    let loaded = r.json();
    assert_eq!(loaded["files"], 3, "{loaded}");
    assert_eq!(loaded["bytes"].as_u64().unwrap(), BIG + 3000 + 22);

    // The stalled range was resumed where it stopped, not fetched again.
    let gets = hub.downloads("model.safetensors");
    let served: u64 = gets.iter().map(|g| g["bytes"].as_u64().unwrap()).sum();
    assert!(served <= BIG, "{served} bytes served for {BIG}: {gets:?}");
    assert!(gets.iter().any(|g| g["range"].as_str().is_some_and(|r| r.starts_with("bytes=60000000-"))), "{gets:?}");

    // The worker's own client found everything offline, with the right content.
    let check: Value = serde_json::from_str(&read(&out)).unwrap();
    assert_eq!(check["all_verified"], true, "{check}");
    assert_eq!(check["commit"], COMMIT);
    let files: Vec<&str> = check["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["config.json", "model.safetensors", "tokenizer/vocab.txt"]);
    for f in check["files"].as_array().unwrap() {
        let name = f["path"].as_str().unwrap();
        assert_eq!(loaded["sha256"][name], f["sha256"], "{name}");
    }
    assert_eq!(check["loaded"]["config.json"], check["files"][0]["sha256"]);

    // The same repository through huggingface_hub's own download from the same hub: the same
    // cache, link for link (the client's lock files and cache tag aside).
    let theirs = p.dir.path().join("hf-client");
    let o = Command::new(python())
        .arg(py_script("hub_check.py"))
        .args(["acme/tiny", "--cache-dir"])
        .arg(&theirs)
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = tree(&p.data_dir().join("models/hub/models--acme--tiny"));
    assert_eq!(ours, tree(&theirs.join("models--acme--tiny")));
    assert!(ours.contains_key("refs/main") && ours.contains_key(&format!("trees/{COMMIT}.json")), "{ours:?}");

    // A second endpoint listing the same model: ready at once, nothing fetched again.
    let before = hub.downloads("model.safetensors").len();
    let (ok, stdout, stderr) = cli(
        &p,
        &["endpoint", "create", "--json", "--name", "again", "--start-command", &demo_cmd(), "--active-workers", "0"]
            .into_iter()
            .chain(["--model", "hf://acme/tiny", "--wait"])
            .collect::<Vec<_>>(),
    );
    assert!(ok, "{stderr}");
    // `--wait` shows the model's staging as a bar per node (ready at once here).
    assert!(stderr.lines().any(|l| l.starts_with("hf://acme/tiny  [###") && l.contains("ready")), "{stderr}");
    let e2 = serde_json::from_str::<Value>(&stdout).unwrap()["id"].as_str().unwrap().to_owned();
    let m = model_in(&p, &p.key, "hf://acme/tiny", "ready", 20).await;
    let mut eps: Vec<&str> = m["endpoints"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    eps.sort_unstable();
    let mut want = [id.as_str(), e2.as_str()];
    want.sort_unstable();
    assert_eq!(eps, want);
    assert_eq!(hub.downloads("model.safetensors").len(), before, "fetched once");
    let v = p.api_call(Method::GET, &format!("/v1/endpoints/{e2}"), None).await.json();
    assert_eq!(v["models"][0]["nodes"][0]["state"], "ready", "{v}");

    // The CLI shows it.
    let (ok, stdout, stderr) = cli(&p, &["models"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("hf://acme/tiny") && stdout.contains("ready") && stdout.contains(&COMMIT[..12]),
        "{stdout}"
    );
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_staging_one_model_at_once_fetch_it_once() {
    let hub = FakeHub::start(repos(json!({})));
    let p = platform(tempfile::tempdir().unwrap(), &hub.url, "", &[]).await;
    // Created together: both stagings are under way at the same moment.
    let (a, b) = tokio::join!(
        p.create_demo("a", json!({"active_workers": 0, "models": [{"source": "hf://acme/tiny"}]})),
        p.create_demo(
            "b",
            json!({"active_workers": 0, "models": [{"source": "hf://acme/tiny", "exclude": ["*.txt"]}]})
        )
    );
    model_in(&p, &p.key, "hf://acme/tiny", "ready", 60).await;
    eventually("both endpoints' models ready", Duration::from_secs(60), async || {
        let all = p.api_call(Method::GET, "/v1/models", None).await.json();
        let models = all["models"].as_array().unwrap().clone();
        (models.len() == 2 && models.iter().all(|m| m["nodes"][0]["state"] == "ready")).then_some(())
    })
    .await;
    let served: u64 = hub.downloads("model.safetensors").iter().map(|g| g["bytes"].as_u64().unwrap()).sum();
    assert_eq!(served, BIG, "the shared blob was fetched once");
    let _ = (a, b);

    // A plain file URL: staged under urls/, whole.
    let url = format!("{}/acme/tiny/resolve/main/tokenizer/vocab.txt", hub.url);
    p.create_demo("c", json!({"active_workers": 0, "models": [{"source": url}]})).await;
    let m = model_in(&p, &p.key, &url, "ready", 30).await;
    assert_eq!((m["nodes"][0]["bytes_total"].as_u64(), m["commit"].clone()), (Some(3000), Value::Null), "{m}");
    let urls = p.data_dir().join("models/urls");
    let dir = std::fs::read_dir(&urls).unwrap().flatten().next().unwrap().path();
    assert_eq!(std::fs::metadata(dir.join("vocab.txt")).unwrap().len(), 3000);
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_resumes_after_a_kill_9_and_eviction_spares_listed_models() {
    // The large file stalls for good at byte 50,000,000: the platform is killed meanwhile.
    let mut spec = repos(json!({"stall_after": 50_000_000, "stall_times": 1}));
    spec["stall_hold_s"] = json!(600);
    let hub = FakeHub::start(spec);
    // A cache of 0.15 GB: room for the big model and a small one, not for three.
    let limit = "model_cache_max_gb = 0.103\n";
    let p = platform(tempfile::tempdir().unwrap(), &hub.url, limit, &[]).await;
    let big = p.create_demo("big", json!({"active_workers": 0, "models": [{"source": "hf://acme/tiny"}]})).await;
    // Wait until every byte but the stalled range's rest is written and recorded beside the
    // file (the ranges are 32 MiB: the stall is in the second, [33554432, 67108864)).
    let blob = p.data_dir().join("models/hub/models--acme--tiny/blobs");
    let want = BIG - (67_108_864 - 50_000_000);
    eventually("all but the stalled range on disk", Duration::from_secs(60), async || {
        let side = std::fs::read_dir(&blob)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".incomplete.json"))?;
        let v: Value = serde_json::from_slice(&std::fs::read(side.path()).ok()?).ok()?;
        let written: u64 = v["ranges"].as_array()?.iter().map(|r| r[2].as_u64().unwrap_or(0)).sum();
        (written == want).then_some(())
    })
    .await;
    let dir = p.kill9();

    let p = platform(dir, &hub.url, limit, &[]).await;
    let m = model_in(&p, &p.key, "hf://acme/tiny", "ready", 60).await;
    assert_eq!(m["commit"], COMMIT);
    let gets = hub.downloads("model.safetensors");
    let resumed: Vec<&Value> =
        gets.iter().filter(|g| g["range"].as_str().is_some_and(|r| r.starts_with("bytes=50000000-"))).collect();
    assert_eq!(resumed.len(), 1, "the rest of the stalled range, from where it stopped: {gets:?}");
    let served: u64 = gets.iter().map(|g| g["bytes"].as_u64().unwrap()).sum();
    assert!(served <= BIG, "bytes kept across the kill were not fetched again: {served} for {BIG}");
    let o = Command::new(python())
        .arg(py_script("hub_check.py"))
        .args(["acme/tiny", "--offline"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", p.data_dir().join("models/hub"))
        .output()
        .unwrap();
    assert!(o.status.success(), "the resumed file is whole: {}", String::from_utf8_lossy(&o.stderr));

    // Eviction: big (listed) is the least recently used, yet stays. An endpoint's worker runs
    // on the small model; the endpoint then lists a third instead, which needs the small one's
    // room. The small model goes, but only once no worker runs on it: while the old worker
    // still finishes a request during the rolling update, its files stay.
    let gated = p.create_demo("gated", json!({"active_workers": 1, "models": [{"source": "hf://acme/small"}]})).await;
    let old = p.wait_ready(&gated, 1).await.remove(0);
    // A request the test ends itself (by hanging up) keeps the old worker serving meanwhile.
    let held = sleep_reqs(&p, &gated, 1, 300_000).remove(0);
    eventually("the request at the old worker", Duration::from_secs(10), async || {
        let s = p.api_call(Method::GET, &format!("/v1/endpoints/{gated}/status"), None).await.json();
        (s["running_requests"] == 1).then_some(())
    })
    .await;
    let change = json!({"env": {"HF_TOKEN": TOKEN}, "models": [{"source": "hf://acme/gated"}]});
    let r = p.api_call(Method::PATCH, &format!("/v1/endpoints/{gated}"), Some(change)).await;
    assert!(r.status.is_success(), "{}", r.text());
    model_in(&p, &p.key, "hf://acme/gated", "ready", 30).await;
    let hubdir = p.data_dir().join("models/hub");
    let small = hubdir.join("models--acme--small/snapshots");
    assert!(alive(old["pid"].as_u64().unwrap() as u32), "the old worker still finishes its request");
    assert!(small.read_dir().unwrap().any(|_| true), "a running worker's model is not evicted");
    held.abort();
    eventually("the small model evicted once its last worker stopped", Duration::from_secs(30), async || {
        (!small.read_dir().ok()?.any(|_| true)).then_some(())
    })
    .await;
    assert!(!alive(old["pid"].as_u64().unwrap() as u32));
    assert!(hubdir.join(format!("models--acme--tiny/snapshots/{COMMIT}/model.safetensors")).exists(), "listed: kept");
    assert!(hubdir.join(format!("models--acme--gated/snapshots/{GATED_COMMIT}/secret.bin")).exists());
    let dir = p.stop();

    // The hub goes away: after a restart the staged copies still serve the endpoints (and
    // the access) they were staged for, so workers keep starting; a copy staged with a token
    // does not serve an endpoint without one.
    // The cache limit is lowered too, below what the listed models take: the first pass after
    // the restart, before any model is looked up again, must not evict them.
    drop(hub);
    let p = platform(dir, "http://127.0.0.1:9", "model_cache_max_gb = 0.05\n", &[]).await;
    let view = async |id: &str| p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    for id in [&big, &gated] {
        eventually("a staged copy ready without the hub", Duration::from_secs(30), async || {
            (view(id).await["models"][0]["nodes"][0]["state"] == "ready").then_some(())
        })
        .await;
    }
    assert!(hubdir.join(format!("models--acme--tiny/snapshots/{COMMIT}/model.safetensors")).exists(), "listed: kept");
    let none = p.create_demo("none", json!({"active_workers": 0, "models": [{"source": "hf://acme/gated"}]})).await;
    let v = eventually("no copy for an endpoint without the token", Duration::from_secs(30), async || {
        let v = view(&none).await;
        (v["models"][0]["nodes"][0]["state"] == "failed").then_some(v)
    })
    .await;
    assert!(v["models"][0]["nodes"][0]["error"].as_str().unwrap().contains("127.0.0.1:9"), "{v}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_refusals_name_the_reason_tokens_stay_secret_and_accounts_stay_apart() {
    let hub = FakeHub::start(repos(json!({})));
    let p = platform(tempfile::tempdir().unwrap(), &hub.url, "", &[]).await;
    let account = async |name: &str| {
        let r = p.api_call(Method::POST, "/v1/accounts", Some(json!({"name": name}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let credit =
            p.api_call(Method::POST, &format!("/v1/accounts/{name}/credit"), Some(json!({"amount_usd": 100}))).await;
        assert_eq!(credit.status, StatusCode::OK);
        r.json()["key"]["key"].as_str().unwrap().to_owned()
    };
    let (alice, bob) = (account("alice").await, account("bob").await);
    let create = async |key: &str, body: Value| {
        let mut body = body;
        body["start_command"] = json!(demo_cmd());
        let r = p.api_as(key, Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };

    // Bad input is refused up front, naming the entry, echoing nothing secret.
    for (models, field) in [
        (json!([{"source": "s3://bucket/x"}]), "models[0].source"),
        (json!([{"source": "hf://acme/tiny"}, {"source": "hf://../x"}]), "models[1].source"),
        (json!([{"source": "https://files.example/w.bin", "include": ["*.bin"]}]), "models[0].include"),
        (json!([{"source": "https://user:hunter2@files.example/w.bin"}]), "models[0].source"),
        (json!("hf://acme/tiny"), "models"),
    ] {
        let body = json!({"name": "bad", "start_command": demo_cmd(), "models": models});
        let r = p.api_call(Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{models}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{}", r.text());
        assert!(!r.text().contains("hunter2"), "{}", r.text());
    }
    let none = p.api_call(Method::GET, "/v1/endpoints", None).await.json();
    assert_eq!(none["endpoints"].as_array().unwrap().len(), 0, "nothing was created");

    // Alice with her token stages the gated model; a worker of hers runs.
    let a = create(
        &alice,
        json!({"name": "a", "active_workers": 1, "env": {"HF_TOKEN": TOKEN},
                                  "models": [{"source": "hf://acme/gated"}]}),
    )
    .await;
    model_in(&p, &alice, "hf://acme/gated", "ready", 30).await;
    // Bob lists the same gated model: without a token, with one the hub knows but that has no
    // access, and with one it does not know. Alice's staging does not serve him.
    let cases = [
        (None, "401", "GatedRepo"),
        (Some(OTHER_TOKEN), "403", "GatedRepo"),
        (Some("hf_NotARealTokenAtAll00000000003"), "401", "Invalid credentials"),
    ];
    for (i, (token, status, reason)) in cases.iter().enumerate() {
        let env = token.map_or_else(|| json!({}), |t| json!({"HF_TOKEN": t}));
        let b = create(
            &bob,
            json!({"name": format!("b{i}"), "active_workers": 1, "env": env,
                                    "models": [{"source": "hf://acme/gated"}]}),
        )
        .await;
        let w = eventually("bob's worker pending with the hub's reason", Duration::from_secs(30), async || {
            let r = p.api_as(&bob, Method::GET, &format!("/v1/endpoints/{b}/workers"), None).await;
            let w = r.json()["workers"].as_array()?.first()?.clone();
            w["reason"].as_str().is_some_and(|r| r.contains("could not be staged")).then_some(w)
        })
        .await;
        let why = w["reason"].as_str().unwrap();
        assert!(why.contains(status) && why.contains(reason), "{why}");
        assert_eq!(w["state"], "pending");
        let r = p.api_as(&bob, Method::DELETE, &format!("/v1/endpoints/{b}"), None).await;
        assert!(r.status.is_success());
    }
    // Bob sees only his own models; Alice's endpoint is not named to him.
    let r = p.api_as(&bob, Method::GET, "/v1/models", None).await;
    assert!(!r.text().contains(&a), "{}", r.text());

    // A missing repository, revision or file fails with the hub's reason; a corrupt file is
    // fetched twice, then refused.
    for (i, (source, reason)) in [
        ("hf://acme/nope", "RepoNotFound"),
        ("hf://acme/tiny@v9", "RevisionNotFound"),
        ("hf://acme/broken", "checksum mismatch"),
    ]
    .into_iter()
    .enumerate()
    {
        create(&alice, json!({"name": format!("x{i}"), "active_workers": 0, "models": [{"source": source}]})).await;
        let m = model_in(&p, &alice, source, "failed", 30).await;
        let err = m["nodes"][0]["error"].as_str().unwrap();
        assert!(err.contains(reason), "{source}: {err}");
    }
    assert_eq!(hub.downloads("w.bin").len(), 2, "the corrupt file was fetched once more before the refusal");

    // No token in any answer, log line or CLI output.
    let mut seen = String::new();
    for path in ["/v1/models", "/v1/endpoints", &format!("/v1/endpoints/{a}"), &format!("/v1/endpoints/{a}/logs")] {
        seen.push_str(&p.api_call(Method::GET, path, None).await.text());
    }
    seen.push_str(&cli(&p, &["models"]).1);
    seen.push_str(&cli(&p, &["endpoint", "get", &a]).1);
    seen.push_str(&p.stderr());
    seen.push_str(&p.stdout());
    for t in [TOKEN, OTHER_TOKEN, "hf_NotARealTokenAtAll00000000003"] {
        assert!(!seen.contains(t), "a token leaked");
    }
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reads_the_staged_model_through_a_read_only_mount() {
    let hub = FakeHub::start(repos(json!({})));
    // With its demo endpoint: its image is the demo worker's (this binary, imported locally).
    let p = platform(tempfile::tempdir().unwrap(), &hub.url, "", &["--runtime", "docker"]).await;
    let list = p.api_call(Method::GET, "/v1/endpoints", None).await.json();
    let demo = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "demo").expect("demo").clone();
    let image = demo["image"].as_str().unwrap().to_owned();
    let e = p
        .create(json!({"name": "c", "image": image, "http_port": 9000, "active_workers": 1,
                       "start_command": "exec /sluice demo-worker --host 0.0.0.0",
                       "models": [{"source": "hf://acme/tiny", "include": ["*.json", "*.safetensors"]}]}))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    model_in(&p, &p.key, "hf://acme/tiny", "ready", 60).await;
    p.wait_ready(&id, 1).await;
    let r = p.get(&id, "/_demo/models").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let loaded = r.json();
    assert_eq!(loaded["files"], 2, "only the files the patterns select: {loaded}");
    assert_eq!(loaded["bytes"].as_u64(), Some(BIG + 22));
    // The content is the hub's: the same digests huggingface_hub computes.
    let o = Command::new(python())
        .arg(py_script("hub_check.py"))
        .args(["acme/tiny", "--offline"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", p.data_dir().join("models/hub"))
        .output()
        .unwrap();
    let check: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    for f in check["files"].as_array().unwrap() {
        assert_eq!(loaded["sha256"][f["path"].as_str().unwrap()], f["sha256"]);
    }
    let w = p.workers(&id).await.remove(0);
    let name = format!("sluice-{}", w["id"].as_str().unwrap());
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .Mounts}} {{json .Config.Env}}", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"Destination\":\"/sluice-models\"") && text.contains("\"RW\":false"), "{text}");
    assert!(text.contains("HF_HUB_CACHE=/sluice-models/hub") && text.contains("HF_HUB_OFFLINE=1"), "{text}");
    p.stop();
}
