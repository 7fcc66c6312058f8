//! The whole `/v1` surface, walked from the OpenAPI document the platform serves: the document
//! is valid (checked with `openapi-spec-validator`) and a schema-driven fuzz (`schemathesis`, a
//! bounded run) finds no 5xx and no answer that breaks the document; a second account sees
//! nothing of the first in any answer of any operation; no error answer repeats a submitted
//! value; every numeric field of the endpoint body names itself when out of range.
use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A raw API call with `key` (and a JSON body when given).
async fn call(p: &Platform, key: &str, method: Method, path: &str, body: Option<&Value>) -> Resp {
    let mut h = vec![("authorization".to_owned(), format!("Bearer {key}"))];
    let bytes = match body {
        Some(b) => {
            h.push(("content-type".into(), "application/json".into()));
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    send(method, &format!("{}{path}", p.api), &h, bytes).await
}

/// One operation of the document.
struct Op {
    method: Method,
    path: String,
    query: Vec<String>,
    body_schema: Option<Value>,
}

/// The operations of the served document, with their query parameters and body schemas
/// (references resolved one level, which is how the document writes them).
async fn operations(p: &Platform) -> (Value, Vec<Op>) {
    let doc = call(p, &p.key, Method::GET, "/v1/openapi.json", None).await.json();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let method: Method = m.to_uppercase().parse().unwrap();
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let body_schema = op["requestBody"]["content"]["application/json"]["schema"].as_object().map(|s| {
                match s.get("$ref").and_then(Value::as_str) {
                    Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
                    None => Value::Object(s.clone()),
                }
            });
            ops.push(Op { method, path: path.clone(), query, body_schema });
        }
    }
    assert!(ops.len() >= 26, "{} operations", ops.len());
    (doc, ops)
}

/// `template` with its `{param}`s filled in.
fn fill(template: &str, values: &HashMap<&str, String>) -> String {
    let mut out = template.to_owned();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Python with the OpenAPI tools (`scripts/python.sh` installs them).
fn run_python(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(python()).args(args).output().expect("python");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_a_schema_driven_fuzz_finds_nothing() {
    // A platform with no GPU at all: fuzzed endpoints are created but never start a worker,
    // so no generated command ever runs.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("no-gpus.toml");
    std::fs::write(&cfg, "[[nodes]]\nname = \"empty\"\ndata_center = \"local\"\ngpus = []\n").unwrap();
    let p = Platform::start_in(dir, &["--no-demo", "--config", cfg.to_str().unwrap()]).await;
    let doc = call(&p, &p.key, Method::GET, "/v1/openapi.json", None).await;
    let file = p.dir.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    let (ok, out) = run_python(&[
        "-c",
        "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
        file.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("valid"), "openapi-spec-validator refused the document:\n{out}");
    // Query parameters are declared in the query (a fuzzer or generated client then sends them).
    let (_, ops) = operations(&p).await;
    let declared: Vec<String> = ops.iter().flat_map(|o| o.query.iter().map(|q| format!("{} {}", o.path, q))).collect();
    for q in
        ["/v1/usage from", "/v1/endpoints/{id}/logs follow", "/v1/endpoints/{id}/events before", "/v1/keys account"]
    {
        assert!(declared.iter().any(|d| d == q), "{q} is not a query parameter: {declared:?}");
    }
    // The fuzz: every check but "schema-valid data is accepted" (the document does not spell
    // out every validation rule, e.g. that a name has no control characters). A fixed seed,
    // so a failure reproduces.
    let schemathesis = python().with_file_name("schemathesis");
    let run = tokio::process::Command::new(schemathesis)
        .args(["run", &format!("{}/v1/openapi.json", p.api), "--url", &p.api])
        .args(["-H", &format!("Authorization: Bearer {}", p.key)])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "25", "--seed", "20261130", "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(400), run).await.expect("schemathesis finished").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
    p.stop();
}

/// Every operation of the document, called with a second account's key on the first account's
/// things (its endpoint ids, account name, key id, worker ids), answers without any id, name,
/// image or label of the first account, except what the caller sent itself; and changes
/// nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_account_sees_nothing_of_the_first_in_any_view() {
    let p = Platform::start().await;
    let account = async |name: &str| {
        let r = call(&p, &p.key, Method::POST, "/v1/accounts", Some(&json!({ "name": name }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let credit = json!({"amount_usd": 1000});
        call(&p, &p.key, Method::POST, &format!("/v1/accounts/{name}/credit"), Some(&credit)).await;
        r.json()["key"]["key"].as_str().unwrap().to_owned()
    };
    let (alice, bob) = (account("alice").await, account("bob").await);
    // Alice's things: a private image, two endpoints (one running a worker), a key with a label,
    // a prewarmed image, a webhook.
    let image = "registry.alice-corp.example/private/weights:7";
    let http = json!({"name": "alice-secret-model", "image": image, "start_command": demo_cmd(), "active_workers": 1});
    let r = call(&p, &alice, Method::POST, "/v1/endpoints", Some(&http)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let ep = r.json()["id"].as_str().unwrap().to_owned();
    let queue = json!({"name": "alice-queue-name", "type": "queue", "start_command": demo_cmd(), "active_workers": 0});
    let r = call(&p, &alice, Method::POST, "/v1/endpoints", Some(&queue)).await;
    let ep2 = r.json()["id"].as_str().unwrap().to_owned();
    let r = call(&p, &alice, Method::POST, "/v1/keys", Some(&json!({"label": "alice-ci-key-label"}))).await;
    let key_id = r.json()["id"].as_str().unwrap().to_owned();
    let prewarm = json!({"image": "registry.alice-corp.example/private/other:1"});
    assert_eq!(call(&p, &alice, Method::POST, "/v1/images/prewarm", Some(&prewarm)).await.status, StatusCode::ACCEPTED);
    let hook = json!({"webhook_url": "http://hooks.alice-corp.example/credit"});
    assert!(call(&p, &p.key, Method::PATCH, "/v1/accounts/alice", Some(&hook)).await.status.is_success());
    let worker = p.wait_ready(&ep, 1).await[0]["id"].as_str().unwrap().to_owned();
    // Bob has an endpoint of his own.
    let mine = json!({"name": "bobs-model", "start_command": demo_cmd(), "active_workers": 0});
    let r = call(&p, &bob, Method::POST, "/v1/endpoints", Some(&mine)).await;
    assert_eq!(r.status, StatusCode::CREATED);

    let markers = [
        ep.as_str(),
        ep2.as_str(),
        "alice-secret-model",
        "alice-queue-name",
        "alice-corp",
        worker.as_str(),
        key_id.as_str(),
        "alice-ci-key-label",
        "alice",
    ];
    // The markers are real: the admin sees them.
    let admin_gpus = call(&p, &p.key, Method::GET, "/v1/gpus", None).await.text();
    assert!(admin_gpus.contains(&worker) && admin_gpus.contains(&ep), "{admin_gpus}");
    let admin_images = call(&p, &p.key, Method::GET, "/v1/images", None).await.text();
    assert!(admin_images.contains(image), "{admin_images}");

    let (_, ops) = operations(&p).await;
    let mut values: HashMap<&str, String> = HashMap::new();
    values.insert("id", ep.clone());
    values.insert("name", "alice".into());
    let mut called = 0;
    for op in &ops {
        let mut v = values.clone();
        if op.path.starts_with("/v1/keys/") {
            v.insert("id", key_id.clone());
        }
        if op.path.starts_with("/v1/templates/") {
            v.insert("name", "vllm".into());
        }
        let mut path = fill(&op.path, &v);
        // Query parameters aimed at alice's things.
        let q: Vec<String> = op
            .query
            .iter()
            .filter_map(|name| match name.as_str() {
                "account" => Some("account=alice".to_owned()),
                "endpoint" => Some(format!("endpoint={ep}")),
                "worker" => Some(format!("worker={worker}")),
                _ => None,
            })
            .collect();
        if !q.is_empty() {
            path = format!("{path}?{}", q.join("&"));
        }
        let body = op.body_schema.as_ref().map(|_| match op.path.as_str() {
            "/v1/keys" => json!({"account": "alice"}),
            "/v1/templates/{name}/deploy" => json!({"set": {"model": "org/m", "name": "bob-deploy"}}),
            _ => json!({}),
        });
        let r = call(&p, &bob, op.method.clone(), &path, body.as_ref()).await;
        called += 1;
        assert!(r.status.as_u16() < 500, "{} {path}: {} {}", op.method, r.status, r.text());
        let text = r.text();
        let sent = format!("{path} {}", body.map(|b| b.to_string()).unwrap_or_default());
        for m in markers {
            if sent.contains(m) {
                continue;
            }
            assert!(!text.contains(m), "{} {path} showed bob {m:?} of alice's: {text}", op.method);
        }
    }
    assert!(called >= 26);
    // Views bob may use show him capacity, not whose it is.
    let gpus = call(&p, &bob, Method::GET, "/v1/gpus", None).await.json();
    let used: Vec<&Value> =
        gpus["nodes"][0]["gpus"].as_array().unwrap().iter().filter(|g| g["in_use"] == true).collect();
    assert_eq!(used.len(), 1, "{gpus}");
    assert!(used[0]["worker"].is_null() && used[0]["endpoint"].is_null(), "{gpus}");
    // A user key of the admin's account is an account key like any other: it reaches only
    // that account's endpoints, on the gateway and on /v2 as on /v1.
    let r = call(&p, &p.key, Method::POST, "/v1/keys", Some(&json!({"label": "ops"}))).await;
    let ops = r.json()["key"].as_str().unwrap().to_owned();
    let auth = vec![("authorization".to_owned(), format!("Bearer {ops}"))];
    let gw = send(Method::GET, &format!("{}/e/{ep}/x", p.gateway), &auth, Bytes::new()).await;
    assert_eq!(gw.status, StatusCode::NOT_FOUND, "{}", gw.text());
    let v2 = send(Method::GET, &format!("{}/v2/{ep2}/health", p.gateway), &auth, Bytes::new()).await;
    assert_eq!(v2.status, StatusCode::NOT_FOUND, "{}", v2.text());
    assert_eq!(call(&p, &ops, Method::GET, &format!("/v1/endpoints/{ep}"), None).await.status, StatusCode::NOT_FOUND);
    // The admin key itself reaches them.
    let admin = vec![("authorization".to_owned(), format!("Bearer {}", p.key))];
    assert_eq!(
        send(Method::GET, &format!("{}/v2/{ep2}/health", p.gateway), &admin, Bytes::new()).await.status,
        StatusCode::OK
    );

    // Nothing of alice's changed.
    let e = call(&p, &alice, Method::GET, &format!("/v1/endpoints/{ep}"), None).await.json();
    assert_eq!((e["name"].as_str(), e["status"].as_str()), (Some("alice-secret-model"), Some("running")), "{e}");
    assert_eq!(call(&p, &alice, Method::GET, &format!("/v1/endpoints/{ep2}"), None).await.status, StatusCode::OK);
    let keys = call(&p, &alice, Method::GET, "/v1/keys", None).await.json();
    assert!(keys["keys"].as_array().unwrap().iter().any(|k| k["id"] == key_id.as_str() && k["revoked_at"].is_null()));
    assert_eq!(
        call(&p, &p.key, Method::GET, "/v1/accounts", None).await.json()["accounts"].as_array().unwrap().len(),
        3
    );
    p.stop();
}

const CANARY: &str = "hf_CanarySecret0123456789xyz";

/// Bad values carrying a secret, for one property.
fn bad_values() -> [Value; 5] {
    [
        json!(CANARY),
        json!(format!("HF_TOKEN={CANARY}")),
        json!({ "k": CANARY }),
        json!([CANARY]),
        json!(format!("postgres://app:{CANARY}@db/app")),
    ]
}

/// No error answer repeats a submitted value: every property of every body, given values that
/// carry a secret in the wrong shape or out of its rules, and every query parameter, are
/// refused with the field named and the value nowhere in the answer. URL credentials in env
/// values are masked in every view, whatever the variable is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_repeats_a_submitted_value_and_urls_keep_their_passwords() {
    let p = Platform::start().await;
    // A password in a URL is masked in every view, whatever the variable is called.
    let env = json!({"DATABASE_URL": format!("postgres://app:{CANARY}@db:5432/app"), "MODEL": "m"});
    let command = format!("exec serve --db postgres://app:{CANARY}@db/app");
    let created = p.create(json!({"name": "urls", "start_command": command, "active_workers": 0, "env": env})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let patched = call(&p, &p.key, Method::PATCH, &format!("/v1/endpoints/{id}"), Some(&json!({"env": env}))).await;
    let got = call(&p, &p.key, Method::GET, &format!("/v1/endpoints/{id}"), None).await;
    let list = call(&p, &p.key, Method::GET, "/v1/endpoints", None).await;
    let (_, cli_get, _) = cli(&p, &["endpoint", "get", &id]);
    let (_, cli_list, _) = cli(&p, &["endpoint", "list", "--json"]);
    for (what, text) in [
        ("create", created.to_string()),
        ("patch", patched.text()),
        ("get", got.text()),
        ("list", list.text()),
        ("cli get", cli_get),
        ("cli list", cli_list),
    ] {
        assert!(!text.contains("CanarySecret"), "{what} showed the password: {text}");
    }
    assert_eq!(got.json()["env"]["DATABASE_URL"], "postgres://app:****@db:5432/app");
    assert_eq!(got.json()["env"]["MODEL"], "m");
    assert_eq!(got.json()["start_command"], "exec serve --db postgres://app:****@db/app");

    // Every operation: its properties and query parameters with values that carry a secret.
    let own = p.create_demo("own", json!({"active_workers": 0, "type": "queue"})).await;
    let (_, ops) = operations(&p).await;
    let mut values: HashMap<&str, String> = HashMap::new();
    values.insert("id", own.clone());
    values.insert("name", "admin".into());
    let mut refused = 0;
    for op in &ops {
        let mut v = values.clone();
        if op.path.starts_with("/v1/templates/") {
            v.insert("name", "vllm".into());
        }
        let path = fill(&op.path, &v);
        let check = |r: &Resp, what: &str| {
            if r.status.as_u16() >= 400 {
                assert!(
                    !r.text().contains("CanarySecret"),
                    "{} {path} {what} repeated the secret: {}",
                    op.method,
                    r.text()
                );
            }
        };
        for q in &op.query {
            let r = call(&p, &p.key, op.method.clone(), &format!("{path}?{q}={CANARY}"), None).await;
            check(&r, q);
            refused += usize::from(r.status.is_client_error());
        }
        let Some(schema) = &op.body_schema else { continue };
        for prop in schema["properties"].as_object().into_iter().flat_map(|o| o.keys()) {
            for bad in bad_values() {
                let body = json!({ prop: bad });
                let r = call(&p, &p.key, op.method.clone(), &path, Some(&body)).await;
                check(&r, prop);
                if r.status == StatusCode::UNPROCESSABLE_ENTITY && r.json()["error"]["field"].is_string() {
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 50, "only {refused} refusals");
    // The cases from the report: a map given as a string; registry credentials as a string.
    for body in [
        json!({"name": "x", "start_command": "true", "env": format!("HF_TOKEN={CANARY}")}),
        json!({"name": "x", "start_command": "true", "registry_auth": format!("user:{CANARY}")}),
        json!({"name": "x", "start_command": "true", "registry_auth": {"server": "r", "username": "u", "password": 5}}),
    ] {
        let r = call(&p, &p.key, Method::POST, "/v1/endpoints", Some(&body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!r.text().contains("CanarySecret"), "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("expected"), "{}", r.text());
    }
    // /v2: a policy and a webhook that carry the secret.
    for body in [json!({"input": {}, "policy": CANARY}), json!({"input": {}, "webhook": CANARY}), json!(CANARY)] {
        let r = v2_call(&p, Method::POST, &format!("/{own}/run"), Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert!(!r.text().contains("CanarySecret"), "{}", r.text());
    }

    p.stop();
}

/// Each numeric field of the endpoint body, sent alone just outside its range and at the widths
/// where integers overflow, is refused naming exactly that field.
#[tokio::test]
async fn every_numeric_field_names_itself_when_out_of_range() {
    let p = Platform::start().await;
    let fields: [(&str, i64, i64); 16] = [
        ("http_port", 1, 65535),
        ("idle_timeout_secs", 1, 3600),
        ("execution_timeout_secs", 1, 86_400),
        ("startup_timeout_secs", 1, 3600),
        ("active_workers", 0, 100),
        ("max_workers", 1, 100),
        ("gpus_per_worker", 1, 8),
        ("scaling_target", 1, 1_000_000),
        ("concurrency_per_worker", 1, 100_000),
        ("scale_up_window_secs", 1, 3600),
        ("scale_up_max_percent", 1, 100_000),
        ("scale_down_delay_secs", 0, 3600),
        ("scale_down_max_percent", 1, 100),
        ("queue_capacity", 0, 1_000_000),
        ("queue_timeout_secs", 1, 3600),
        ("max_requests_per_minute", 0, 100_000_000),
    ];
    let quota = call(&p, &p.key, Method::GET, "/v1/accounts", None).await.json()["accounts"][0]["max_workers_quota"]
        .as_i64()
        .unwrap();
    for (field, lo, hi) in fields {
        let hi = if field.ends_with("_workers") { quota } else { hi };
        for v in [lo - 1, hi + 1, 1 << 31, 1 << 32, -1] {
            if (lo..=hi).contains(&v) {
                continue;
            }
            let body = json!({"name": "n", "start_command": "true", field: v});
            let r = call(&p, &p.key, Method::POST, "/v1/endpoints", Some(&body)).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}={v}: {}", r.text());
            assert_eq!(r.json()["error"]["field"], field, "{field}={v}: {}", r.text());
        }
    }
    let list = call(&p, &p.key, Method::GET, "/v1/endpoints", None).await.json();
    assert!(list["endpoints"].as_array().unwrap().is_empty(), "nothing was created: {list}");
    p.stop();
}
