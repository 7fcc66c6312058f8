//! The local-process runtime: each worker is `shell -c start_command` in its own process group,
//! with the endpoint's environment plus `PORT` (a free loopback port), the GPU variables and the
//! `SLUICE_*` markers. Output goes to per-worker log files.
//!
//! Workers are found again after a platform restart by scanning `/proc/*/environ` for this
//! instance's `SLUICE_INSTANCE` marker, so adoption does not depend on what the store
//! remembers: a process started just before a crash is still found.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use nix::{
    errno::Errno,
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use sluice_core::{EndpointId, RuntimeKind, WorkerId};
use tokio::process::Command;

use crate::{Error, LaunchSpec, Launched, Observed, Result, WorkerRuntime};

/// Variables passed from the platform's own environment to workers; everything else is dropped
/// so that platform secrets never reach a worker.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_BACKTRACE"];

pub const ENV_INSTANCE: &str = "SLUICE_INSTANCE";
pub const ENV_WORKER: &str = "SLUICE_WORKER_ID";
pub const ENV_ENDPOINT: &str = "SLUICE_ENDPOINT_ID";
pub const ENV_VOLUME_DIR: &str = "SLUICE_VOLUME_DIR";
pub const ENV_VOLUME_MOUNT_PATH: &str = "SLUICE_VOLUME_MOUNT_PATH";

#[derive(Debug, Clone)]
pub struct ProcessRuntimeConfig {
    /// Marks this platform instance's workers.
    pub instance_id: String,
    /// Per-worker log files go under `logs_dir/{endpoint}/{worker}.{stdout,stderr}.log`.
    pub logs_dir: PathBuf,
    /// Network volumes are directories `volumes_dir/{name}`.
    pub volumes_dir: PathBuf,
}

#[derive(Debug, Clone)]
struct Tracked {
    pgid: i32,
    addr: SocketAddr,
}

pub struct ProcessRuntime {
    cfg: ProcessRuntimeConfig,
    /// Workers this process started or adopted.
    tracked: Mutex<HashMap<WorkerId, Tracked>>,
    /// Exits seen by the child-wait tasks, reported once by `list`.
    exits: Arc<Mutex<HashMap<WorkerId, String>>>,
}

impl ProcessRuntime {
    pub fn new(cfg: ProcessRuntimeConfig) -> Self {
        ProcessRuntime { cfg, tracked: Mutex::new(HashMap::new()), exits: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn log_file(&self, endpoint: &EndpointId, worker: &WorkerId, stream: &str) -> PathBuf {
        self.cfg.logs_dir.join(endpoint.as_str()).join(format!("{worker}.{stream}.log"))
    }

    async fn start_inner(&self, spec: LaunchSpec) -> Result<Launched> {
        let command = spec
            .start_command
            .clone()
            .ok_or_else(|| Error::Launch("the process runtime needs a start_command".into()))?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let out_path = self.log_file(&spec.endpoint, &spec.worker, "stdout");
        if let Some(dir) = out_path.parent() {
            fs::create_dir_all(dir)?;
        }
        let open = |p: PathBuf| fs::OpenOptions::new().create(true).append(true).open(p);
        let stdout = open(out_path)?;
        let stderr = open(self.log_file(&spec.endpoint, &spec.worker, "stderr"))?;

        let mut env: BTreeMap<String, String> =
            INHERITED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect();
        env.extend(spec.env.clone());
        let gpus = spec.gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        env.insert("PORT".into(), port.to_string());
        env.insert("CUDA_VISIBLE_DEVICES".into(), gpus.clone());
        env.insert("NVIDIA_VISIBLE_DEVICES".into(), gpus);
        env.insert(ENV_INSTANCE.into(), self.cfg.instance_id.clone());
        env.insert(ENV_WORKER.into(), spec.worker.to_string());
        env.insert(ENV_ENDPOINT.into(), spec.endpoint.to_string());
        if let Some(m) = &spec.models
            && let Some(dir) = &m.dir
        {
            env.extend(crate::model_env(&dir.display().to_string(), &m.paths));
        }
        if let Some(v) = &spec.volume {
            let dir = self.cfg.volumes_dir.join(&v.name);
            fs::create_dir_all(&dir)?;
            env.insert(ENV_VOLUME_DIR.into(), dir.display().to_string());
            env.insert(ENV_VOLUME_MOUNT_PATH.into(), v.mount_path.clone());
        }

        let mut child = Command::new(&spec.shell)
            .arg("-c")
            .arg(&command)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Launch(format!("{}: {e}", spec.shell)))?;
        let pid = child.id().ok_or_else(|| Error::Launch("worker exited at once".into()))?;
        self.tracked.lock().unwrap().insert(spec.worker.clone(), Tracked { pgid: pid as i32, addr });
        let exits = self.exits.clone();
        let worker = spec.worker.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => describe_exit(s),
                Err(e) => format!("wait failed: {e}"),
            };
            exits.lock().unwrap().insert(worker, status);
        });
        Ok(Launched { addr, pid: Some(pid), image_at: None })
    }

    async fn stop_inner(&self, worker: &WorkerId, grace: Duration) -> Result<()> {
        let pgid = match self.tracked.lock().unwrap().get(worker) {
            Some(t) => t.pgid,
            None => {
                // Not ours in memory (e.g. found by a scan): look it up.
                match scan(&self.cfg.instance_id).into_iter().find(|p| &p.worker == worker) {
                    Some(p) => p.pgid,
                    None => return Ok(()),
                }
            }
        };
        let ctl = |e: Errno| Error::Control { worker: worker.to_string(), message: e.to_string() };
        match killpg(Pid::from_raw(pgid), Signal::SIGTERM) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                self.tracked.lock().unwrap().remove(worker);
                return Ok(());
            }
            Err(e) => return Err(ctl(e)),
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if group_gone(pgid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !group_gone(pgid) {
            match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(ctl(e)),
            }
            // SIGKILL is not instant: return only once the group is gone (bounded), so callers
            // can rely on "stopped" meaning no process is left.
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while !group_gone(pgid) && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.tracked.lock().unwrap().remove(worker);
        Ok(())
    }

    async fn list_inner(&self) -> Result<Vec<Observed>> {
        let instance = self.cfg.instance_id.clone();
        let found = tokio::task::spawn_blocking(move || scan(&instance))
            .await
            .map_err(|e| Error::Launch(format!("scan task failed: {e}")))?;
        let mut out = Vec::new();
        let mut tracked = self.tracked.lock().unwrap();
        let exits: Vec<(WorkerId, String)> = self.exits.lock().unwrap().drain().collect();
        for p in &found {
            let addr = tracked.get(&p.worker).map(|t| t.addr).or(p.addr);
            if let (false, Some(addr)) = (tracked.contains_key(&p.worker), addr) {
                tracked.insert(p.worker.clone(), Tracked { pgid: p.pgid, addr });
            }
            out.push(Observed {
                worker: p.worker.clone(),
                endpoint: p.endpoint.clone(),
                addr,
                pid: Some(p.pgid as u32),
                exited: None,
                ready: None,
            });
        }
        for (worker, status) in exits {
            // A worker whose leader exited may still have stragglers in its group; it is reported
            // as exited either way, and `stop` reaps the group.
            out.retain(|o| o.worker != worker);
            tracked.remove(&worker);
            out.push(Observed { worker, endpoint: None, addr: None, pid: None, exited: Some(status), ready: None });
        }
        // Adopted workers (no wait task) that vanished from /proc.
        tracked.retain(|w, _| out.iter().any(|o| &o.worker == w && o.exited.is_none()));
        Ok(out)
    }
}

impl WorkerRuntime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
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
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".into(),
    }
}

/// Picks a free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::Launch(format!("no free port: {e}")))?;
    Ok(l.local_addr()?.port())
}

/// Whether no process of the group is left (zombies count as gone).
fn group_gone(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => true,
        _ => {
            // The leader may be a zombie awaiting its reaper; look at the group's members.
            !proc_pids()
                .into_iter()
                .any(|pid| matches!(proc_stat(pid), Some((state, pg)) if pg == pgid && state != 'Z'))
        }
    }
}

/// A worker process group found in `/proc`.
#[derive(Debug, Clone)]
struct Found {
    worker: WorkerId,
    endpoint: Option<EndpointId>,
    pgid: i32,
    addr: Option<SocketAddr>,
}

fn proc_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// (state, pgid) from `/proc/{pid}/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let _ppid = it.next()?;
    let pgrp = it.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn proc_environ(pid: i32) -> Option<HashMap<String, String>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                let (k, v) = kv.split_once('=')?;
                k.starts_with("SLUICE_")
                    .then(|| (k.to_owned(), v.to_owned()))
                    .or_else(|| (k == "PORT").then(|| (k.to_owned(), v.to_owned())))
            })
            .collect(),
    )
}

/// Finds every live process group that carries this instance's marker.
fn scan(instance: &str) -> Vec<Found> {
    let mut by_group: HashMap<i32, Found> = HashMap::new();
    for pid in proc_pids() {
        let Some((state, pgid)) = proc_stat(pid) else { continue };
        if state == 'Z' || by_group.contains_key(&pgid) {
            continue;
        }
        let Some(env) = proc_environ(pid) else { continue };
        if env.get(ENV_INSTANCE).map(String::as_str) != Some(instance) {
            continue;
        }
        let Some(worker) = env.get(ENV_WORKER).and_then(|w| WorkerId::parse(w).ok()) else { continue };
        let addr =
            env.get("PORT").and_then(|p| p.parse::<u16>().ok()).map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
        let endpoint = env.get(ENV_ENDPOINT).and_then(|e| EndpointId::parse(e).ok());
        by_group.insert(pgid, Found { worker, endpoint, pgid, addr });
    }
    by_group.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rt(dir: &Path, instance: &str) -> ProcessRuntime {
        ProcessRuntime::new(ProcessRuntimeConfig {
            instance_id: instance.into(),
            logs_dir: dir.join("logs"),
            volumes_dir: dir.join("volumes"),
        })
    }

    fn spec(worker: &str, cmd: &str) -> LaunchSpec {
        LaunchSpec {
            health_path: "/health".into(),
            gpu_type: "SIM".into(),
            data_center: "local".into(),
            worker: WorkerId::parse(worker).unwrap(),
            endpoint: EndpointId::parse("ep").unwrap(),
            shell: "/bin/sh".into(),
            start_command: Some(cmd.into()),
            image: None,
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            gpus: vec![2, 5],
            http_port: 8000,
            volume: Some(crate::VolumeMount { name: "vol".into(), mount_path: "/data".into() }),
            registry: None,
            host_network: false,
            models: None,
        }
    }

    async fn eventually(mut f: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition not reached in 5 s");
    }

    #[tokio::test]
    async fn start_list_stop_and_adopt() {
        let dir = tempfile::tempdir().unwrap();
        let instance = format!("test-{}", std::process::id());
        let r = rt(dir.path(), &instance);
        // A child that ignores SIGTERM proves the group is killed after the grace period.
        let cmd = "echo \"$GREETING $CUDA_VISIBLE_DEVICES $PORT $SLUICE_VOLUME_DIR\"; trap '' TERM; sleep 30 & wait";
        let l = r.start(spec("w1", cmd)).await.unwrap();
        let w1 = WorkerId::parse("w1").unwrap();
        eventually(async || r.list().await.unwrap().iter().any(|o| o.worker == w1 && o.exited.is_none())).await;
        let log = r.log_paths(&EndpointId::parse("ep").unwrap(), &w1)[0].clone();
        eventually(async || fs::read_to_string(&log).unwrap_or_default().contains("hi 2,5")).await;
        let line = fs::read_to_string(&log).unwrap();
        assert!(line.contains(&l.addr.port().to_string()), "{line}");
        assert!(line.contains("volumes/vol"), "{line}");

        // A second runtime of the same instance (a restarted platform) finds the worker.
        let r2 = rt(dir.path(), &instance);
        let seen = r2.list().await.unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].addr, Some(l.addr));
        // Another instance does not.
        assert!(rt(dir.path(), "someone-else").list().await.unwrap().is_empty());

        r2.stop(&w1, Duration::from_millis(200)).await.unwrap();
        assert!(group_gone(l.pid.unwrap() as i32));
        eventually(async || r.list().await.unwrap().iter().any(|o| o.worker == w1 && o.exited.is_some())).await;
        assert!(r.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn exit_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = rt(dir.path(), &format!("exit-{}", std::process::id()));
        r.start(spec("w2", "exit 3")).await.unwrap();
        let mut seen = None;
        eventually(async || {
            seen = r.list().await.unwrap().into_iter().find(|o| o.exited.is_some());
            seen.is_some()
        })
        .await;
        assert_eq!(seen.unwrap().exited.as_deref(), Some("exited with status 3"));
        assert!(r.list().await.unwrap().is_empty());
        let bad = r.start(LaunchSpec { shell: "/nonexistent/sh".into(), ..spec("w3", "true") }).await;
        assert!(matches!(bad, Err(Error::Launch(_))), "{bad:?}");
    }
}
