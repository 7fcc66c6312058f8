//! Validation as tables: a draft change in, the field named (or a valid spec) out.
use super::*;

fn ctx() -> ValidationContext {
    ValidationContext {
        gpu_types: vec!["SIM".into(), "A100".into()],
        data_centers: vec!["local".into(), "eu-1".into()],
        max_workers_quota: 10,
        runtime: RuntimeKind::Process,
    }
}

fn draft() -> EndpointDraft {
    EndpointDraft { name: Some("demo".into()), start_command: Some("run".into()), ..Default::default() }
}

/// One table: a draft change, and the field that must be named (or `None` for valid).
fn check(edit: impl FnOnce(&mut EndpointDraft), expect_field: Option<&str>) {
    let mut d = draft();
    edit(&mut d);
    match (EndpointSpec::validate(d.clone(), &ctx()), expect_field) {
        (Ok(_), None) => {}
        (Err(e), Some(f)) => assert_eq!(e.field, f, "{d:?} -> {e}"),
        (r, f) => panic!("draft {d:?}: expected {f:?}, got {r:?}"),
    }
}

/// Every numeric field, alone, just outside its range and at the widths where integers
/// overflow: the error names exactly that field (a default derived from it never fails in
/// another field's name).
#[test]
fn out_of_range_numbers_name_their_own_field() {
    type Set = fn(&mut EndpointDraft, i64);
    let fields: [(&str, i64, i64, Set); 16] = [
        ("http_port", 1, 65535, |d, v| d.http_port = Some(v)),
        ("idle_timeout_secs", 1, 3600, |d, v| d.idle_timeout_secs = Some(v)),
        ("execution_timeout_secs", 1, 86_400, |d, v| d.execution_timeout_secs = Some(v)),
        ("startup_timeout_secs", 1, 3600, |d, v| d.startup_timeout_secs = Some(v)),
        ("active_workers", 0, 10, |d, v| d.active_workers = Some(v)),
        ("max_workers", 1, 10, |d, v| d.max_workers = Some(v)),
        ("gpus_per_worker", 1, 8, |d, v| d.gpus_per_worker = Some(v)),
        ("scaling_target", 1, MAX_SCALING_TARGET, |d, v| d.scaling_target = Some(v)),
        ("concurrency_per_worker", 1, MAX_CONCURRENCY, |d, v| d.concurrency_per_worker = Some(v)),
        ("scale_up_window_secs", 1, 3600, |d, v| d.scale_up_window_secs = Some(v)),
        ("scale_up_max_percent", 1, 100_000, |d, v| d.scale_up_max_percent = Some(v)),
        ("scale_down_delay_secs", 0, 3600, |d, v| d.scale_down_delay_secs = Some(v)),
        ("scale_down_max_percent", 1, 100, |d, v| d.scale_down_max_percent = Some(v)),
        ("queue_capacity", 0, 1_000_000, |d, v| d.queue_capacity = Some(v)),
        ("queue_timeout_secs", 1, 3600, |d, v| d.queue_timeout_secs = Some(v)),
        ("max_requests_per_minute", 0, 100_000_000, |d, v| d.max_requests_per_minute = Some(v)),
    ];
    for (field, lo, hi, set) in fields {
        for v in [lo - 1, hi + 1, 1 << 31, 1 << 32, -1] {
            if (lo..=hi).contains(&v) {
                continue;
            }
            check(|d| set(d, v), Some(field));
        }
        check(|d| set(d, lo), None);
        check(|d| set(d, hi), None);
    }
    // A large submitted target alone fills the per-worker cap with a value it accepts.
    let mut d = draft();
    d.scaling_target = Some(MAX_SCALING_TARGET);
    assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().limits.concurrency_per_worker, MAX_CONCURRENCY as u32);
}

#[test]
fn defaults() {
    let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
    assert_eq!(s.workers.active_workers, 1);
    assert_eq!(s.workers.max_workers, 3);
    assert_eq!(s.workers.gpus_per_worker, 1);
    assert_eq!(s.workers.gpu_type, "SIM");
    assert_eq!(s.data_center, "local");
    assert_eq!(s.shell, "/bin/sh");
    assert_eq!(s.health_check_path, "/health");
    assert_eq!(s.timeouts.idle_timeout_secs, 10);
    assert_eq!(s.timeouts.execution_timeout_secs, 600);
    assert_eq!(s.limits.load_balancing, LoadBalancing::RoundRobin);
}

#[test]
fn queue_kinds_and_delivery() {
    let q = |delivery: Option<&str>| {
        let mut d = draft();
        d.kind = Some("queue".into());
        d.delivery = delivery.map(Into::into);
        EndpointSpec::validate(d, &ctx()).map(|s| (s.mode.kind(), s.mode.delivery()))
    };
    assert_eq!(q(None).unwrap(), (EndpointKind::Queue, Delivery::Pull), "RunPod SDK workers by default");
    assert_eq!(q(Some("pull")).unwrap().1, Delivery::Pull);
    assert_eq!(q(Some("push")).unwrap().1, Delivery::Push);
    assert_eq!(q(Some("Push")).unwrap_err().field, "delivery");
    assert_eq!(q(Some("")).unwrap_err().field, "delivery");
    check(|d| d.kind = Some("batch".into()), Some("type"));
    // The spec round-trips its delivery through a draft.
    let mut d = draft();
    d.kind = Some("queue".into());
    d.delivery = Some("push".into());
    let s = EndpointSpec::validate(d, &ctx()).unwrap();
    assert_eq!(EndpointSpec::validate(s.to_draft(), &ctx()).unwrap().mode, Mode::QueuePush { job_path: "/".into() });
    // What means nothing cannot be represented: an HTTP endpoint has no delivery or job path,
    // and its draft says none.
    let mut d = draft();
    d.delivery = Some("push".into());
    d.job_path = Some("/jobs".into());
    let s = EndpointSpec::validate(d, &ctx()).unwrap();
    assert_eq!(s.mode, Mode::Http);
    assert_eq!((s.to_draft().delivery, s.to_draft().job_path), (None, None));
    // Stored, the spec is the flat object of earlier versions, and it reads back the same.
    let mut d = draft();
    d.kind = Some("queue".into());
    d.delivery = Some("push".into());
    d.job_path = Some("/jobs".into());
    let s = EndpointSpec::validate(d, &ctx()).unwrap();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["delivery"].as_str(), json["job_path"].as_str()),
        (Some("queue"), Some("push"), Some("/jobs"))
    );
    assert_eq!(json["max_workers"], 3);
    assert_eq!(serde_json::from_value::<EndpointSpec>(json).unwrap(), s);
    let old = serde_json::json!({
        "name": "old", "image": null, "start_command": "run", "shell": "/bin/sh", "data_center": "local",
        "http_port": 8000, "env": {}, "network_volume": null, "health_check_path": "/health",
        "idle_timeout_secs": 10, "execution_timeout_secs": 600, "startup_timeout_secs": 600, "active_workers": 1,
        "max_workers": 3, "gpus_per_worker": 1, "gpu_type": "SIM", "load_balancing": "round_robin",
        "scaling_policy": "default", "scaling_signal": "concurrency", "scaling_target": 100,
        "concurrency_per_worker": 100, "scale_up_window_secs": 60, "scale_up_max_percent": 200,
        "scale_down_delay_secs": 60, "scale_down_max_percent": 100, "queue_capacity": 1000, "queue_timeout_secs": 600
    });
    let read: EndpointSpec = serde_json::from_value(old).unwrap();
    assert_eq!(
        (read.mode, read.public, read.limits.max_requests_per_minute),
        (Mode::Http, false, None),
        "a spec stored before type, public and limits existed"
    );
}

#[test]
fn name_counts_characters_not_bytes() {
    check(|d| d.name = Some("🦀".repeat(128)), None);
    check(|d| d.name = Some("é".repeat(128)), None);
    check(|d| d.name = Some("a".repeat(128)), None);
    check(|d| d.name = Some("a".repeat(129)), Some("name"));
    check(|d| d.name = Some("🦀".repeat(129)), Some("name"));
    check(|d| d.name = Some(String::new()), Some("name"));
    check(|d| d.name = Some("   ".into()), Some("name"));
    check(|d| d.name = Some("a\nb".into()), Some("name"));
    check(|d| d.name = None, Some("name"));
}

#[test]
fn worker_counts() {
    check(|d| d.active_workers = Some(0), None);
    check(|d| d.active_workers = Some(-1), Some("active_workers"));
    check(|d| d.active_workers = Some(11), Some("active_workers"));
    check(
        |d| {
            d.active_workers = Some(5);
            d.max_workers = Some(4)
        },
        Some("max_workers"),
    );
    check(
        |d| {
            d.active_workers = Some(5);
            d.max_workers = Some(5)
        },
        None,
    );
    check(
        |d| {
            d.active_workers = Some(0);
            d.max_workers = Some(0)
        },
        Some("max_workers"),
    );
    check(|d| d.max_workers = Some(10), None);
    check(|d| d.max_workers = Some(11), Some("max_workers"));
    // A default max below a larger active count is raised to active.
    let mut d = draft();
    d.active_workers = Some(7);
    assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().workers.max_workers, 7);
    check(|d| d.gpus_per_worker = Some(0), Some("gpus_per_worker"));
    check(|d| d.gpus_per_worker = Some(8), None);
    check(|d| d.gpus_per_worker = Some(9), Some("gpus_per_worker"));
}

#[test]
fn catalog_fields() {
    check(|d| d.gpu_type = Some("A100".into()), None);
    check(|d| d.gpu_type = Some("H900".into()), Some("gpu_type"));
    check(|d| d.data_center = Some("eu-1".into()), None);
    check(|d| d.data_center = Some("mars".into()), Some("data_center"));
    check(|d| d.load_balancing = Some("least_outstanding_requests".into()), None);
    check(|d| d.load_balancing = Some("random".into()), Some("load_balancing"));
}

#[test]
fn ports_timeouts_paths() {
    check(|d| d.http_port = Some(0), Some("http_port"));
    check(|d| d.http_port = Some(65535), None);
    check(|d| d.http_port = Some(65536), Some("http_port"));
    check(|d| d.idle_timeout_secs = Some(0), Some("idle_timeout_secs"));
    check(|d| d.idle_timeout_secs = Some(3600), None);
    check(|d| d.idle_timeout_secs = Some(3601), Some("idle_timeout_secs"));
    check(|d| d.execution_timeout_secs = Some(86_400), None);
    check(|d| d.execution_timeout_secs = Some(86_401), Some("execution_timeout_secs"));
    check(|d| d.execution_timeout_secs = Some(0), Some("execution_timeout_secs"));
    check(|d| d.startup_timeout_secs = Some(0), Some("startup_timeout_secs"));
    check(|d| d.health_check_path = Some("health".into()), Some("health_check_path"));
    check(|d| d.health_check_path = Some("/ready?x=1".into()), None);
    check(|d| d.health_check_path = Some("/a b".into()), Some("health_check_path"));
    check(|d| d.shell = Some("bash".into()), Some("shell"));
    check(|d| d.shell = Some("/bin/bash".into()), None);
}

#[test]
fn env_rules() {
    let env = |k: &str| Some(BTreeMap::from([(k.to_owned(), "v".to_owned())]));
    check(|d| d.env = env("HF_TOKEN"), None);
    check(|d| d.env = env("_x1"), None);
    check(|d| d.env = env("1X"), Some("env"));
    check(|d| d.env = env("A-B"), Some("env"));
    check(|d| d.env = env(""), Some("env"));
    check(|d| d.env = env("HF_TOKEN=hf_abc"), Some("env"));
    check(|d| d.env = env("PORT"), Some("env.PORT"));
    check(|d| d.env = env("SLUICE_X"), Some("env.SLUICE_X"));
    check(|d| d.env = env("CUDA_VISIBLE_DEVICES"), Some("env.CUDA_VISIBLE_DEVICES"));
    check(|d| d.env = Some(BTreeMap::from([("BIG".into(), "x".repeat(MAX_ENV_VALUE_BYTES + 1))])), Some("env.BIG"));
}

#[test]
fn volume_rules() {
    let vol = |n: &str, p: &str| Some(NetworkVolume { name: n.into(), mount_path: p.into() });
    check(|d| d.network_volume = vol("models", "/runpod-volume"), None);
    check(|d| d.network_volume = vol("models", "/data/models/"), None);
    check(|d| d.network_volume = vol("models", "data"), Some("network_volume.mount_path"));
    check(|d| d.network_volume = vol("models", "/data/../etc"), Some("network_volume.mount_path"));
    check(|d| d.network_volume = vol("models", "/.."), Some("network_volume.mount_path"));
    check(|d| d.network_volume = vol("models", "/"), Some("network_volume.mount_path"));
    check(|d| d.network_volume = vol("models", "/a//b"), Some("network_volume.mount_path"));
    check(|d| d.network_volume = vol("", "/data"), Some("network_volume.name"));
    check(|d| d.network_volume = vol("../x", "/data"), Some("network_volume.name"));
    check(|d| d.network_volume = vol("Big", "/data"), Some("network_volume.name"));
}

#[test]
fn runtime_requirements() {
    check(|d| d.start_command = None, Some("start_command"));
    check(|d| d.start_command = Some("  ".into()), Some("start_command"));
    let mut c = ctx();
    c.runtime = RuntimeKind::Docker;
    let e = EndpointSpec::validate(EndpointDraft { name: Some("x".into()), ..Default::default() }, &c).unwrap_err();
    assert_eq!(e.field, "image");
    check(|d| d.image = Some("has space".into()), Some("image"));
    check(|d| d.image = Some("ghcr.io/x/y:1".into()), None);
}

#[test]
fn scaling_settings() {
    let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
    assert_eq!(
        (
            s.autoscale.scaling_target,
            s.limits.concurrency_per_worker,
            s.limits.queue_capacity,
            s.limits.queue_timeout_secs
        ),
        (100, 100, 1000, 600)
    );
    let mut d = draft();
    d.concurrency_per_worker = Some(4);
    let s = EndpointSpec::validate(d, &ctx()).unwrap();
    assert_eq!((s.autoscale.scaling_target, s.limits.concurrency_per_worker), (4, 4));
    let mut d = draft();
    d.scaling_target = Some(8);
    assert_eq!(EndpointSpec::validate(d, &ctx()).unwrap().limits.concurrency_per_worker, 8);
    check(|d| d.scaling_policy = Some("knative".into()), None);
    check(|d| d.scaling_policy = Some("magic".into()), Some("scaling_policy"));
    check(|d| d.scaling_signal = Some("queue_delay".into()), None);
    check(|d| d.scaling_signal = Some("vibes".into()), Some("scaling_signal"));
    check(
        |d| {
            d.scaling_signal = Some("gpu_utilization".into());
            d.scaling_target = Some(101)
        },
        Some("scaling_target"),
    );
    check(|d| d.concurrency_per_worker = Some(0), Some("concurrency_per_worker"));
    check(|d| d.scale_down_max_percent = Some(101), Some("scale_down_max_percent"));
    check(|d| d.queue_timeout_secs = Some(0), Some("queue_timeout_secs"));
    check(|d| d.queue_capacity = Some(-1), Some("queue_capacity"));
}

#[test]
fn overlay_and_roundtrip() {
    let s = EndpointSpec::validate(draft(), &ctx()).unwrap();
    let patched = s.to_draft().overlay(EndpointDraft { max_workers: Some(5), ..Default::default() });
    let s2 = EndpointSpec::validate(patched, &ctx()).unwrap();
    assert_eq!(s2.workers.max_workers, 5);
    let mut back = s2.clone();
    back.workers.max_workers = 3;
    assert_eq!(back, s);
    assert!(!s.workers_differ(&s2));
    let s3 = EndpointSpec { start_command: Some("other".into()), ..s.clone() };
    assert!(s.workers_differ(&s3));
    let scaled = s.to_draft().overlay(EndpointDraft {
        scaling_policy: Some("knative".into()),
        queue_capacity: Some(7),
        scale_up_max_percent: Some(50),
        ..Default::default()
    });
    let s4 = EndpointSpec::validate(scaled, &ctx()).unwrap();
    assert_eq!(
        (s4.autoscale.scaling_policy, s4.limits.queue_capacity, s4.autoscale.scale_up_max_percent),
        (Preset::Knative, 7, 50)
    );
}

#[test]
fn sleeping_workers_need_both_paths_fit_in_max_workers_and_are_not_for_pull_workers() {
    let on = |d: &mut EndpointDraft| {
        d.max_workers = Some(3);
        d.max_sleeping = Some(1);
        d.sleep_path = Some("/sleep?level=1".into());
        d.wake_path = Some("/wake_up".into());
    };
    check(on, None);
    let s = {
        let mut d = draft();
        on(&mut d);
        EndpointSpec::validate(d, &ctx()).unwrap()
    };
    assert!(s.sleep.enabled());
    assert_eq!(
        (s.sleep.sleep_path.as_deref(), s.sleep.sleep_ttl_secs),
        (Some("/sleep?level=1"), DEFAULT_SLEEP_TTL_SECS)
    );
    // Off by default, and stored specs without the fields read as off.
    assert!(!EndpointSpec::validate(draft(), &ctx()).unwrap().sleep.enabled());
    let mut json = serde_json::to_value(&s).unwrap();
    for k in ["sleep_path", "wake_path", "max_sleeping", "sleep_ttl_secs"] {
        json.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(serde_json::from_value::<EndpointSpec>(json).unwrap().sleep, Sleep::default());
    // (edit, field named)
    type Edit = fn(&mut EndpointDraft);
    let cases: [(Edit, &str); 9] = [
        (|d| d.sleep_path = None, "sleep_path"),
        (|d| d.wake_path = Some(String::new()), "wake_path"),
        (|d| d.sleep_path = Some("sleep".into()), "sleep_path"),
        (|d| d.wake_path = Some("/wake up".into()), "wake_path"),
        (|d| d.sleep_path = Some("/a/../b".into()), "sleep_path"),
        (|d| d.max_sleeping = Some(4), "max_sleeping"),
        (|d| d.max_sleeping = Some(-1), "max_sleeping"),
        (|d| d.sleep_ttl_secs = Some(5), "sleep_ttl_secs"),
        (
            |d| {
                d.kind = Some("queue".into());
                d.delivery = Some("pull".into());
            },
            "max_sleeping",
        ),
    ];
    for (edit, field) in cases {
        check(
            |d| {
                on(d);
                edit(d);
            },
            Some(field),
        );
    }
    // A push queue may sleep; an update that turns it off clears it.
    check(
        |d| {
            on(d);
            d.kind = Some("queue".into());
            d.delivery = Some("push".into());
        },
        None,
    );
    let off = s.to_draft().overlay(EndpointDraft { max_sleeping: Some(0), ..Default::default() });
    assert!(!EndpointSpec::validate(off, &ctx()).unwrap().sleep.enabled());
}
