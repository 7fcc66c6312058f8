//! The Docker runtime against the real Docker Engine (`scripts/docker.sh` starts one): the
//! demo worker's image is imported locally from this build's binary, no registry involved.
use std::{process::Command, time::Duration};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("the docker CLI (scripts/docker.sh installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The containers of a platform instance, as `name state` lines.
fn containers(label: &str) -> Vec<String> {
    let (ok, out) = docker(&["ps", "-a", "--filter", &format!("label={label}"), "--format", "{{.Names}} {{.State}}"]);
    assert!(ok, "{out}");
    out.lines().map(str::to_owned).collect()
}

/// Starts `sluice up --runtime docker` with its demo endpoint and returns the demo's id and image.
pub(crate) async fn start_docker(dir: tempfile::TempDir) -> (Platform, String, String) {
    let p = Platform::start_in(dir, &["--runtime", "docker"]).await;
    let list = p.api_call(Method::GET, "/v1/endpoints", None).await.json();
    let demo = list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "demo").expect("demo").clone();
    let id = demo["id"].as_str().unwrap().to_owned();
    let image = demo["image"].as_str().expect("the demo runs from an image").to_owned();
    (p, id, image)
}

fn ready_ids(ws: &[Value]) -> Vec<String> {
    ws.iter().filter(|w| w["state"] == "ready").map(|w| w["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_serve_scale_get_replaced_and_keep_their_volume() {
    let (p, demo, image) = start_docker(tempfile::tempdir().unwrap()).await;
    p.wait_ready(&demo, 1).await;
    let secret = "hunter2-registry-password";
    // A volume of this run only (a failed earlier run may have left its own behind).
    let vol = format!("models-{}", std::process::id());
    // The start command counts boots in the network volume and exports the count.
    let cmd = "n=0; [ -f /data/boots ] && read n < /data/boots; n=$((n+1)); echo $n > /data/boots; \
               export DEMO_BOOTS=$n; exec /sluice demo-worker --host 0.0.0.0";
    let e = p
        .create(json!({
            "name": "vol", "image": image, "start_command": cmd, "http_port": 9000,
            "env": {"DEMO_GREETING": "hi"},
            "network_volume": {"name": vol, "mount_path": "/data"},
            "registry_auth": {"server": "registry.example.com", "username": "bot", "password": secret},
            "active_workers": 1, "max_workers": 3, "idle_timeout_secs": 1, "scale_down_delay_secs": 1
        }))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["registry_server"], "registry.example.com");
    assert!(!e.to_string().contains(secret) && !e.to_string().contains("\"bot\""), "{e}");

    let w1 = p.wait_ready(&id, 1).await.remove(0);
    let w1_id = w1["id"].as_str().unwrap().to_owned();
    // The container's output reaches the endpoint's log, with its worker and stream.
    eventually("the container's output in the log", Duration::from_secs(20), async || {
        let v =
            p.api_call(Method::GET, &format!("/v1/endpoints/{id}/logs?q=listening&worker={w1_id}"), None).await.json();
        v["lines"].as_array().unwrap().iter().any(|l| l["stream"] == "stderr").then_some(())
    })
    .await;
    let r = p.get(&id, "/first").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["worker"], w1_id.as_str());
    assert_eq!(body["demo_env"]["DEMO_GREETING"], "hi");
    assert_eq!(body["demo_env"]["DEMO_BOOTS"], "1");
    assert_eq!(body["cuda_visible_devices"].as_str().map(str::len), Some(1), "one simulated GPU: {body}");
    // The container is labelled with its worker and published on loopback only.
    let (ok, port) = docker(&["port", &format!("sluice-{w1_id}"), "9000/tcp"]);
    assert!(ok && port.trim().starts_with("127.0.0.1:"), "{port}");
    let (_, labels) = docker(&["inspect", "-f", "{{json .Config.Labels}}", &format!("sluice-{w1_id}")]);
    let labels: Value = serde_json::from_str(labels.trim()).unwrap();
    assert_eq!(labels["io.sluice.worker"], w1_id.as_str());
    assert_eq!(labels["io.sluice.endpoint"], id.as_str());
    let instance = labels["io.sluice.instance"].as_str().unwrap().to_owned();

    // A killed container is replaced; the new one finds the volume's data.
    let (ok, out) = docker(&["kill", &format!("sluice-{w1_id}")]);
    assert!(ok, "{out}");
    let w2 = eventually("a replacement", Duration::from_secs(30), async || {
        ready_ids(&p.workers(&id).await).into_iter().find(|w| *w != w1_id)
    })
    .await;
    let failed = p.workers(&id).await.into_iter().find(|w| w["id"] == w1_id.as_str()).unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap().contains("signal 9"), "{failed}");
    let r = p.get(&id, "/second").await.json();
    assert_eq!((r["worker"].as_str(), r["demo_env"]["DEMO_BOOTS"].as_str()), (Some(w2.as_str()), Some("2")), "{r}");
    // Exited containers are removed; only running ones remain.
    eventually("the killed container removed", Duration::from_secs(10), async || {
        (!containers(&format!("io.sluice.worker={w1_id}")).iter().any(|c| c.contains("sluice-"))).then_some(())
    })
    .await;

    // Scale up: two more containers; scale to zero: none; a request at zero gets a fresh one.
    p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"active_workers": 3}))).await;
    eventually("three running containers", Duration::from_secs(30), async || {
        let c = containers(&format!("io.sluice.endpoint={id}"));
        (c.iter().filter(|c| c.ends_with("running")).count() == 3).then_some(())
    })
    .await;
    p.api_call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(json!({"active_workers": 0}))).await;
    eventually("no container left", Duration::from_secs(40), async || {
        containers(&format!("io.sluice.endpoint={id}")).is_empty().then_some(())
    })
    .await;
    let (ok, vols) = docker(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(ok && vols.lines().any(|v| v == format!("sluice-admin-{vol}")), "the volume stays: {vols}");
    let r = p.get(&id, "/from-zero").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let boots: u32 = r.json()["demo_env"]["DEMO_BOOTS"].as_str().unwrap().parse().unwrap();
    assert!(boots >= 5, "the volume kept counting across scale to zero: {boots}");

    // Worker output reaches the per-worker log files.
    let logs = p.data_dir().join("logs").join(&id);
    eventually("worker output in the log files", Duration::from_secs(10), async || {
        let text = read(&logs.join(format!("{w1_id}.stderr.log")));
        text.contains("demo-worker: listening on 0.0.0.0:9000").then_some(())
    })
    .await;
    // The registry password is in no API answer and no log.
    let all = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.text();
    assert!(!all.contains(secret), "{all}");
    let mut logged = p.stderr();
    for f in std::fs::read_dir(&logs).unwrap() {
        logged.push_str(&read(&f.unwrap().path()));
    }
    assert!(!logged.contains(secret), "the registry password leaked into a log");

    // Quick deploy from a template, end to end, with the locally built image.
    let (ok, out, err) = cli(&p, &["templates"]);
    assert!(
        ok && out.contains("vllm") && out.contains("--set model=...") && out.contains("speech-to-text"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(&p, &["deploy", "vllm"]);
    assert!(!ok && err.contains("set.model"), "{err}");
    let (ok, out, err) = cli(
        &p,
        &[
            "deploy",
            "custom",
            "--set",
            &format!("image={image}"),
            "--set",
            "name=byo",
            "--set",
            "active_workers=1",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let byo: Value = serde_json::from_str(&out).unwrap();
    let byo = byo["id"].as_str().unwrap().to_owned();
    p.wait_ready(&byo, 1).await;
    // Deployed endpoints are private: the gateway wants a key of the account.
    let url = format!("{}/e/{byo}/from-template", p.gateway);
    assert_eq!(p.get(&byo, "/from-template").await.status, StatusCode::UNAUTHORIZED);
    let r = send(Method::GET, &url, &[("authorization".into(), format!("Bearer {}", p.key))], Default::default()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let dir = p.stop();
    assert!(containers(&format!("io.sluice.instance={instance}")).is_empty(), "Ctrl-C removes every container");
    drop(dir);
    let _ = docker(&["volume", "rm", &format!("sluice-admin-{vol}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_running_containers_and_removes_orphans_only() {
    let (p, demo, image) = start_docker(tempfile::tempdir().unwrap()).await;
    let before = p.wait_ready(&demo, 1).await.remove(0);
    let wid = before["id"].as_str().unwrap().to_owned();
    let (_, cid) =
        docker(&["inspect", "-f", "{{.Id}} {{index .Config.Labels \"io.sluice.instance\"}}", &format!("sluice-{wid}")]);
    let (cid, instance) = cid.trim().split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap();
    let dir = p.kill9();

    // While the platform is down: an orphan of this instance (a worker no record knows) and a
    // container of another instance, which must be left alone.
    let run = |name: &str, inst: &str, worker: &str| {
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            &format!("io.sluice.instance={inst}"),
            "--label",
            &format!("io.sluice.worker={worker}"),
            "--label",
            "io.sluice.endpoint=orphanorphan1",
            "-e",
            "PORT=8000",
            "-p",
            "127.0.0.1::8000",
            &image,
        ])
    };
    let orphan = format!("sluice-orphan-{}", &instance[..8]);
    let foreign = format!("sluice-foreign-{}", &instance[..8]);
    let (ok, out) = run(&orphan, &instance, "orphanorphan");
    assert!(ok, "{out}");
    let (ok, out) = run(&foreign, "someone-else", "foreignforei");
    assert!(ok, "{out}");

    let p = Platform::start_in(dir, &["--runtime", "docker"]).await;
    let after = p.wait_ready(&demo, 1).await.remove(0);
    assert_eq!(after["id"], before["id"], "the running container is adopted, not replaced");
    let (_, cid2) = docker(&["inspect", "-f", "{{.Id}}", &format!("sluice-{wid}")]);
    assert_eq!(cid2.trim(), cid);
    let r = p.get(&demo, "/after-restart").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    eventually("the orphan removed", Duration::from_secs(20), async || {
        (!docker(&["inspect", &orphan]).0).then_some(())
    })
    .await;
    let (ok, state) = docker(&["inspect", "-f", "{{.State.Status}}", &foreign]);
    assert!(ok && state.trim() == "running", "another instance's container is untouched: {state}");
    let _ = docker(&["rm", "-f", &foreign]);
    p.stop();
    assert!(containers(&format!("io.sluice.instance={instance}")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_the_worker_with_the_reason() {
    let p = Platform::start_in(tempfile::tempdir().unwrap(), &["--runtime", "docker", "--no-demo"]).await;
    // Missing image and no registry reachable: the pull fails fast with the Engine's reason.
    let e = p
        .create(json!({"name": "missing", "image": "127.0.0.1:9/sluice/none:1", "active_workers": 1, "max_workers": 1}))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let failed = eventually("a failed worker", Duration::from_secs(60), async || {
        p.workers(&id).await.into_iter().find(|w| w["state"] == "failed")
    })
    .await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("127.0.0.1:9/sluice/none:1") && reason.contains("could not be pulled"), "{reason}");
    // Retried with back-off (1, 2, 4, 8 s), then given up with the reason in plain sight.
    let pending = eventually("the endpoint gives up", Duration::from_secs(40), async || {
        p.workers(&id).await.into_iter().find(|w| {
            w["state"] == "pending"
                && w["reason"].as_str().is_some_and(|r| r.contains("gave up after 5 failed launches"))
        })
    })
    .await;
    assert!(pending["reason"].as_str().unwrap().contains("could not be pulled"), "{pending}");
    let failed = |ws: &[Value]| ws.iter().filter(|w| w["state"] == "failed").count();
    assert_eq!(failed(&p.workers(&id).await), 5);
    // An update (here: new credentials) tries again.
    let r = p
        .api_call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({"registry_auth": {"server": "127.0.0.1:9", "username": "u", "password": "p"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    eventually("a new attempt", Duration::from_secs(20), async || (failed(&p.workers(&id).await) > 5).then_some(()))
        .await;
    // A process-runtime endpoint (no image) is refused by a Docker platform with the field named.
    let r = p.api_call(Method::POST, "/v1/endpoints", Some(json!({"name": "noimg", "start_command": "true"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "image");
    p.stop();
}

/// A private registry on loopback (Debian's docker-registry) with htpasswd authentication.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_registry(user: &str, password: &str) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("htpasswd");
    std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n\
         auth:\n  htpasswd:\n    realm: sluice-test\n    path: {}\n",
        dir.path().join("data").display(),
        dir.path().join("htpasswd").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", dir.path().join("config.yml").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
        .spawn()
        .expect("docker-registry (scripts/docker.sh installs it)");
    let reg = Registry { child, addr, _dir: dir };
    let url = format!("http://{}/v2/", reg.addr);
    eventually("the registry listening", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(&reg.addr).ok().map(drop)
    })
    .await;
    assert_eq!(send(Method::GET, &url, &[], Default::default()).await.status, StatusCode::UNAUTHORIZED);
    reg
}

/// Imports a small image (a shell and its libraries, plus `size` bytes of noise so a pull
/// has something to show) under `tag`, pushes it, and removes it locally.
fn push_small_image(reg: &Registry, tag: &str, user: &str, password: &str, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let noise: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.path().join("noise.bin"), noise).unwrap();
    let script = format!(
        "tar -chf - -C / bin/sh lib/x86_64-linux-gnu/libc.so.6 lib64/ld-linux-x86-64.so.2 -C {} noise.bin \
         | docker import - {tag}",
        dir.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = dir.path().join("docker-config");
    let cfg = cfg.to_str().unwrap();
    let (ok, out) = docker(&["--config", cfg, "login", &reg.addr, "-u", user, "-p", password]);
    assert!(ok, "{out}");
    let (ok, out) = docker(&["--config", cfg, "push", tag]);
    assert!(ok, "{out}");
    let (ok, out) = docker(&["rmi", tag]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_prewarmed_from_a_private_registry_with_progress_and_clear_failures() {
    let (user, password) = ("puller", "s3cret-registry-pw");
    let reg = start_registry(user, password).await;
    let tiny = format!("{}/sluice/tiny:{}", reg.addr, std::process::id());
    let other = format!("{}/sluice/other:{}", reg.addr, std::process::id());
    push_small_image(&reg, &tiny, user, password, 4 << 20);
    push_small_image(&reg, &other, user, password, 1 << 20);
    assert!(!docker(&["image", "inspect", &tiny]).0, "removed locally before the test");

    let p = Platform::start_in(tempfile::tempdir().unwrap(), &["--runtime", "docker", "--no-demo"]).await;
    // Creating an endpoint pulls its image on the nodes of its data center at once, with the
    // endpoint's credentials, before any worker needs it (active_workers 0).
    let e = p
        .create(json!({
            "name": "private", "image": tiny, "active_workers": 0, "max_workers": 1,
            "registry_auth": {"server": reg.addr, "username": user, "password": password}
        }))
        .await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["image_pulls"][0]["node"], "local", "{e}");
    let mut seen = Vec::new();
    let done = eventually("the image ready", Duration::from_secs(60), async || {
        let v = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
        let pull = v["image_pulls"][0].clone();
        seen.push(pull["state"].as_str().unwrap_or("").to_owned());
        assert_ne!(pull["state"], "failed", "{pull}");
        (pull["state"] == "ready").then_some(pull)
    })
    .await;
    assert_eq!(done["image"], tiny.as_str());
    assert!(seen.iter().all(|s| ["pending", "pulling", "ready"].contains(&s.as_str())), "{seen:?}");
    assert!(docker(&["image", "inspect", &tiny]).0, "the image is on the node");

    // The CLI: without credentials the pull fails, visibly, with the registry's reason.
    let cli_env = |args: &[&str], pw: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args).args(["--api", &p.api, "--api-key", &p.key]).env("SLUICE_PROGRESS", "always");
        if let Some(pw) = pw {
            c.env("REG_PW", pw);
        }
        let out = c.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = cli_env(&["image", "prewarm", &other], None);
    assert!(!ok, "{err}");
    assert!(err.contains("failed") && err.contains(&other), "{err}");
    assert!(err.to_lowercase().contains("auth"), "the registry's reason: {err}");
    // With credentials (the password from an environment variable), it shows progress and ends ready.
    let (ok, err) = cli_env(
        &[
            "image",
            "prewarm",
            &other,
            "--registry-server",
            &reg.addr,
            "--registry-username",
            user,
            "--registry-password-env",
            "REG_PW",
        ],
        Some(password),
    );
    assert!(ok && err.contains("ready"), "{err}");
    // `endpoint create --wait` shows the pull and returns once the image is ready.
    let (ok, err) = cli_env(
        &["endpoint", "create", "--name", "waiter", "--image", &other, "--active-workers", "0", "--wait"],
        None,
    );
    assert!(ok && err.contains(&other) && err.contains("ready"), "{err}");
    let list = p.api_call(Method::GET, "/v1/images", None).await.json();
    assert!(list["images"].as_array().unwrap().iter().any(|i| i["image"] == other.as_str() && i["state"] == "ready"));
    // Bad input is refused with the field named.
    let r = p.api_call(Method::POST, "/v1/images/prewarm", Some(json!({"image": "a b"}))).await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("image")),
        "{}",
        r.text()
    );
    let r = p.api_call(Method::POST, "/v1/images/prewarm", Some(json!({"image": "x", "data_center": "mars"}))).await;
    assert_eq!(r.json()["error"]["field"], "data_center");

    assert!(!p.stderr().contains(password), "the registry password leaked into the platform log");
    p.stop();
    let _ = docker(&["rmi", &tiny, &other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_workers_run_as_containers_and_a_killed_one_loses_no_job() {
    let p = Platform::start_in(
        tempfile::tempdir().unwrap(),
        &["--runtime", "docker", "--no-demo", "--worker-ping-interval-ms", "1000"],
    )
    .await;
    let e = p
        .create(json!({
            "name": "sdk", "type": "queue", "public": false, "image": sdk_image(),
            "start_command": "exec python /opt/worker.py",
            "env": {"MODE": "sync", "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true"},
            "active_workers": 1, "max_workers": 2, "startup_timeout_secs": 60
        }))
        .await;
    assert_eq!(e["delivery"], "pull", "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    p.wait_ready(&id, 1).await;
    let v2 = async |method: Method, path: String, body: Option<Value>| {
        let h = vec![("authorization".to_owned(), p.key.clone())];
        let b = body.map_or_else(bytes::Bytes::new, |b| bytes::Bytes::from(b.to_string()));
        send(method, &format!("{}/v2/{id}{path}", p.gateway), &h, b).await.json()
    };

    // The containerized SDK worker reaches the platform on loopback (it shares the host's
    // network), takes the job, reports progress, then the result.
    let job = v2(Method::POST, "/run".into(), Some(json!({"input": {"progress": true}}))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let progress = eventually("progress from the container", Duration::from_secs(30), async || {
        let s = v2(Method::GET, format!("/status/{job}"), None).await;
        (s["status"] == "IN_PROGRESS" && !s["output"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(progress["output"], json!({"progress": "half"}), "{progress}");
    let done = eventually("the job completed", Duration::from_secs(30), async || {
        let s = v2(Method::GET, format!("/status/{job}"), None).await;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    let victim = done["workerId"].as_str().unwrap().to_owned();
    assert_eq!(done["output"]["worker"], victim.as_str(), "RUNPOD_POD_ID is the worker id: {done}");

    // Killed mid-job: the job goes back to the queue and completes in a new container.
    let job =
        v2(Method::POST, "/run".into(), Some(json!({"input": {"sleep": 3}}))).await["id"].as_str().unwrap().to_owned();
    eventually("the job runs", Duration::from_secs(30), async || {
        (v2(Method::GET, format!("/status/{job}"), None).await["status"] == "IN_PROGRESS").then_some(())
    })
    .await;
    let (ok, out) = docker(&["kill", &format!("sluice-{victim}")]);
    assert!(ok, "{out}");
    let done = eventually("the job completed elsewhere", Duration::from_secs(60), async || {
        let s = v2(Method::GET, format!("/status/{job}"), None).await;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    assert_ne!(done["workerId"], victim.as_str(), "{done}");
    assert_eq!(done["retries"], 1, "{done}");
    p.stop();
    assert!(containers(&format!("io.sluice.endpoint={id}")).is_empty(), "no container left behind");
}
