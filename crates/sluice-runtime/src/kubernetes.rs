//! The Kubernetes runtime (feature `k8s`): each worker is a Pod in a configured namespace,
//! created through the API server with kube-rs. One Pod per worker, not a Deployment per
//! endpoint: the reconciler decides which worker drains (one with no requests in flight), which
//! ones a rolling update replaces, and which GPUs of the declared inventory a worker holds; a
//! Deployment's scale-down would pick its own victims and kill busy workers.
//!
//! A Pod carries the image (the command through the endpoint's shell, when one is given), the
//! environment, the port, a readiness probe on the health path (so readiness comes from the
//! kubelet, not from probing every Pod from the control plane), `nvidia.com/gpu` limits,
//! node selection by GPU type and data center (node labels, configurable) and the network
//! volume as a PersistentVolumeClaim. Labels name the platform instance, the endpoint and the
//! worker, so a restarted control plane adopts or removes exactly its own Pods. The gateway
//! reaches a Pod at its Pod IP (the control plane and gateways run inside the cluster). Output
//! is followed through the Pod log API into the same per-worker log files the other runtimes
//! write, which the log pipeline tails.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{AsyncBufReadExt, FutureExt, StreamExt, future::BoxFuture};
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerPort, EnvVar, HTTPGetAction, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
        ResourceRequirements, Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, PostParams},
};
use sluice_core::{EndpointId, RuntimeKind, WorkerId};
use tokio::io::AsyncWriteExt;

use crate::{
    Error, LaunchSpec, Launched, Observed, Result, WorkerRuntime,
    process::{ENV_ENDPOINT, ENV_INSTANCE, ENV_WORKER},
};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_INSTANCE: &str = "sluice.dev/instance";
pub const LABEL_ENDPOINT: &str = "sluice.dev/endpoint";
pub const LABEL_WORKER: &str = "sluice.dev/worker";
/// The worker's port, so a restarted control plane knows where to reach an adopted Pod.
pub const ANNOTATION_PORT: &str = "sluice.dev/port";
const CONTAINER: &str = "worker";

#[derive(Debug, Clone)]
pub struct KubeRuntimeConfig {
    /// Marks this platform instance's Pods (label `sluice.dev/instance`).
    pub instance_id: String,
    pub namespace: String,
    /// Per-worker log files: `logs_dir/{endpoint}/{worker}.stdout.log` (the Pod log API merges
    /// the two streams).
    pub logs_dir: PathBuf,
    /// The node label that names a node's GPU type (NVIDIA's GPU feature discovery:
    /// `nvidia.com/gpu.product`); `None`: not used for selection.
    pub gpu_type_label: Option<String>,
    /// The node label that names its data center (`topology.kubernetes.io/zone`).
    pub data_center_label: Option<String>,
    /// The extended resource GPUs are requested as.
    pub gpu_resource: String,
    /// How long a created Pod may take to get an IP before the launch counts as failed.
    pub ip_timeout: Duration,
    /// Where Pods stage their endpoint's models (init containers into a hostPath cache).
    pub models: crate::kubernetes_models::ModelCacheConfig,
}

impl KubeRuntimeConfig {
    pub fn new(instance_id: String, namespace: String, logs_dir: PathBuf) -> Self {
        KubeRuntimeConfig {
            instance_id,
            namespace,
            logs_dir,
            gpu_type_label: Some("nvidia.com/gpu.product".into()),
            data_center_label: Some("topology.kubernetes.io/zone".into()),
            gpu_resource: "nvidia.com/gpu".into(),
            ip_timeout: Duration::from_secs(120),
            models: crate::kubernetes_models::ModelCacheConfig::default(),
        }
    }
}

pub struct KubeRuntime {
    cfg: KubeRuntimeConfig,
    pods: Api<Pod>,
    /// Log followers by worker, so each Pod is followed once.
    following: Arc<Mutex<HashMap<WorkerId, tokio::task::AbortHandle>>>,
}

/// The Pod name of a worker (worker ids are DNS labels already).
pub fn pod_name(worker: &WorkerId) -> String {
    format!("sluice-{worker}")
}

/// The Pod for a worker: pure, so every field is checked by unit tests.
pub fn pod_manifest(cfg: &KubeRuntimeConfig, spec: &LaunchSpec) -> Pod {
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), "sluice".to_owned()),
        (LABEL_INSTANCE.to_owned(), cfg.instance_id.clone()),
        (LABEL_ENDPOINT.to_owned(), spec.endpoint.to_string()),
        (LABEL_WORKER.to_owned(), spec.worker.to_string()),
    ]);
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() })
        .collect();
    for (k, v) in [
        ("PORT", spec.http_port.to_string()),
        (ENV_INSTANCE, cfg.instance_id.clone()),
        (ENV_WORKER, spec.worker.to_string()),
        (ENV_ENDPOINT, spec.endpoint.to_string()),
    ] {
        env.retain(|e| e.name != k);
        env.push(EnvVar { name: k.to_owned(), value: Some(v), ..Default::default() });
    }
    let mut node_selector = BTreeMap::new();
    if let Some(l) = &cfg.gpu_type_label
        && !spec.gpus.is_empty()
    {
        node_selector.insert(l.clone(), spec.gpu_type.clone());
    }
    if let Some(l) = &cfg.data_center_label {
        node_selector.insert(l.clone(), spec.data_center.clone());
    }
    let resources = (!spec.gpus.is_empty()).then(|| {
        let n = BTreeMap::from([(cfg.gpu_resource.clone(), Quantity(spec.gpus.len().to_string()))]);
        ResourceRequirements { limits: Some(n.clone()), requests: Some(n), ..Default::default() }
    });
    let (volumes, mounts) = match &spec.volume {
        Some(v) => (
            Some(vec![Volume {
                name: "network-volume".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: v.name.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            }]),
            Some(vec![VolumeMount {
                name: "network-volume".into(),
                mount_path: v.mount_path.clone(),
                ..Default::default()
            }]),
        ),
        None => (None, None),
    };
    let models = crate::kubernetes_models::parts(
        &cfg.models,
        spec.models.as_ref(),
        spec.env.get("HF_TOKEN").map(String::as_str).filter(|t| !t.is_empty()),
    );
    for v in &models.env {
        env.retain(|e| e.name != v.name);
        env.push(v.clone());
    }
    let volumes = match (volumes, models.volume) {
        (v, None) => v,
        (v, Some(m)) => Some(v.into_iter().flatten().chain([m]).collect()),
    };
    let mounts = match (mounts, models.mount) {
        (v, None) => v,
        (v, Some(m)) => Some(v.into_iter().flatten().chain([m]).collect()),
    };
    let port = i32::from(spec.http_port);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&spec.worker)),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(ANNOTATION_PORT.to_owned(), spec.http_port.to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            // The reconciler replaces a worker that exits; the kubelet must not restart it.
            restart_policy: Some("Never".into()),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            init_containers: (!models.init_containers.is_empty()).then_some(models.init_containers),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: spec.image.clone(),
                command: spec.start_command.as_ref().map(|c| vec![spec.shell.clone(), "-c".into(), c.clone()]),
                env: Some(env),
                ports: Some(vec![ContainerPort {
                    container_port: port,
                    name: Some("http".into()),
                    ..Default::default()
                }]),
                readiness_probe: Some(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some(spec.health_path.clone()),
                        port: IntOrString::Int(port),
                        ..Default::default()
                    }),
                    period_seconds: Some(1),
                    failure_threshold: Some(3),
                    ..Default::default()
                }),
                resources,
                volume_mounts: mounts,
                ..Default::default()
            }],
            volumes,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a listed Pod says: its worker, endpoint, address, exit and readiness.
pub fn observe(pod: &Pod) -> Option<Observed> {
    let labels = pod.metadata.labels.as_ref()?;
    let worker = WorkerId::parse(labels.get(LABEL_WORKER)?).ok()?;
    let endpoint = labels.get(LABEL_ENDPOINT).and_then(|e| EndpointId::parse(e).ok());
    let port: Option<u16> =
        pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_PORT)).and_then(|p| p.parse().ok());
    let status = pod.status.as_ref();
    let ip: Option<IpAddr> = status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let exited = match phase {
        "Failed" | "Succeeded" => {
            let why = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
                .and_then(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|t| match &t.reason {
                    Some(r) => format!("exited with code {} ({r})", t.exit_code),
                    None => format!("exited with code {}", t.exit_code),
                });
            Some(why.unwrap_or_else(|| format!("pod {}", phase.to_lowercase())))
        }
        _ => None,
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(Observed {
        worker,
        endpoint,
        addr: ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)),
        pid: None,
        exited,
        ready: Some(ready && pod.metadata.deletion_timestamp.is_none()),
    })
}

fn api_error(worker: &WorkerId, e: kube::Error) -> Error {
    Error::Control { worker: worker.to_string(), message: format!("Kubernetes API: {e}") }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl KubeRuntime {
    /// Connects as the Pod's service account in a cluster (else with the kubeconfig).
    pub async fn connect(cfg: KubeRuntimeConfig) -> Result<Self> {
        let client = Client::try_default().await.map_err(|e| {
            Error::Launch(format!("cannot reach the Kubernetes API (in-cluster service account or kubeconfig): {e}"))
        })?;
        Ok(KubeRuntime::new(client, cfg))
    }

    /// A runtime on `client`.
    pub fn new(client: Client, cfg: KubeRuntimeConfig) -> Self {
        let pods = Api::namespaced(client, &cfg.namespace);
        KubeRuntime { cfg, pods, following: Arc::default() }
    }

    fn log_file(&self, endpoint: &EndpointId, worker: &WorkerId) -> PathBuf {
        self.cfg.logs_dir.join(endpoint.as_str()).join(format!("{worker}.stdout.log"))
    }

    /// Follows the Pod's log into its file, from when the container starts until the Pod is gone.
    fn follow_logs(&self, endpoint: &EndpointId, worker: &WorkerId) {
        let mut following = self.following.lock().unwrap_or_else(|e| e.into_inner());
        if following.contains_key(worker) {
            return;
        }
        let (pods, name, path) = (self.pods.clone(), pod_name(worker), self.log_file(endpoint, worker));
        let task = tokio::spawn(async move {
            if let Some(dir) = path.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await else {
                return;
            };
            let mut since_seconds = None;
            loop {
                let params =
                    LogParams { follow: true, container: Some(CONTAINER.into()), since_seconds, ..Default::default() };
                match pods.log_stream(&name, &params).await {
                    Ok(stream) => {
                        let mut lines = stream.lines();
                        while let Some(Ok(line)) = lines.next().await {
                            if file.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        let _ = file.flush().await;
                        // The stream ended: the container stopped, or the connection dropped.
                        // Resume with what is new since (a second of overlap at most).
                        since_seconds = Some(1);
                    }
                    Err(e) if is_not_found(&e) => return,
                    // Not started yet (ContainerCreating), or the API is away: try again.
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        following.insert(worker.clone(), task.abort_handle());
    }

    fn unfollow(&self, worker: &WorkerId) {
        if let Some(h) = self.following.lock().unwrap_or_else(|e| e.into_inner()).remove(worker) {
            h.abort();
        }
    }

    async fn start_pod(&self, spec: LaunchSpec) -> Result<Launched> {
        let pod = pod_manifest(&self.cfg, &spec);
        let name = pod_name(&spec.worker);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {} // created by an earlier attempt
            Err(e) => return Err(Error::Launch(format!("creating pod {name}: {e}"))),
        }
        self.follow_logs(&spec.endpoint, &spec.worker);
        // The gateway needs the Pod IP, which exists once the Pod is scheduled and its sandbox is up.
        let deadline = tokio::time::Instant::now() + self.cfg.ip_timeout;
        loop {
            match self.pods.get_opt(&name).await {
                Ok(Some(p)) => {
                    if let Some(o) = observe(&p) {
                        if let Some(why) = o.exited {
                            return Err(Error::Launch(format!("pod {name} ended before it got an address: {why}")));
                        }
                        if let Some(addr) = o.addr {
                            return Ok(Launched { addr, pid: None, image_at: None });
                        }
                    }
                }
                Ok(None) => return Err(Error::Launch(format!("pod {name} disappeared after it was created"))),
                Err(e) => tracing::debug!(pod = %name, error = %e, "reading the pod failed; retrying"),
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.pods.delete(&name, &DeleteParams::default()).await;
                return Err(Error::Launch(format!(
                    "pod {name} got no IP within {} s (unschedulable? see `kubectl describe pod {name}`)",
                    self.cfg.ip_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl WorkerRuntime for KubeRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Kubernetes
    }

    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched>> {
        self.start_pod(spec).boxed()
    }

    fn stop(&self, worker: &WorkerId, grace: Duration) -> BoxFuture<'_, Result<()>> {
        let worker = worker.clone();
        async move {
            let params = DeleteParams { grace_period_seconds: Some(grace.as_secs() as u32), ..Default::default() };
            let r = match self.pods.delete(&pod_name(&worker), &params).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(api_error(&worker, e)),
            };
            self.unfollow(&worker);
            r
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Observed>>> {
        async move {
            let selector = format!("{LABEL_INSTANCE}={}", self.cfg.instance_id);
            let pods = self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::Control { worker: "*".into(), message: format!("listing pods: {e}") })?;
            let observed: Vec<Observed> = pods.items.iter().filter_map(observe).collect();
            // Adopted Pods (after a restart of the control plane) are followed again.
            for o in observed.iter().filter(|o| o.exited.is_none()) {
                if let Some(e) = &o.endpoint {
                    self.follow_logs(e, &o.worker);
                }
            }
            Ok(observed)
        }
        .boxed()
    }

    fn reports_readiness(&self) -> bool {
        true
    }

    fn log_paths(&self, endpoint: &EndpointId, worker: &WorkerId) -> Vec<PathBuf> {
        vec![self.log_file(endpoint, worker)]
    }
}

/// No cluster runs here: these tests check the manifests field by field, and drive the runtime
/// through a real `kube::Client` against a fake API server on loopback (axum) that keeps Pods in
/// memory and answers as the API server does (201, 404 and 409 `Status` bodies, label selectors,
/// the log subresource). A real cluster is never contacted.
#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use axum::{
        Json, Router,
        extract::{Path, Query, State},
        http::StatusCode,
        response::{IntoResponse, Response},
        routing::get,
    };
    use serde_json::{Value, json};
    use sluice_core::{EndpointId, WorkerId};

    use super::*;
    use crate::VolumeMount as Mount;

    fn cfg(dir: &std::path::Path) -> KubeRuntimeConfig {
        KubeRuntimeConfig {
            ip_timeout: Duration::from_secs(5),
            ..KubeRuntimeConfig::new("inst1".into(), "ns".into(), dir.into())
        }
    }

    fn spec(worker: &str, gpus: Vec<u32>) -> LaunchSpec {
        LaunchSpec {
            worker: WorkerId::parse(worker).unwrap(),
            endpoint: EndpointId::parse("ep1").unwrap(),
            shell: "/bin/sh".into(),
            start_command: Some("python serve.py".into()),
            image: Some("registry.example/llm:1".into()),
            env: [("MODEL".to_owned(), "llama".to_owned()), ("PORT".to_owned(), "1".to_owned())].into(),
            gpus,
            http_port: 8000,
            volume: Some(Mount { name: "models".into(), mount_path: "/models".into() }),
            registry: None,
            health_path: "/ping".into(),
            gpu_type: "H100".into(),
            data_center: "eu-1".into(),
            host_network: false,
            models: None,
        }
    }

    #[test]
    fn a_worker_pod_has_every_field_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let pod = pod_manifest(&cfg(dir.path()), &spec("w1", vec![0, 1]));
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["metadata"]["name"], "sluice-w1");
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(
            v["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "sluice", "sluice.dev/instance": "inst1",
                   "sluice.dev/endpoint": "ep1", "sluice.dev/worker": "w1"})
        );
        assert_eq!(v["metadata"]["annotations"], json!({"sluice.dev/port": "8000"}));
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        assert_eq!(
            v["spec"]["nodeSelector"],
            json!({"nvidia.com/gpu.product": "H100", "topology.kubernetes.io/zone": "eu-1"})
        );
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["name"], "worker");
        assert_eq!(c["image"], "registry.example/llm:1");
        assert_eq!(c["command"], json!(["/bin/sh", "-c", "python serve.py"]));
        assert_eq!(c["ports"], json!([{"containerPort": 8000, "name": "http"}]));
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"path": "/ping", "port": 8000}, "periodSeconds": 1, "failureThreshold": 3})
        );
        assert_eq!(c["resources"], json!({"limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "2"}}));
        let env: BTreeMap<String, String> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(env.len(), c["env"].as_array().unwrap().len(), "no variable twice");
        assert_eq!(env["MODEL"], "llama");
        assert_eq!(env["PORT"], "8000", "the platform's PORT wins over the endpoint's");
        assert_eq!(env["SLUICE_INSTANCE"], "inst1");
        assert_eq!(env["SLUICE_WORKER_ID"], "w1");
        assert_eq!(env["SLUICE_ENDPOINT_ID"], "ep1");
        assert_eq!(c["volumeMounts"], json!([{"name": "network-volume", "mountPath": "/models"}]));
        assert_eq!(
            v["spec"]["volumes"],
            json!([{"name": "network-volume", "persistentVolumeClaim": {"claimName": "models", "readOnly": false}}])
        );

        // No GPUs: no GPU resources and no GPU-type selection; no command: the image's own.
        let mut s = spec("w2", vec![]);
        s.start_command = None;
        s.volume = None;
        let v = serde_json::to_value(pod_manifest(&cfg(dir.path()), &s)).unwrap();
        let c = &v["spec"]["containers"][0];
        assert!(c.get("resources").is_none() && c.get("command").is_none() && c.get("volumeMounts").is_none());
        assert_eq!(v["spec"]["nodeSelector"], json!({"topology.kubernetes.io/zone": "eu-1"}));
        // Labels can be switched off.
        let mut plain = cfg(dir.path());
        (plain.gpu_type_label, plain.data_center_label) = (None, None);
        let v = serde_json::to_value(pod_manifest(&plain, &spec("w3", vec![0]))).unwrap();
        assert!(v["spec"].get("nodeSelector").is_none());
        assert!(v["spec"].get("initContainers").is_none(), "no models, no init container");
        // Models: fetched by an init container; the worker mounts the cache read-only beside
        // its network volume.
        let mut s = spec("w4", vec![0]);
        s.models = Some(crate::ModelMount {
            dir: None,
            paths: vec![],
            fetch: vec![vec!["hf://o/m".into()]],
            hf_endpoint: "https://hub".into(),
        });
        let v = serde_json::to_value(pod_manifest(&cfg(dir.path()), &s)).unwrap();
        assert_eq!(v["spec"]["initContainers"][0]["command"][3], "hf://o/m");
        assert_eq!(v["spec"]["containers"][0]["volumeMounts"][1]["readOnly"], true);
        assert_eq!(v["spec"]["volumes"][1]["hostPath"]["path"], "/var/lib/sluice/models");
    }

    fn pod_json(name: &str, worker: &str, phase: &str, ready: bool, extra_status: Value) -> Value {
        let mut status = json!({"phase": phase, "podIP": "10.1.0.7",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
        if let (Some(s), Some(x)) = (status.as_object_mut(), extra_status.as_object()) {
            s.extend(x.clone());
        }
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"sluice.dev/worker": worker, "sluice.dev/endpoint": "ep1",
                "sluice.dev/instance": "inst1"}, "annotations": {"sluice.dev/port": "8000"}},
            "status": status})
    }

    #[test]
    fn a_listed_pod_says_where_it_is_whether_it_is_ready_and_how_it_ended() {
        let p: Pod = serde_json::from_value(pod_json("sluice-w1", "w1", "Running", true, json!({}))).unwrap();
        let o = observe(&p).unwrap();
        assert_eq!(o.worker.as_str(), "w1");
        assert_eq!(o.endpoint.unwrap().as_str(), "ep1");
        assert_eq!(o.addr, Some("10.1.0.7:8000".parse().unwrap()));
        assert_eq!((o.exited, o.ready), (None, Some(true)));
        let p: Pod = serde_json::from_value(pod_json("sluice-w1", "w1", "Running", false, json!({}))).unwrap();
        assert_eq!(observe(&p).unwrap().ready, Some(false));
        let failed = pod_json(
            "sluice-w1",
            "w1",
            "Failed",
            false,
            json!({"containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let o = observe(&serde_json::from_value(failed).unwrap()).unwrap();
        assert_eq!(o.exited.as_deref(), Some("exited with code 137 (OOMKilled)"));
        let done = pod_json("sluice-w1", "w1", "Succeeded", false, json!({}));
        assert_eq!(observe(&serde_json::from_value(done).unwrap()).unwrap().exited.as_deref(), Some("pod succeeded"));
        let mut pending = pod_json("sluice-w1", "w1", "Pending", false, json!({}));
        pending["status"]["podIP"] = Value::Null;
        assert_eq!(observe(&serde_json::from_value(pending).unwrap()).unwrap().addr, None);
        let mut other = pod_json("x", "w1", "Running", true, json!({}));
        other["metadata"]["labels"] = json!({"app": "someone-else"});
        assert!(observe(&serde_json::from_value(other).unwrap()).is_none(), "not a worker");
    }

    /// A fake API server: Pods in memory, as the API server answers for them.
    #[derive(Default)]
    struct Fake {
        pods: Mutex<BTreeMap<String, Value>>,
        posted: Mutex<Vec<Value>>,
        deletes: Mutex<Vec<(String, Option<String>)>>,
        log_calls: Mutex<u32>,
    }

    fn status(code: u16, reason: &str, message: String) -> Response {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code});
        (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
    }

    async fn create(State(f): State<Arc<Fake>>, Path(ns): Path<String>, Json(mut pod): Json<Value>) -> Response {
        assert_eq!(ns, "ns");
        f.posted.lock().unwrap().push(pod.clone());
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut pods = f.pods.lock().unwrap();
        if pods.contains_key(&name) {
            return status(409, "AlreadyExists", format!("pods \"{name}\" already exists"));
        }
        pod["status"] = json!({"phase": "Running", "podIP": format!("10.1.0.{}", pods.len() + 1),
            "conditions": [{"type": "Ready", "status": "True"}]});
        pods.insert(name, pod.clone());
        (StatusCode::CREATED, Json(pod)).into_response()
    }

    async fn list(State(f): State<Arc<Fake>>, Query(q): Query<BTreeMap<String, String>>) -> Json<Value> {
        let (k, v) = q.get("labelSelector").and_then(|s| s.split_once('=')).expect("a label selector");
        let items: Vec<Value> =
            f.pods.lock().unwrap().values().filter(|p| p["metadata"]["labels"][k] == v).cloned().collect();
        Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}))
    }

    async fn one(State(f): State<Arc<Fake>>, Path((_, name)): Path<(String, String)>) -> Response {
        match f.pods.lock().unwrap().get(&name) {
            Some(p) => Json(p.clone()).into_response(),
            None => status(404, "NotFound", format!("pods \"{name}\" not found")),
        }
    }

    async fn delete(
        State(f): State<Arc<Fake>>,
        Path((_, name)): Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> Response {
        let grace = serde_json::from_slice::<Value>(&body).ok().map(|b| b["gracePeriodSeconds"].to_string());
        f.deletes.lock().unwrap().push((name.clone(), grace));
        match f.pods.lock().unwrap().remove(&name) {
            Some(p) => Json(p).into_response(),
            None => status(404, "NotFound", format!("pods \"{name}\" not found")),
        }
    }

    async fn log(State(f): State<Arc<Fake>>, Path((_, name)): Path<(String, String)>) -> Response {
        if !f.pods.lock().unwrap().contains_key(&name) {
            return status(404, "NotFound", format!("pods \"{name}\" not found"));
        }
        let mut calls = f.log_calls.lock().unwrap();
        *calls += 1;
        if *calls == 1 { "loading model\nlistening on :8000\n".into_response() } else { "".into_response() }
    }

    async fn fake_api() -> (Arc<Fake>, Client) {
        let fake = Arc::new(Fake::default());
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list).post(create))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(one).delete(delete))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(log))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        (fake, Client::try_from(config).unwrap())
    }

    #[tokio::test]
    async fn pods_are_created_listed_followed_adopted_and_deleted_through_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, client) = fake_api().await;
        let rt = KubeRuntime::new(client.clone(), cfg(dir.path()));
        assert!(rt.reports_readiness());

        // Start: the Pod is created as the manifest says, and the worker is reached at its Pod IP.
        let launched = rt.start(spec("w1", vec![0])).await.unwrap();
        assert_eq!(launched.addr, "10.1.0.1:8000".parse().unwrap());
        let posted = fake.posted.lock().unwrap()[0].clone();
        assert_eq!(posted, serde_json::to_value(pod_manifest(&cfg(dir.path()), &spec("w1", vec![0]))).unwrap());
        // A second create of the same Pod (a retried launch) is not an error.
        assert!(rt.start(spec("w1", vec![0])).await.is_ok());

        // Listed by this instance's label, ready as the kubelet says.
        let seen = rt.list().await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].worker.as_str(), seen[0].ready, seen[0].addr), ("w1", Some(true), Some(launched.addr)));
        fake.pods.lock().unwrap().get_mut("sluice-w1").unwrap()["status"]["conditions"][0]["status"] = json!("False");
        assert_eq!(rt.list().await.unwrap()[0].ready, Some(false));

        // Its output arrives in the worker's log file, from the Pod log API.
        let path = rt.log_paths(&EndpointId::parse("ep1").unwrap(), &WorkerId::parse("w1").unwrap())[0].clone();
        for _ in 0..100 {
            if std::fs::read_to_string(&path).unwrap_or_default().contains("listening on :8000") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "loading model\nlistening on :8000\n");

        // A restarted control plane (a new runtime) finds the same Pod; another instance's Pods
        // are not its own.
        let again = KubeRuntime::new(client.clone(), cfg(dir.path()));
        assert_eq!(again.list().await.unwrap()[0].worker.as_str(), "w1");
        let mut other = cfg(dir.path());
        other.instance_id = "someone-else".into();
        assert!(KubeRuntime::new(client.clone(), other).list().await.unwrap().is_empty());

        // An exited Pod is reported with its exit.
        rt.start(spec("w2", vec![])).await.unwrap();
        fake.pods.lock().unwrap().get_mut("sluice-w2").unwrap()["status"] = json!({"phase": "Failed", "podIP": "10.1.0.2",
            "containerStatuses": [{"name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});
        let exited: Vec<_> = rt.list().await.unwrap().into_iter().filter(|o| o.exited.is_some()).collect();
        assert_eq!(exited[0].exited.as_deref(), Some("exited with code 1 (Error)"));

        // Stop: deleted with the grace period; stopping a gone Pod succeeds.
        rt.stop(&WorkerId::parse("w1").unwrap(), Duration::from_secs(30)).await.unwrap();
        rt.stop(&WorkerId::parse("w1").unwrap(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(fake.deletes.lock().unwrap()[0], ("sluice-w1".to_owned(), Some("30".to_owned())));
        assert!(rt.list().await.unwrap().iter().all(|o| o.worker.as_str() != "w1"));
    }

    #[tokio::test]
    async fn a_pod_that_gets_no_address_fails_its_launch_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, client) = fake_api().await;
        let mut c = cfg(dir.path());
        c.ip_timeout = Duration::from_millis(600);
        let rt = KubeRuntime::new(client, c);
        // Pre-create the Pod unscheduled (no IP): the create answers 409, and it never gets an IP.
        fake.pods.lock().unwrap().insert("sluice-w9".into(), {
            let mut p = pod_json("sluice-w9", "w9", "Pending", false, json!({}));
            p["status"]["podIP"] = Value::Null;
            p
        });
        let err = rt.start(spec("w9", vec![])).await.unwrap_err().to_string();
        assert!(err.contains("got no IP within"), "{err}");
        assert!(fake.pods.lock().unwrap().is_empty(), "the unschedulable Pod is deleted");
    }
}
