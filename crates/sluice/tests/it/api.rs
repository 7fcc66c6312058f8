//! The control API: validation of every field, error bodies, auth, CRUD, OpenAPI.
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// Creates with `body` and expects `status` with the error naming `field` (None: no field).
async fn expect_error(p: &Platform, body: Value, status: u16, field: Option<&str>) {
    let r = p.api_call(Method::POST, "/v1/endpoints", Some(body.clone())).await;
    assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
    let j = r.json();
    assert!(j["error"]["code"].is_string() && j["error"]["message"].is_string(), "{j}");
    assert_eq!(j["error"]["field"].as_str(), field, "{body}: {j}");
}

fn base() -> Value {
    // active_workers 0: validation tests start no processes.
    json!({ "name": "ok", "start_command": "true", "active_workers": 0 })
}

fn with(k: &str, v: Value) -> Value {
    let mut b = base();
    b[k] = v;
    b
}

#[tokio::test]
async fn every_validation_rule_names_its_field_and_creates_nothing() {
    let p = Platform::start().await;
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (with("name", json!("🦀".repeat(129))), 422, Some("name")),
        (with("name", json!("a".repeat(129))), 422, Some("name")),
        (with("name", json!("")), 422, Some("name")),
        (with("name", json!("  ")), 422, Some("name")),
        (json!({"start_command": "true"}), 422, Some("name")),
        (with("active_workers", json!(-1)), 422, Some("active_workers")),
        (with("active_workers", json!(11)), 422, Some("active_workers")),
        (
            json!({"name": "x", "start_command": "true", "active_workers": 4, "max_workers": 3}),
            422,
            Some("max_workers"),
        ),
        (with("max_workers", json!(0)), 422, Some("max_workers")),
        (with("max_workers", json!(11)), 422, Some("max_workers")),
        (with("gpus_per_worker", json!(0)), 422, Some("gpus_per_worker")),
        (with("gpus_per_worker", json!(9)), 422, Some("gpus_per_worker")),
        (with("gpu_type", json!("TPU")), 422, Some("gpu_type")),
        (with("data_center", json!("mars")), 422, Some("data_center")),
        (with("http_port", json!(0)), 422, Some("http_port")),
        (with("http_port", json!(65536)), 422, Some("http_port")),
        (with("env", json!({"1BAD": "x"})), 422, Some("env")),
        (with("env", json!({"PORT": "1"})), 422, Some("env.PORT")),
        (with("env", json!({"OK": 1})), 422, Some("env.OK")),
        (
            with("network_volume", json!({"name": "v", "mount_path": "relative"})),
            422,
            Some("network_volume.mount_path"),
        ),
        (with("network_volume", json!({"name": "v", "mount_path": "/a/../b"})), 422, Some("network_volume.mount_path")),
        (with("network_volume", json!({"name": "", "mount_path": "/data"})), 422, Some("network_volume.name")),
        (with("network_volume", json!({"name": "v", "path": "/data"})), 422, Some("network_volume.path")),
        (with("health_check_path", json!("health")), 422, Some("health_check_path")),
        (with("idle_timeout_secs", json!(0)), 422, Some("idle_timeout_secs")),
        (with("idle_timeout_secs", json!(3601)), 422, Some("idle_timeout_secs")),
        (with("execution_timeout_secs", json!(0)), 422, Some("execution_timeout_secs")),
        (with("execution_timeout_secs", json!(86401)), 422, Some("execution_timeout_secs")),
        (with("load_balancing", json!("random")), 422, Some("load_balancing")),
        (with("shell", json!("sh")), 422, Some("shell")),
        (with("unknown_field", json!(1)), 422, Some("unknown_field")),
        (with("max_workers", json!("3")), 422, Some("max_workers")),
        (with("max_workers", json!(2.5)), 422, Some("max_workers")),
        (json!({"name": "no command"}), 422, Some("start_command")),
        (json!([1, 2]), 422, None),
    ];
    for (body, status, field) in cases {
        expect_error(&p, body, status, field).await;
    }
    // Malformed JSON, wrong content type, oversized body.
    let h =
        |ct: &str| vec![("authorization".into(), format!("Bearer {}", p.key)), ("content-type".into(), ct.to_owned())];
    let url = format!("{}/v1/endpoints", p.api);
    let r = send(Method::POST, &url, &h("application/json"), "{not json".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    let r = send(Method::POST, &url, &h("text/plain"), base().to_string().into()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json()["error"]["code"], "unsupported_media_type");
    let big = json!({"name": "big", "start_command": "true", "env": {"X": "y".repeat(2 * 1024 * 1024)}});
    let r = send(Method::POST, &url, &h("application/json"), big.to_string().into()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());

    // Nothing was created by any of that.
    let list = p.api_call(Method::GET, "/v1/endpoints", None).await.json();
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 0, "{list}");

    // The boundaries themselves are valid: 128 multi-byte characters.
    let e = p.create(with("name", json!("🦀".repeat(128)))).await;
    assert_eq!(e["name"].as_str().unwrap().chars().count(), 128);
    let e = p.create(with("name", json!("é".repeat(128)))).await;
    assert_eq!(e["max_workers"], 3);
    assert_eq!(e["gpus_per_worker"], 1);
    assert_eq!(e["gpu_type"], "SIM");
    assert_eq!(e["data_center"], "local");
    assert_eq!(e["shell"], "/bin/sh");
    assert_eq!(e["health_check_path"], "/health");
    assert_eq!(e["idle_timeout_secs"], 10);
    assert_eq!(e["execution_timeout_secs"], 600);
    let id = e["id"].as_str().unwrap();
    assert!(id.len() <= 63 && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{id}");
    assert!(e["url"].as_str().unwrap().starts_with(&format!("http://{id}.local.localhost:")));

    // Unique names: 409, and still two endpoints.
    let r = p.api_call(Method::POST, "/v1/endpoints", Some(with("name", json!("é".repeat(128))))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "conflict");
    let list = p.api_call(Method::GET, "/v1/endpoints", None).await.json();
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 2);

    // An invalid update changes nothing.
    let r = p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"max_workers": 0}))).await;
    assert_eq!(r.status.as_u16(), 422);
    assert_eq!(r.json()["error"]["field"], "max_workers");
    let r = p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"name": "🦀".repeat(128)}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let got = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!(got["max_workers"], 3);
    assert_eq!(got["name"], "é".repeat(128));
    p.stop();
}

#[tokio::test]
async fn crud_auth_openapi_and_secret_masking() {
    let p = Platform::start().await;
    // Every /v1 call needs a key.
    for (m, path) in [
        (Method::GET, "/v1/endpoints"),
        (Method::POST, "/v1/endpoints"),
        (Method::GET, "/v1/endpoints/abc"),
        (Method::GET, "/v1/openapi.json"),
        (Method::POST, "/v1/endpoints/abc/stop"),
    ] {
        let url = format!("{}{path}", p.api);
        let r = send(m.clone(), &url, &[], Default::default()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {path}");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        let r = send(m, &url, &[("authorization".into(), "Bearer sk_wrong".into())], Default::default()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The bare key (as RunPod clients send it) works too.
    let r = send(
        Method::GET,
        &format!("{}/v1/endpoints", p.api),
        &[("authorization".into(), p.key.clone())],
        Default::default(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let doc = p.api_call(Method::GET, "/v1/openapi.json", None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/v1/endpoints",
        "/v1/endpoints/{id}",
        "/v1/endpoints/{id}/stop",
        "/v1/endpoints/{id}/start",
        "/v1/endpoints/{id}/workers",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"]["EndpointInput"].is_object());

    let e = p
        .create(json!({
            "name": "llm", "start_command": "true", "active_workers": 0, "max_workers": 5,
            "env": {"MODEL": "llama-3", "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz", "DB_PASSWORD": "hunter2"},
            "network_volume": {"name": "models", "mount_path": "/runpod-volume"},
            "load_balancing": "least_outstanding_requests",
        }))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["env"]["MODEL"], "llama-3");
    assert_eq!(e["env"]["HF_TOKEN"], "hf_a****");
    assert_eq!(e["env"]["DB_PASSWORD"], "****");
    assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("hf_abcdefghijklmnop"));
    assert_eq!(e["load_balancing"], "least_outstanding_requests");

    let got = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["network_volume"]["mount_path"], "/runpod-volume");
    // Update keeps what it does not name.
    let u = p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"max_workers": 7}))).await.json();
    assert_eq!(u["max_workers"], 7);
    assert_eq!(u["env"]["MODEL"], "llama-3");
    assert_eq!(u["name"], "llm");
    // Every field can be updated, the scaling settings included.
    let u = p
        .api_call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({"scaling_policy": "knative", "queue_capacity": 9, "scale_down_delay_secs": 5})),
        )
        .await
        .json();
    assert_eq!((u["scaling_policy"].as_str(), u["queue_capacity"].as_u64()), (Some("knative"), Some(9)), "{u}");
    assert_eq!(u["scale_down_delay_secs"], 5);
    assert_eq!(u["max_workers"], 7);
    let s = p.api_call(Method::POST, &format!("/v1/endpoints/{id}/stop"), None).await.json();
    assert_eq!(s["status"], "stopped");
    let s = p.api_call(Method::POST, &format!("/v1/endpoints/{id}/start"), None).await.json();
    assert_eq!(s["status"], "running");
    assert_eq!(p.workers(&id).await.len(), 0);

    // Unknown ids and routes are 404 JSON; a wrong method is 405 JSON.
    for path in ["/v1/endpoints/nope", "/v1/endpoints/NOT-AN-ID", "/v1/endpoints/nope/workers", "/v1/nothing"] {
        let r = p.api_call(Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
    let r = p.api_call(Method::PUT, "/v1/endpoints", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json()["error"]["message"].is_string());

    let r = p.api_call(Method::DELETE, &format!("/v1/endpoints/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = p.api_call(Method::DELETE, &format!("/v1/endpoints/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The name is free again.
    p.create(json!({"name": "llm", "start_command": "true", "active_workers": 0})).await;

    // The admin key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.data_dir().join("admin.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    p.stop();
}
