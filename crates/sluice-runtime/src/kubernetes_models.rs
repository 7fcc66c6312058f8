//! Cached models on Kubernetes: each worker Pod gets one init container per model running the
//! Sluice binary (`sluice models fetch …`) into a hostPath cache on its node, so the next Pod
//! on that node finds the files there and fetches nothing; the worker mounts the cache
//! read-only with the hub cache's variables set. Pure, like the rest of the Pod manifest.
use k8s_openapi::api::core::v1::{Container, EnvVar, HostPathVolumeSource, SecurityContext, Volume, VolumeMount};

use crate::{MODELS_MOUNT, ModelMount};

/// The volume the cache is mounted from.
pub const VOLUME: &str = "sluice-models";

/// How a Pod stages its models.
#[derive(Debug, Clone)]
pub struct ModelCacheConfig {
    /// An image holding the `sluice` binary (the one deploy/Dockerfile builds).
    pub image: String,
    /// The cache's folder on every GPU node.
    pub host_path: String,
}

impl Default for ModelCacheConfig {
    fn default() -> Self {
        ModelCacheConfig {
            image: "registry.example.com/sluice:latest".into(),
            host_path: "/var/lib/sluice/models".into(),
        }
    }
}

/// What the models add to a worker Pod.
#[derive(Debug, Default)]
pub struct ModelParts {
    pub init_containers: Vec<Container>,
    pub volume: Option<Volume>,
    /// The worker's read-only mount of the cache.
    pub mount: Option<VolumeMount>,
    /// The worker's variables (`HF_HUB_CACHE`, `HF_HUB_OFFLINE=1`, `SLUICE_MODELS_DIR`).
    pub env: Vec<EnvVar>,
}

fn var(k: &str, v: &str) -> EnvVar {
    EnvVar { name: k.to_owned(), value: Some(v.to_owned()), ..Default::default() }
}

/// The init containers, volume, mount and variables for `models`; `token` is the endpoint's
/// `HF_TOKEN`, given to the fetches only (as the worker gets it in its own environment).
pub fn parts(cfg: &ModelCacheConfig, models: Option<&ModelMount>, token: Option<&str>) -> ModelParts {
    let Some(m) = models.filter(|m| !m.fetch.is_empty()) else { return ModelParts::default() };
    let mut env = vec![var("HF_ENDPOINT", &m.hf_endpoint)];
    if let Some(t) = token {
        env.push(var("HF_TOKEN", t));
    }
    let init_containers = m
        .fetch
        .iter()
        .enumerate()
        .map(|(i, args)| {
            let mut command = vec!["sluice".to_owned(), "models".into(), "fetch".into()];
            command.extend(args.iter().cloned());
            command.extend(["--cache".into(), MODELS_MOUNT.into(), "--quiet".into()]);
            Container {
                name: format!("models-{i}"),
                image: Some(cfg.image.clone()),
                command: Some(command),
                env: Some(env.clone()),
                volume_mounts: Some(vec![VolumeMount {
                    name: VOLUME.into(),
                    mount_path: MODELS_MOUNT.into(),
                    ..Default::default()
                }]),
                // The host folder belongs to root (the kubelet creates it).
                security_context: Some(SecurityContext { run_as_user: Some(0), ..Default::default() }),
                ..Default::default()
            }
        })
        .collect();
    ModelParts {
        init_containers,
        volume: Some(Volume {
            name: VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: cfg.host_path.clone(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        }),
        mount: Some(VolumeMount {
            name: VOLUME.into(),
            mount_path: MODELS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        }),
        env: crate::model_env(MODELS_MOUNT, &[]).iter().map(|(k, v)| var(k, v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_model_is_fetched_by_an_init_container_into_the_node_cache() {
        let cfg = ModelCacheConfig { image: "reg/sluice:1".into(), host_path: "/data/models".into() };
        let m = ModelMount {
            dir: None,
            paths: vec![],
            fetch: vec![
                vec!["hf://org/a@v1".into(), "--include".into(), "*.json".into()],
                vec!["https://files.example/w.bin".into()],
            ],
            hf_endpoint: "https://mirror.example".into(),
        };
        let p = parts(&cfg, Some(&m), Some("hf_secret"));
        let v = serde_json::to_value(&p.init_containers).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["name"], "models-0");
        assert_eq!(v[0]["image"], "reg/sluice:1");
        assert_eq!(
            v[0]["command"],
            json!([
                "sluice",
                "models",
                "fetch",
                "hf://org/a@v1",
                "--include",
                "*.json",
                "--cache",
                "/sluice-models",
                "--quiet"
            ])
        );
        assert_eq!(v[1]["command"][3], "https://files.example/w.bin");
        assert_eq!(
            v[0]["env"],
            json!([{"name": "HF_ENDPOINT", "value": "https://mirror.example"}, {"name": "HF_TOKEN", "value": "hf_secret"}])
        );
        assert_eq!(v[0]["volumeMounts"], json!([{"name": "sluice-models", "mountPath": "/sluice-models"}]));
        assert_eq!(
            serde_json::to_value(&p.volume).unwrap(),
            json!({"name": "sluice-models", "hostPath": {"path": "/data/models", "type": "DirectoryOrCreate"}})
        );
        assert_eq!(
            serde_json::to_value(&p.mount).unwrap(),
            json!({"name": "sluice-models", "mountPath": "/sluice-models", "readOnly": true})
        );
        let env: Vec<(String, String)> = p.env.iter().map(|e| (e.name.clone(), e.value.clone().unwrap())).collect();
        assert!(env.contains(&("HF_HUB_CACHE".into(), "/sluice-models/hub".into())));
        assert!(env.contains(&("HF_HUB_OFFLINE".into(), "1".into())));
        // No token: none is passed; no models: nothing at all.
        let p = parts(&cfg, Some(&m), None);
        assert_eq!(p.init_containers[0].env.as_ref().unwrap().len(), 1);
        let none = parts(&cfg, None, None);
        assert!(none.init_containers.is_empty() && none.volume.is_none() && none.env.is_empty());
    }
}
