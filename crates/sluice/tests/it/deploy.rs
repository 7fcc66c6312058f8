//! The Kubernetes manifests in `deploy/kubernetes` (R8.3). No cluster runs here, so they are
//! checked as far as can be without one: every document is a valid object of its kind (typed by
//! k8s-openapi, and nothing is lost when it is read and written back, so no field is misspelt),
//! every `sluice` flag they pass exists, and the configuration they mount is accepted.
use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// The YAML documents of a manifest file, as JSON (PyYAML, from the test venv).
fn documents(file: &Path) -> Vec<Value> {
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads `doc` as a `T` and writes it back: equal only if every field is one `T` has.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, doc, "a field was dropped or changed: not part of {}", std::any::type_name::<T>());
}

#[test]
fn the_kubernetes_manifests_are_valid_and_use_real_flags_and_config() {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    };
    let mut kinds = Vec::new();
    let mut deployments = Vec::new();
    for name in ["rbac.yaml", "control.yaml", "gateway.yaml"] {
        for doc in documents(&deploy_dir().join(name)) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&doc),
                "ServiceAccount" => round_trip::<ServiceAccount>(&doc),
                "Role" => round_trip::<Role>(&doc),
                "RoleBinding" => round_trip::<RoleBinding>(&doc),
                "ConfigMap" => round_trip::<ConfigMap>(&doc),
                "Deployment" => {
                    round_trip::<Deployment>(&doc);
                    deployments.push(doc.clone());
                }
                "Service" => round_trip::<Service>(&doc),
                other => panic!("{name}: unexpected kind {other:?}"),
            }
            if kind == "ConfigMap" {
                // The mounted configuration is one `sluice control` accepts.
                let toml = doc["data"]["sluice.toml"].as_str().unwrap();
                let cfg = sluice::config::Config::from_toml(toml).unwrap();
                cfg.check().unwrap();
                assert_eq!(cfg.runtime, sluice_core::RuntimeKind::Kubernetes);
            }
            kinds.push(kind);
        }
    }
    for k in ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"] {
        assert!(kinds.iter().any(|x| x == k), "no {k}");
    }
    // The Role lets the control plane do what the runtime does with Pods, and no more.
    let rbac = documents(&deploy_dir().join("rbac.yaml"));
    let role = rbac.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(role["rules"][1]["resources"], serde_json::json!(["pods/log"]));

    // Every flag passed to `sluice` exists on that subcommand.
    assert_eq!(deployments.len(), 2);
    for d in &deployments {
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let help = std::process::Command::new(BIN).args([args[0], "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for a in &args[1..] {
            let flag = a.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "`sluice {}` has no {flag}",
                args[0]
            );
        }
    }
}

/// Without a cluster to reach, `--runtime kubernetes` stops at once with a message that says so.
#[test]
fn the_kubernetes_runtime_without_a_cluster_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["up", "--runtime", "kubernetes", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .env("HOME", tmp.path())
        .env("KUBECONFIG", tmp.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot reach the Kubernetes API"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
