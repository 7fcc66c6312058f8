//! The CLI against a running platform: flags, `-f endpoint.toml`, tables and `--json`, errors.
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn endpoint_commands_drive_the_api() {
    let p = Platform::start().await;
    let file = p.dir.path().join("endpoint.toml");
    std::fs::write(
        &file,
        "name = \"from-file\"\nstart_command = \"true\"\nactive_workers = 0\nmax_workers = 4\n[env]\nMODEL = \"llama\"\n",
    )
    .unwrap();
    let (ok, out, err) = cli(&p, &["endpoint", "create", "-f", file.to_str().unwrap(), "--max-workers", "5", "--json"]);
    assert!(ok, "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["name"], "from-file");
    assert_eq!(e["max_workers"], 5, "flags override the file");
    assert_eq!(e["env"]["MODEL"], "llama");
    let id = e["id"].as_str().unwrap().to_owned();

    let (ok, out, _) = cli(
        &p,
        &[
            "endpoint",
            "create",
            "--name",
            "flags 🦀",
            "--start-command",
            "true",
            "--active-workers",
            "0",
            "--env",
            "A=1",
            "--volume",
            "vol:/data",
        ],
    );
    assert!(ok);
    assert!(out.contains("flags 🦀") && out.contains("A=1"), "{out}");

    let (ok, out, _) = cli(&p, &["endpoint", "list"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("READY/DESIRED"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    assert!(out.contains(&id));

    let (ok, out, _) = cli(&p, &["endpoint", "update", &id, "--max-workers", "6", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["max_workers"], 6);
    let (ok, out, _) = cli(&p, &["endpoint", "stop", &id]);
    assert!(ok && out.contains("stopped"), "{out}");
    let (ok, out, _) = cli(&p, &["endpoint", "start", &id, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "running");
    let (ok, out, _) = cli(&p, &["endpoint", "get", &id]);
    assert!(ok && out.contains("from-file") && out.contains("max 6"), "{out}");
    let (ok, out, _) = cli(&p, &["endpoint", "workers", &id]);
    assert!(ok && out.starts_with("ID"), "{out}");

    // A queue endpoint from flags.
    let (ok, out, err) = cli(
        &p,
        &[
            "endpoint",
            "create",
            "--name",
            "jobs",
            "--type",
            "queue",
            "--delivery",
            "push",
            "--job-path",
            "/run-job",
            "--start-command",
            "true",
            "--active-workers",
            "0",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (q["type"].as_str(), q["delivery"].as_str(), q["job_path"].as_str()),
        (Some("queue"), Some("push"), Some("/run-job")),
        "{q}"
    );
    let (ok, _, err) = cli(
        &p,
        &["endpoint", "create", "--name", "pull", "--type", "queue", "--delivery", "poll", "--start-command", "true"],
    );
    assert!(!ok && err.contains("delivery") && err.contains("\"pull\" or \"push\""), "{err}");
    let (ok, out, _) = cli(&p, &["endpoint", "delete", q["id"].as_str().unwrap()]);
    assert!(ok && out.contains("deleted"), "{out}");

    // Errors: non-zero exit and a message naming the field; nothing created.
    let (ok, _, err) =
        cli(&p, &["endpoint", "create", "--name", "bad", "--start-command", "true", "--gpus-per-worker", "9"]);
    assert!(!ok);
    assert!(err.contains("gpus_per_worker"), "{err}");
    let (ok, _, err) = cli(&p, &["endpoint", "create", "--name", "bad", "--env", "NOEQUALS"]);
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
    std::fs::write(&file, "name = \"x\"\nbogus = 1\n").unwrap();
    let (ok, _, err) = cli(&p, &["endpoint", "create", "-f", file.to_str().unwrap()]);
    assert!(!ok && err.contains("bogus"), "{err}");
    // A map given as a string: the file's line is named, its value (a secret here) is not shown.
    std::fs::write(&file, "name = \"x\"\nenv = \"HF_TOKEN=hf_SecretInAFile123\"\n").unwrap();
    let (ok, _, err) = cli(&p, &["endpoint", "create", "-f", file.to_str().unwrap()]);
    assert!(!ok && err.contains("line 2") && err.contains("expected a map"), "{err}");
    assert!(!err.contains("SecretInAFile"), "{err}");
    let (ok, _, err) = cli(&p, &["endpoint", "get", "nosuch"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, out, _) = cli(&p, &["endpoint", "list", "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["endpoints"].as_array().unwrap().len(), 2);

    let (ok, out, _) = cli(&p, &["endpoint", "delete", &id]);
    assert!(ok && out.contains("deleted"), "{out}");

    // The key and address also come from the data directory.
    let out = std::process::Command::new(BIN)
        .args(["endpoint", "list", "--json", "--data-dir"])
        .arg(p.data_dir())
        .env_remove("SLUICE_API")
        .env_remove("SLUICE_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A wrong key is refused with a clear message.
    let out = std::process::Command::new(BIN)
        .args(["endpoint", "list", "--api", &p.api, "--api-key", "sk_nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("API key"));
    p.stop();
}

#[test]
fn sim_and_plan_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.csv");
    let mut text = String::from("arrival_s,service_s,endpoint\n");
    for i in 0..300 {
        text.push_str(&format!("{},{},{}\n", f64::from(i) * 0.2, 1.5, if i % 3 == 0 { "a" } else { "b" }));
    }
    std::fs::write(&trace, text).unwrap();
    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let out = run(&[
        "sim",
        "--trace",
        trace.to_str().unwrap(),
        "--policy",
        "all",
        "--concurrency-per-worker",
        "2",
        "--cold-start-secs",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 9);
    for l in &lines {
        for k in [
            "policy",
            "requests",
            "completed",
            "rejected",
            "p50_s",
            "p95_s",
            "p99_s",
            "cold_start_hits",
            "gpu_seconds",
            "cost_usd",
            "scale_events",
        ] {
            assert!(!l[k].is_null(), "missing {k}: {l}");
        }
        assert_eq!(l["requests"], 300);
        assert_eq!(l["completed"].as_u64().unwrap() + l["rejected"].as_u64().unwrap(), 300);
    }
    // Deterministic: the same run gives the same numbers.
    let again = run(&[
        "sim",
        "--trace",
        trace.to_str().unwrap(),
        "--policy",
        "all",
        "--concurrency-per-worker",
        "2",
        "--cold-start-secs",
        "3",
        "--json",
    ]);
    assert_eq!(again.stdout, out.stdout);
    // Progress: none on a pipe (above), a line per policy where it is asked for, none with -q.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("simulated"));
    let with = |quiet: bool| {
        let mut c = std::process::Command::new(BIN);
        c.args(["sim", "--trace", trace.to_str().unwrap(), "--policy", "default,knative"])
            .env("SLUICE_PROGRESS", "always");
        if quiet {
            c.arg("--quiet");
        }
        String::from_utf8_lossy(&c.output().unwrap().stderr).into_owned()
    };
    let err = with(false);
    assert!(err.contains("simulated 1/2 policies") && err.contains("simulated 2/2 policies"), "{err}");
    assert!(!with(true).contains("simulated"));
    // Bad input: a clear message and a non-zero exit.
    std::fs::write(dir.path().join("bad.csv"), "arrival_s,service_s\n1,x\n").unwrap();
    let bad = run(&["sim", "--trace", dir.path().join("bad.csv").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = run(&["sim", "--trace", trace.to_str().unwrap(), "--policy", "magic"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("unknown policy"));

    let out = run(&["plan", "--latency-secs", "6", "--rpm", "20", "--peak-rpm", "100", "--json"]);
    assert!(out.status.success());
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((p["active_workers"].as_u64(), p["max_workers"].as_u64()), (Some(2), Some(10)));
    let out = run(&[
        "plan",
        "--trace",
        trace.to_str().unwrap(),
        "--p99-secs",
        "30",
        "--policy",
        "default,fixed-keepalive",
        "--cold-start-secs",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(p["result"]["p99_s"].as_f64().unwrap() <= 30.0 && p["result"]["rejected"] == 0, "{p}");
}

#[tokio::test]
async fn gpus_lists_the_simulated_inventory_and_who_holds_each_gpu() {
    let p = Platform::start().await;
    let id = p.create_demo("gpu-user", serde_json::json!({"active_workers": 1, "gpus_per_worker": 2})).await;
    let w = p.wait_ready(&id, 1).await.remove(0);
    let wid = w["id"].as_str().unwrap();
    let (ok, out, err) = cli(&p, &["gpus"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("simulated GPUs declared in the config"), "{out}");
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(rows.len(), 8, "eight SIM GPUs on node local: {out}");
    assert_eq!(rows.iter().filter(|r| r.contains(wid) && r.contains(&id)).count(), 2, "{out}");
    let (ok, out, _) = cli(&p, &["gpus", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v["source"] == "declared" && v["nodes"][0]["gpus"][0]["type"] == "SIM", "{v}");
    p.stop();
}
