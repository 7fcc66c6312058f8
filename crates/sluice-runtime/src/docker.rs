//! The Docker Engine runtime: each worker is a container created through the Engine API
//! (bollard; `DOCKER_HOST` is honoured, else the local socket). The container's `http_port` is
//! published on 127.0.0.1 at a host port Docker picks, which the gateway and the health checks
//! use. Labels name the platform instance, the endpoint and the worker, so a restarted platform
//! finds exactly its own containers (and never touches anyone else's).
//!
//! Output is followed from the Engine into the same per-worker log files as the process
//! runtime. A network volume is a named Docker volume per account and volume name; it outlives
//! every container.
use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::{
    Docker,
    auth::DockerCredentials,
    errors::Error as DockerError,
    models::{
        ContainerCreateBody, ContainerSummaryStateEnum, DeviceRequest, HostConfig, Mount, MountType, PortBinding,
        VolumeCreateRequest,
    },
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
        StopContainerOptions,
    },
};
use futures_util::{FutureExt, StreamExt, future::BoxFuture};
use sluice_core::{EndpointId, RegistryAuth, RuntimeKind, WorkerId};
use tokio::io::AsyncWriteExt;

use crate::{
    Error, LaunchSpec, Launched, Observed, PullProgress, Result, WorkerRuntime,
    process::{ENV_ENDPOINT, ENV_INSTANCE, ENV_WORKER},
};

pub const LABEL_INSTANCE: &str = "io.sluice.instance";
pub const LABEL_ENDPOINT: &str = "io.sluice.endpoint";
pub const LABEL_WORKER: &str = "io.sluice.worker";
pub const LABEL_VOLUME: &str = "io.sluice.volume";
/// On a container sharing the host's network: the loopback port it was given (nothing is
/// published, so a restarted platform reads its address here).
pub const LABEL_HOST_PORT: &str = "io.sluice.host-port";

#[derive(Debug, Clone)]
pub struct DockerRuntimeConfig {
    /// Marks this platform instance's containers (label `io.sluice.instance`).
    pub instance_id: String,
    /// Per-worker log files go under `logs_dir/{endpoint}/{worker}.{stdout,stderr}.log`.
    pub logs_dir: PathBuf,
    /// Network volumes are Docker volumes named `sluice-{account}-{name}`.
    pub account: String,
    /// Whether the node's GPUs are real NVIDIA devices (then containers get a device request
    /// for exactly their GPUs) or simulated (only the visibility variables are set).
    pub real_gpus: bool,
}

#[derive(Debug, Clone)]
struct Tracked {
    container: String,
}

pub struct DockerRuntime {
    docker: Docker,
    cfg: DockerRuntimeConfig,
    tracked: Mutex<HashMap<WorkerId, Tracked>>,
    /// Workers whose output is being copied into their log files.
    following: Arc<Mutex<HashSet<WorkerId>>>,
}

fn engine(e: DockerError) -> Error {
    Error::Launch(format!("docker: {}", describe(&e)))
}

/// The Engine's own message where there is one (bollard's Display adds the status code).
fn describe(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, status_code } => format!("{message} (HTTP {status_code})"),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

pub fn container_name(worker: &WorkerId) -> String {
    format!("sluice-{worker}")
}

pub fn volume_name(account: &str, name: &str) -> String {
    format!("sluice-{account}-{name}")
}

/// The container for one worker (pure; unit-tested): image, `[shell, "-c", command]` when there
/// is a start command (else the image's own entrypoint and command), the endpoint's env plus
/// `PORT` and the GPU variables, the port published on 127.0.0.1 at a host port Docker picks,
/// the network volume, the labels, and a device request for exactly the assigned GPUs when they
/// are real.
pub fn container_body(cfg: &DockerRuntimeConfig, spec: &LaunchSpec, image: &str) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.http_port);
    let gpus = spec.gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={}", spec.http_port));
    env.push(format!("CUDA_VISIBLE_DEVICES={gpus}"));
    env.push(format!("NVIDIA_VISIBLE_DEVICES={gpus}"));
    env.push(format!("{ENV_INSTANCE}={}", cfg.instance_id));
    env.push(format!("{ENV_WORKER}={}", spec.worker));
    env.push(format!("{ENV_ENDPOINT}={}", spec.endpoint));
    let mut mounts: Vec<Mount> = spec
        .volume
        .iter()
        .map(|v| Mount {
            target: Some(v.mount_path.clone()),
            source: Some(volume_name(&cfg.account, &v.name)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        })
        .collect();
    if let Some(m) = &spec.models
        && let Some(dir) = &m.dir
    {
        // The model cache, read-only: a worker reads what was staged, and changes nothing.
        mounts.push(Mount {
            target: Some(crate::MODELS_MOUNT.into()),
            source: Some(dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
        let vars = crate::model_env(crate::MODELS_MOUNT, &m.paths);
        env.retain(|e| !vars.iter().any(|(k, _)| e.starts_with(&format!("{k}="))));
        env.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    }
    let device_requests = (cfg.real_gpus && !spec.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(spec.gpus.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let (entrypoint, cmd) = match &spec.start_command {
        Some(c) => (Some(vec![spec.shell.clone(), "-c".into(), c.clone()]), Some(Vec::new())),
        None => (None, None),
    };
    let mut labels = HashMap::from([
        (LABEL_INSTANCE.to_owned(), cfg.instance_id.clone()),
        (LABEL_ENDPOINT.to_owned(), spec.endpoint.to_string()),
        (LABEL_WORKER.to_owned(), spec.worker.to_string()),
    ]);
    if spec.host_network {
        labels.insert(LABEL_HOST_PORT.to_owned(), spec.http_port.to_string());
    }
    let (exposed_ports, port_bindings, network_mode) = if spec.host_network {
        (None, None, Some("host".to_owned()))
    } else {
        (
            Some(vec![port_key.clone()]),
            Some(HashMap::from([(
                port_key,
                Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
            )])),
            None,
        )
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(env),
        entrypoint,
        cmd,
        labels: Some(labels),
        exposed_ports,
        host_config: Some(HostConfig {
            port_bindings,
            network_mode,
            mounts: (!mounts.is_empty()).then_some(mounts),
            device_requests,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.clone()),
        serveraddress: Some(auth.server.clone()),
        ..Default::default()
    }
}

impl DockerRuntime {
    /// Connects to the Engine (`DOCKER_HOST` or the local socket) and checks that it answers.
    pub async fn connect(cfg: DockerRuntimeConfig) -> Result<Self> {
        let docker = Docker::connect_with_defaults().map_err(engine)?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            Error::Launch(format!(
                "cannot reach the Docker Engine ({}; is dockerd running? `bash scripts/docker.sh` starts one): {}",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
                describe(&e)
            ))
        })?;
        Ok(DockerRuntime {
            docker,
            cfg,
            tracked: Mutex::new(HashMap::new()),
            following: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn log_file(&self, endpoint: &EndpointId, worker: &WorkerId, stream: &str) -> PathBuf {
        self.cfg.logs_dir.join(endpoint.as_str()).join(format!("{worker}.{stream}.log"))
    }

    /// Whether the image is present on this node.
    pub async fn has_image(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    /// Pulls `image`, calling `progress` with the bytes done and total summed over its layers.
    /// Credentials go only to the Engine (the `X-Registry-Auth` header), never to a log.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        mut progress: impl FnMut(PullProgress) + Send,
    ) -> Result<()> {
        let opts = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(opts), None, auth.map(credentials));
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::Launch(format!("pulling {image} failed: {}", describe(&e))))?;
            if let (Some(id), Some(d)) = (info.id, info.progress_detail) {
                let e = layers.entry(id).or_default();
                if let Some(c) = d.current {
                    e.0 = c.max(0) as u64;
                }
                if let Some(t) = d.total {
                    e.1 = t.max(0) as u64;
                }
                let (done, total) = layers.values().fold((0, 0), |a, v| (a.0 + v.0.min(v.1.max(v.0)), a.1 + v.1));
                progress(PullProgress { bytes_done: done, bytes_total: total });
            }
        }
        Ok(())
    }

    /// Makes sure the image is on the node: a start never waits on a pull that already happened.
    async fn ensure_image(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<()> {
        if self.has_image(image).await? {
            return Ok(());
        }
        self.pull(image, auth, |_| {}).await.map_err(|e| match e {
            Error::Launch(m) => {
                Error::Launch(format!("image {image} is not on this node and could not be pulled: {m}"))
            }
            other => other,
        })
    }

    async fn ensure_volume(&self, name: &str, volume: &str) -> Result<()> {
        let req = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(HashMap::from([
                (LABEL_VOLUME.to_owned(), volume.to_owned()),
                ("io.sluice.account".to_owned(), self.cfg.account.clone()),
            ])),
            ..Default::default()
        };
        // Creating an existing volume with the same name is a no-op in the Engine.
        self.docker.create_volume(req).await.map_err(engine)?;
        Ok(())
    }

    async fn start_inner(&self, spec: LaunchSpec) -> Result<Launched> {
        let image = spec.image.clone().ok_or_else(|| Error::Launch("the docker runtime needs an image".into()))?;
        self.ensure_image(&image, spec.registry.as_ref()).await?;
        let image_at = crate::wall_ms();
        let name = container_name(&spec.worker);
        let port_key = format!("{}/tcp", spec.http_port);
        if let Some(v) = &spec.volume {
            self.ensure_volume(&volume_name(&self.cfg.account, &v.name), &v.name).await?;
        }
        let body = container_body(&self.cfg, &spec, &image);
        let opts = || CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        if let Err(e) = self.docker.create_container(Some(opts()), body.clone()).await {
            // A container left behind by a crashed start of the same worker: replace it.
            if !matches!(e, DockerError::DockerResponseServerError { status_code: 409, .. }) {
                return Err(engine(e));
            }
            self.remove(&name).await?;
            self.docker.create_container(Some(opts()), body).await.map_err(engine)?;
        }
        let started = async {
            self.docker.start_container(&name, None).await.map_err(engine)?;
            if spec.host_network {
                return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, spec.http_port)));
            }
            let info = self.docker.inspect_container(&name, None).await.map_err(engine)?;
            let port = info
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|p| p.get(&port_key).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()))
                .ok_or_else(|| Error::Launch(format!("docker published no host port for {port_key}")))?;
            Ok::<_, Error>(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        }
        .await;
        let addr = match started {
            Ok(a) => a,
            Err(e) => {
                let _ = self.remove(&name).await;
                return Err(e);
            }
        };
        self.tracked.lock().unwrap().insert(spec.worker.clone(), Tracked { container: name.clone() });
        self.follow_logs(&spec.endpoint, &spec.worker, &name, 0);
        Ok(Launched { addr, pid: None, image_at: Some(image_at) })
    }

    /// Copies the container's output into the worker's log files until the container ends.
    /// `since` (Unix seconds) skips what an earlier run of the platform already copied.
    fn follow_logs(&self, endpoint: &EndpointId, worker: &WorkerId, container: &str, since: i32) {
        if !self.following.lock().unwrap().insert(worker.clone()) {
            return;
        }
        let docker = self.docker.clone();
        let following = self.following.clone();
        let (out_path, err_path) =
            (self.log_file(endpoint, worker, "stdout"), self.log_file(endpoint, worker, "stderr"));
        let container = container.to_owned();
        let worker = worker.clone();
        tokio::spawn(async move {
            let open = |p: PathBuf| async move {
                if let Some(dir) = p.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                tokio::fs::OpenOptions::new().create(true).append(true).open(p).await
            };
            if let (Ok(mut out), Ok(mut err)) = (open(out_path).await, open(err_path).await) {
                let opts = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
                let mut logs = docker.logs(&container, Some(opts));
                while let Some(Ok(chunk)) = logs.next().await {
                    let r = match chunk {
                        bollard::container::LogOutput::StdErr { message } => err.write_all(&message).await,
                        other => out.write_all(&other.into_bytes()).await,
                    };
                    if r.is_err() {
                        break;
                    }
                }
                let _ = (out.flush().await, err.flush().await);
            }
            following.lock().unwrap().remove(&worker);
        });
    }

    async fn remove(&self, container: &str) -> Result<()> {
        let opts = RemoveContainerOptions { force: true, ..Default::default() };
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // Already being removed by an earlier call.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn stop_inner(&self, worker: &WorkerId, grace: Duration) -> Result<()> {
        let name =
            self.tracked.lock().unwrap().get(worker).map_or_else(|| container_name(worker), |t| t.container.clone());
        // The Engine sends SIGTERM (or the image's STOPSIGNAL), waits `t` seconds, then kills.
        let t = grace.as_secs_f64().ceil() as i32;
        let opts = StopContainerOptions { t: Some(t), ..Default::default() };
        match self.docker.stop_container(&name, Some(opts)).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => {
                self.tracked.lock().unwrap().remove(worker);
                return Ok(());
            }
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(Error::Control { worker: worker.to_string(), message: describe(&e) }),
        }
        self.remove(&name).await?;
        self.tracked.lock().unwrap().remove(worker);
        Ok(())
    }

    async fn list_inner(&self) -> Result<Vec<Observed>> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_INSTANCE}={}", self.cfg.instance_id)])]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let found = self.docker.list_containers(Some(opts)).await.map_err(engine)?;
        let mut out = Vec::new();
        for c in found {
            let labels = c.labels.unwrap_or_default();
            let Some(worker) = labels.get(LABEL_WORKER).and_then(|w| WorkerId::parse(w).ok()) else { continue };
            let endpoint = labels.get(LABEL_ENDPOINT).and_then(|e| EndpointId::parse(e).ok());
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map_or_else(|| container_name(&worker), |n| n.trim_start_matches('/').to_owned());
            match c.state {
                Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::CREATED) => {
                    let addr = c
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .find(|p| p.ip.as_deref() == Some("127.0.0.1") && p.public_port.is_some())
                        .and_then(|p| p.public_port)
                        .or_else(|| labels.get(LABEL_HOST_PORT).and_then(|p| p.parse().ok()))
                        .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
                    if addr.is_some() {
                        let adopted = self
                            .tracked
                            .lock()
                            .unwrap()
                            .insert(worker.clone(), Tracked { container: name.clone() })
                            .is_none();
                        if adopted && let Some(ep) = &endpoint {
                            // Found after a restart: copy only output from now on.
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs() as i32);
                            self.follow_logs(ep, &worker, &name, now);
                        }
                    }
                    out.push(Observed { worker, endpoint, addr, pid: None, exited: None, ready: None });
                }
                _ => {
                    // Exited, dead or being removed: report the exit once and remove the container
                    // (its output is already in the log files).
                    let status = match self.docker.inspect_container(&name, None).await.ok().and_then(|i| i.state) {
                        Some(s) if s.oom_killed == Some(true) => "killed: out of memory".to_owned(),
                        Some(s) => match (s.exit_code, s.error.filter(|e| !e.is_empty())) {
                            (_, Some(err)) => format!("failed: {err}"),
                            (Some(code), None) if code >= 128 => format!("killed by signal {}", code - 128),
                            (Some(code), None) => format!("exited with status {code}"),
                            _ => "exited".to_owned(),
                        },
                        None => c.status.unwrap_or_else(|| "exited".into()),
                    };
                    self.remove(&name).await?;
                    self.tracked.lock().unwrap().remove(&worker);
                    out.push(Observed { worker, endpoint, addr: None, pid: None, exited: Some(status), ready: None });
                }
            }
        }
        Ok(out)
    }
}

impl WorkerRuntime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched>> {
        self.start_inner(spec).boxed()
    }
    fn stop(&self, worker: &WorkerId, grace: Duration) -> BoxFuture<'_, Result<()>> {
        let worker = worker.clone();
        async move { self.stop_inner(&worker, grace).await }.boxed()
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Observed>>> {
        self.list_inner().boxed()
    }
    fn log_paths(&self, endpoint: &EndpointId, worker: &WorkerId) -> Vec<PathBuf> {
        vec![self.log_file(endpoint, worker, "stdout"), self.log_file(endpoint, worker, "stderr")]
    }
    fn has_image(&self, image: &str) -> BoxFuture<'_, Result<bool>> {
        let image = image.to_owned();
        async move { DockerRuntime::has_image(self, &image).await }.boxed()
    }
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
        progress: Box<dyn FnMut(PullProgress) + Send + 'a>,
    ) -> BoxFuture<'a, Result<()>> {
        self.pull(image, auth, progress).boxed()
    }
}

impl DockerRuntime {
    /// Removes the images of `repo` other than `keep` (older builds of a locally made image);
    /// images still used by a container stay.
    pub async fn remove_other_tags(&self, repo: &str, keep: &str) -> Result<()> {
        let filters = HashMap::from([("reference".to_owned(), vec![format!("{repo}:*")])]);
        let opts = bollard::query_parameters::ListImagesOptions { filters: Some(filters), ..Default::default() };
        for img in self.docker.list_images(Some(opts)).await.map_err(engine)? {
            // Podman qualifies names (docker.io/library/…).
            if img.repo_tags.iter().any(|t| t == keep || t.ends_with(&format!("/{keep}"))) {
                continue;
            }
            for tag in img.repo_tags {
                let _ =
                    self.docker.remove_image(&tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
            }
        }
        Ok(())
    }

    /// Builds an image from host files without a registry or a Dockerfile (`docker import` of
    /// a tar): `files` maps paths inside the image to files on this machine (symlinks are
    /// followed). Used for the demo worker's image and for tests.
    pub async fn import_rootfs(
        &self,
        image: &str,
        files: Vec<(String, PathBuf)>,
        entrypoint: &[&str],
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut b = tar::Builder::new(Vec::new());
            b.follow_symlinks(true);
            // Docker's importer rejects GNU sparse entries (type S).
            b.sparse(false);
            b.mode(tar::HeaderMode::Deterministic);
            let mut dirs = std::collections::BTreeSet::new();
            for (inside, _) in &files {
                let mut p = std::path::Path::new(inside.trim_start_matches('/'));
                while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                    dirs.insert(parent.to_path_buf());
                    p = parent;
                }
            }
            dirs.insert("tmp".into());
            for d in dirs {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(if d.as_os_str() == "tmp" { 0o1777 } else { 0o755 });
                h.set_size(0);
                b.append_data(&mut h, &d, std::io::empty())?;
            }
            for (inside, host) in files {
                b.append_path_with_name(&host, inside.trim_start_matches('/'))?;
            }
            b.into_inner()
        })
        .await
        .map_err(|e| Error::Launch(format!("image build task failed: {e}")))??;
        let quoted = entrypoint.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(",");
        let mut changes = vec![format!("ENTRYPOINT [{quoted}]")];
        changes.extend(labels.iter().map(|(k, v)| format!("LABEL {k}={v:?}")));
        let opts = CreateImageOptions {
            from_src: Some("-".into()),
            // `repo` may carry the tag; Podman's compatible API ignores a separate `tag`.
            repo: Some(image.into()),
            changes,
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(opts), Some(bollard::body_full(tar.into())), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| Error::Launch(format!("importing {image}: {}", describe(&e))))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::VolumeMount;

    fn cfg(real_gpus: bool) -> DockerRuntimeConfig {
        DockerRuntimeConfig { instance_id: "inst1".into(), logs_dir: "/tmp".into(), account: "acct".into(), real_gpus }
    }

    fn spec(cmd: Option<&str>, gpus: Vec<u32>) -> LaunchSpec {
        LaunchSpec {
            health_path: "/health".into(),
            gpu_type: "SIM".into(),
            data_center: "local".into(),
            worker: WorkerId::parse("wk1").unwrap(),
            endpoint: EndpointId::parse("ep1").unwrap(),
            shell: "/bin/bash".into(),
            start_command: cmd.map(str::to_owned),
            image: Some("img:1".into()),
            env: BTreeMap::from([("A".into(), "1".into())]),
            gpus,
            http_port: 8080,
            volume: Some(VolumeMount { name: "models".into(), mount_path: "/data".into() }),
            registry: None,
            host_network: false,
            models: None,
        }
    }

    #[test]
    fn host_network_publishes_nothing_and_labels_its_port() {
        let b = container_body(&cfg(false), &LaunchSpec { host_network: true, ..spec(Some("w"), vec![0]) }, "img:1");
        assert_eq!(b.exposed_ports, None);
        let hc = b.host_config.unwrap();
        assert_eq!((hc.network_mode.as_deref(), hc.port_bindings), (Some("host"), None));
        assert_eq!(b.labels.unwrap()[LABEL_HOST_PORT], "8080");
        assert!(b.env.unwrap().contains(&"PORT=8080".to_owned()));
        // The default: a bridge network, nothing about the host's port.
        let b = container_body(&cfg(false), &spec(Some("w"), vec![0]), "img:1");
        assert_eq!(b.host_config.unwrap().network_mode, None);
        assert!(!b.labels.unwrap().contains_key(LABEL_HOST_PORT));
    }

    #[test]
    fn real_gpus_get_a_device_request_for_exactly_their_ids() {
        let b = container_body(&cfg(true), &spec(None, vec![1, 3]), "img:1");
        let hc = b.host_config.unwrap();
        let dr = hc.device_requests.expect("device request");
        assert_eq!(dr.len(), 1);
        assert_eq!(dr[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(dr[0].device_ids, Some(vec!["1".to_owned(), "3".to_owned()]));
        assert_eq!(dr[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));
        let env = b.env.unwrap();
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=1,3".to_owned()) && env.contains(&"PORT=8080".to_owned()));
        // Simulated GPUs: only the visibility variables; no GPUs: no request either.
        let b = container_body(&cfg(false), &spec(None, vec![1, 3]), "img:1");
        assert!(b.host_config.unwrap().device_requests.is_none());
        assert!(b.env.unwrap().contains(&"CUDA_VISIBLE_DEVICES=1,3".to_owned()));
        assert!(container_body(&cfg(true), &spec(None, vec![]), "i").host_config.unwrap().device_requests.is_none());
    }

    #[test]
    fn command_port_volume_and_labels() {
        let b = container_body(&cfg(false), &spec(Some("python serve.py"), vec![0]), "img:1");
        assert_eq!(b.entrypoint, Some(vec!["/bin/bash".to_owned(), "-c".to_owned(), "python serve.py".to_owned()]));
        assert_eq!(b.cmd, Some(vec![]));
        let no_cmd = container_body(&cfg(false), &spec(None, vec![0]), "img:1");
        assert_eq!((no_cmd.entrypoint, no_cmd.cmd), (None, None), "the image's own entrypoint and command");
        let hc = b.host_config.unwrap();
        let binding = &hc.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"), "published on loopback only");
        let m = &hc.mounts.unwrap()[0];
        assert_eq!((m.source.as_deref(), m.target.as_deref()), (Some("sluice-acct-models"), Some("/data")));
        let labels = b.labels.unwrap();
        assert_eq!(labels[LABEL_INSTANCE], "inst1");
        assert_eq!(labels[LABEL_WORKER], "wk1");
        assert_eq!(labels[LABEL_ENDPOINT], "ep1");
        assert!(b.env.unwrap().contains(&"SLUICE_WORKER_ID=wk1".to_owned()));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let a = RegistryAuth { server: "r.io".into(), username: "u".into(), password: "p4ss-w0rd".into() };
        assert!(!format!("{a:?}").contains("p4ss-w0rd"));
        assert_eq!(credentials(&a).serveraddress.as_deref(), Some("r.io"));
    }
}
