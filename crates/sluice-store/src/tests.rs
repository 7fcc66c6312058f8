//! The store's test suite, run against both back ends: a real SQLite file and a real PostgreSQL
//! server (started per test from Debian's binaries, `testing::TestPostgres`).
use super::*;
use sluice_core::{
    EndpointDraft, EndpointId, EndpointSpec, EndpointStatus, RuntimeKind, ValidationContext, WorkerId, WorkerState,
    keys::Scope,
};

fn spec(name: &str) -> EndpointSpec {
    let ctx = ValidationContext {
        gpu_types: vec!["SIM".into()],
        data_centers: vec!["local".into()],
        max_workers_quota: 10,
        runtime: RuntimeKind::Process,
    };
    EndpointSpec::validate(
        EndpointDraft { name: Some(name.into()), start_command: Some("x".into()), ..Default::default() },
        &ctx,
    )
    .unwrap()
}

fn endpoint(id: &str, account: &str, name: &str) -> EndpointRecord {
    EndpointRecord {
        id: EndpointId::parse(id).unwrap(),
        account: account.into(),
        spec: spec(name),
        status: EndpointStatus::Running,
        generation: 1,
        created_at: Millis(1),
        updated_at: Millis(1),
        version: 0,
    }
}

fn worker(id: &str, ep: &str, state: WorkerState, created: u64) -> WorkerRecord {
    WorkerRecord {
        id: WorkerId::parse(id).unwrap(),
        endpoint_id: EndpointId::parse(ep).unwrap(),
        generation: 1,
        state,
        reason: None,
        node: Some("local".into()),
        gpus: vec![0, 3],
        port: Some(40000),
        pid: Some(1234),
        created_at: Millis(created),
        launched_at: Some(Millis(created + 1)),
        ready_at: None,
        stopped_at: None,
        phases: vec![sluice_core::worker::PhaseAt { phase: sluice_core::worker::Phase::Placed, at: Millis(created) }],
    }
}

/// Where a test's database lives; `open` may be called again to reopen it (a restart).
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(crate::testing::TestPostgres),
}

impl Db {
    fn new(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => Db::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Db::Postgres(crate::testing::TestPostgres::start().unwrap()),
        }
    }

    async fn open(&self) -> Store {
        let s = match self {
            Db::Sqlite(dir) => Store::open_sqlite(&dir.path().join("s.db")).await.unwrap(),
            Db::Postgres(pg) => Store::open(&pg.url("postgres")).await.unwrap(),
        };
        assert_eq!(s.backend(), self.backend());
        s
    }

    fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Each test, once per back end: `mod sqlite { fn name() }` and `mod postgres { fn name() }`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::Db::new(super::Backend::Sqlite);
                super::$name(&db).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = super::Db::new(super::Backend::Postgres);
                super::$name(&db).await
            })*
        }
    };
}

on_both!(
    endpoints_roundtrip_and_names_are_unique_per_account,
    workers_upsert_list_prune,
    keys_and_instance_id,
    scaling_events_page_newest_first_and_prune,
    the_demo_of_an_older_data_directory_stays_public,
    jobs_are_durable_claimed_once_and_end_once,
    concurrent_claims_take_each_job_once,
    stream_chunks_are_delivered_once_in_order,
    log_lines_query_follow_and_retention,
    accounts_usage_and_credit,
    a_lease_has_one_holder_until_it_expires,
    a_spec_update_never_writes_back_a_status_changed_meanwhile,
    recorded_traffic_windows_and_retention,
);

async fn recorded_traffic_windows_and_retention(db: &Db) {
    use crate::{RecordChunk, RecordKind, ShadowPoint};
    let s = db.open().await;
    s.create_endpoint(&endpoint("ep1", "a", "one")).await.unwrap();
    let id = EndpointId::parse("ep1").unwrap();
    let chunk = |kind, from: u64, to: u64| RecordChunk {
        endpoint_id: id.clone(),
        kind,
        first_at: Millis(from),
        last_at: Millis(to),
        n: 1,
        data: format!("[{from}]"),
    };
    let chunks = [
        chunk(RecordKind::Requests, 0, 999),
        chunk(RecordKind::Requests, 1_000, 1_999),
        chunk(RecordKind::Starts, 1_500, 1_500),
        chunk(RecordKind::Requests, 2_000, 2_999),
    ];
    let shadow = |policy: &str, at: u64, count: u32| ShadowPoint {
        endpoint_id: id.clone(),
        policy: policy.into(),
        at: Millis(at),
        count,
    };
    let points =
        [shadow("knative", 100, 1), shadow("knative", 900, 2), shadow("hpa", 200, 3), shadow("knative", 1_500, 0)];
    s.add_recorded(&chunks, &points).await.unwrap();
    // (since, until) → the request chunks that overlap.
    for ((since, until), want) in
        [((0, 3_000), vec!["[0]", "[1000]", "[2000]"]), ((1_200, 1_300), vec!["[1000]"]), ((3_000, 9_000), vec![])]
    {
        let got = s.recorded(&id, RecordKind::Requests, Millis(since), Millis(until)).await.unwrap();
        assert_eq!(got, want, "{since}..{until}");
    }
    assert_eq!(s.recorded(&id, RecordKind::Starts, Millis(0), Millis(9_000)).await.unwrap(), ["[1500]"]);
    // Each policy's count at the window's start, then the changes within it.
    let got: Vec<(String, u64, u32)> = s
        .shadow_points(&id, Millis(1_000), Millis(2_000))
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.policy, p.at.0, p.count))
        .collect();
    let mut before: Vec<_> = got[..2].to_vec();
    before.sort();
    assert_eq!(before, [("hpa".into(), 200, 3), ("knative".into(), 900, 2)]);
    assert_eq!(got[2..], [("knative".into(), 1_500, 0)]);
    // Age first, then size: the oldest chunks go.
    assert_eq!(s.prune_recorded(&id, Millis(1_000), u64::MAX).await.unwrap(), 1);
    assert_eq!(s.recorded(&id, RecordKind::Requests, Millis(0), Millis(9_000)).await.unwrap().len(), 2);
    assert_eq!(s.prune_recorded(&id, Millis(0), 13).await.unwrap(), 1, "two chunks of 6 bytes fit in 13, three do not");
    assert_eq!(s.recorded(&id, RecordKind::Requests, Millis(0), Millis(9_000)).await.unwrap(), ["[2000]"]);
    assert_eq!(s.shadow_points(&id, Millis(0), Millis(9_000)).await.unwrap().len(), 1);
    s.delete_endpoint(&id).await.unwrap();
    s.prune_recorded_orphans().await.unwrap();
    assert!(s.recorded(&id, RecordKind::Starts, Millis(0), Millis(9_000)).await.unwrap().is_empty());
}

async fn endpoints_roundtrip_and_names_are_unique_per_account(db: &Db) {
    let s = db.open().await;
    let e = endpoint("ep1", "acct", "llama 🦙");
    s.create_endpoint(&e).await.unwrap();
    assert_eq!(s.get_endpoint(&e.id).await.unwrap().unwrap(), e);
    assert!(matches!(s.create_endpoint(&endpoint("ep2", "acct", "llama 🦙")).await, Err(Error::Conflict(_))));
    s.create_endpoint(&endpoint("ep3", "other", "llama 🦙")).await.unwrap();
    assert_eq!(s.list_endpoints(&Scope::All).await.unwrap().len(), 2);
    assert_eq!(s.list_endpoints(&Scope::Account("acct".into())).await.unwrap().len(), 1);
    assert_eq!(s.find_endpoint_by_name("other", "llama 🦙").await.unwrap().unwrap().id.as_str(), "ep3");

    let mut u = e.clone();
    u.spec.workers.max_workers = 7;
    u.generation = 2;
    s.update_endpoint_spec(&u).await.unwrap();
    let stored = s.get_endpoint(&e.id).await.unwrap().unwrap();
    assert_eq!((stored.spec.workers.max_workers, stored.generation, stored.version), (7, 2, 1));
    // A second change made from the same read is refused: it would undo the first.
    assert!(matches!(s.update_endpoint_spec(&u).await, Err(Error::Stale(_))));
    assert!(s.set_endpoint_status(&e.id, EndpointStatus::Running, EndpointStatus::Stopped, Millis(2)).await.unwrap());
    assert!(!s.set_endpoint_status(&e.id, EndpointStatus::Running, EndpointStatus::Stopped, Millis(3)).await.unwrap());
    assert_eq!(s.get_endpoint(&e.id).await.unwrap().unwrap().status, EndpointStatus::Stopped);
    assert!(matches!(s.update_endpoint_spec(&endpoint("nope", "acct", "z")).await, Err(Error::NotFound)));
    s.delete_endpoint(&e.id).await.unwrap();
    assert!(matches!(s.delete_endpoint(&e.id).await, Err(Error::NotFound)));
    assert!(s.get_endpoint(&e.id).await.unwrap().is_none());
}

async fn workers_upsert_list_prune(db: &Db) {
    let s = db.open().await;
    s.create_endpoint(&endpoint("ep1", "a", "one")).await.unwrap();
    let mut w = worker("w1", "ep1", WorkerState::Starting, 10);
    s.upsert_worker(&w).await.unwrap();
    w.state = WorkerState::Ready;
    w.ready_at = Some(Millis(20));
    s.upsert_worker(&w).await.unwrap();
    assert_eq!(s.list_workers(&w.endpoint_id, 10).await.unwrap(), vec![w.clone()]);
    for i in 0..5 {
        s.upsert_worker(&worker(&format!("old{i}"), "ep1", WorkerState::Failed, i)).await.unwrap();
    }
    s.upsert_worker(&worker("gone", "ep9", WorkerState::Stopped, 1)).await.unwrap();
    assert_eq!(s.list_unfinished_workers().await.unwrap(), vec![w.clone()]);
    assert_eq!(s.prune_workers(2).await.unwrap(), 4);
    let left: Vec<String> =
        s.list_workers(&w.endpoint_id, 10).await.unwrap().into_iter().map(|w| w.id.to_string()).collect();
    assert_eq!(left, ["w1", "old4", "old3"]);
}

async fn keys_and_instance_id(db: &Db) {
    let s = db.open().await;
    assert_eq!(s.instance_id("first").await.unwrap(), "first");
    assert_eq!(s.instance_id("second").await.unwrap(), "first");
    s.put_key("d1", "sk_ab", "admin", "admin", None, Millis(1)).await.unwrap();
    s.put_key("d2", "sk_cd", "admin", "admin", None, Millis(2)).await.unwrap();
    s.revoke_other_admin_keys("d2", Millis(3)).await.unwrap();
    assert!(s.find_key("d1").await.unwrap().is_none());
    assert_eq!(s.find_key("d2").await.unwrap().unwrap().role, "admin");
    assert!(s.find_key("zz").await.unwrap().is_none());
}

async fn scaling_events_page_newest_first_and_prune(db: &Db) {
    let s = db.open().await;
    s.create_endpoint(&endpoint("ep1", "a", "one")).await.unwrap();
    let id = EndpointId::parse("ep1").unwrap();
    for i in 0..5u32 {
        let e = ScalingEvent {
            id: 0,
            endpoint_id: id.clone(),
            at: Millis(u64::from(i)),
            from: i,
            to: i + 1,
            reason: format!("r{i}"),
            inputs: "{}".into(),
            kind: crate::EVENT_DECISION.into(),
            replay: format!("{{\"n\":{i}}}"),
        };
        s.add_scaling_event(&e).await.unwrap();
    }
    let page = s.list_scaling_events(&id, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.to).collect::<Vec<_>>(), [5, 4]);
    let next = s.list_scaling_events(&id, Some(page[1].id), 10).await.unwrap();
    assert_eq!(next.iter().map(|e| e.to).collect::<Vec<_>>(), [3, 2, 1]);
    let window = s.scaling_events_between(&id, Millis(1), Millis(3), true).await.unwrap();
    assert_eq!(
        window.iter().map(|e| (e.to, e.replay.as_str())).collect::<Vec<_>>(),
        [(2, "{\"n\":1}"), (3, "{\"n\":2}")]
    );
    let light = s.scaling_events_between(&id, Millis(1), Millis(3), false).await.unwrap();
    assert_eq!(light.iter().map(|e| (e.to, e.replay.as_str())).collect::<Vec<_>>(), [(2, ""), (3, "")]);
    let before = s.last_decision_before(&id, Millis(3)).await.unwrap().unwrap();
    assert_eq!((before.to, before.replay.as_str()), (3, ""));
    assert!(s.last_decision_before(&id, Millis(0)).await.unwrap().is_none());
    assert_eq!(s.prune_scaling_events(3).await.unwrap(), 2);
    assert_eq!(s.list_scaling_events(&id, None, 10).await.unwrap().len(), 3);
}

async fn the_demo_of_an_older_data_directory_stays_public(db: &Db) {
    let s = db.open().await;
    s.create_endpoint(&endpoint("demo1", "admin", "demo")).await.unwrap();
    s.create_endpoint(&endpoint("other1", "admin", "other")).await.unwrap();
    // Specs written before `public` existed have no such key.
    let (strip, step) = match db.backend() {
        Backend::Sqlite => (
            "UPDATE endpoints SET spec = json_remove(spec, '$.public')",
            include_str!("../migrations/sqlite/0006_demo_public.sql"),
        ),
        Backend::Postgres => (
            "UPDATE endpoints SET spec = (spec::jsonb - 'public')::text",
            include_str!("../migrations/postgres/0006_demo_public.sql"),
        ),
    };
    sqlx::query(strip).execute(&s.writer).await.unwrap();
    use sqlx::SqlSafeStr;
    sqlx::raw_sql(step.into_sql_str()).execute(&s.writer).await.unwrap();
    let demo = s.get_endpoint(&EndpointId::parse("demo1").unwrap()).await.unwrap().unwrap();
    let other = s.get_endpoint(&EndpointId::parse("other1").unwrap()).await.unwrap().unwrap();
    assert!(demo.spec.public, "the demo answers without a key, as before");
    assert!(!other.spec.public, "every other endpoint is private");
}

fn job(id: &str, ep: &str, created: u64, key: Option<&str>) -> JobRecord {
    JobRecord {
        id: id.into(),
        endpoint_id: EndpointId::parse(ep).unwrap(),
        account: "a".into(),
        state: sluice_core::jobs::JobState::InQueue,
        input: r#"{"prompt":"hi"}"#.into(),
        output: None,
        error: None,
        policy: sluice_core::jobs::JobPolicy::validate(None).unwrap(),
        sync: false,
        webhook: None,
        idempotency_key: key.map(str::to_owned),
        worker_id: None,
        retries: 0,
        created_at: Millis(created),
        started_at: None,
        finished_at: None,
    }
}

async fn jobs_are_durable_claimed_once_and_end_once(db: &Db) {
    use sluice_core::jobs::JobState::*;
    let ep = EndpointId::parse("ep1").unwrap();
    {
        let s = db.open().await;
        assert!(s.create_job(&job("j1", "ep1", 1, Some("k"))).await.unwrap().1);
        // The same idempotency key returns the first job.
        let (again, new) = s.create_job(&job("j9", "ep1", 2, Some("k"))).await.unwrap();
        assert!(!new);
        assert_eq!(again.id, "j1");
        assert!(s.create_job(&job("j2", "ep1", 3, None)).await.unwrap().1);
        s.close().await;
    }
    // Survives a reopen (a restart of the platform).
    let s = db.open().await;
    assert_eq!(s.job_counts(&ep).await.unwrap().in_queue, 2);
    // Oldest first, each handed out once.
    let a = s.claim_job(&ep, "w1", Millis(10)).await.unwrap().unwrap();
    let b = s.claim_job(&ep, "w2", Millis(11)).await.unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.state, a.worker_id.as_deref()), ("j1", InProgress, Some("w1")));
    assert_eq!(b.id, "j2");
    assert!(s.claim_job(&ep, "w3", Millis(12)).await.unwrap().is_none());
    // Progress is not an end; a result ends it once; a late second result changes nothing.
    assert!(s.set_job_progress("j1", "w1", r#"{"pct":50}"#).await.unwrap());
    assert!(!s.set_job_progress("j1", "w2", r#"{"pct":60}"#).await.unwrap(), "only from its worker");
    assert!(s.job_runs_on("j1", "w1").await.unwrap() && !s.job_runs_on("j1", "w2").await.unwrap());
    assert_eq!(s.running_on("w1").await.unwrap(), vec![("j1".to_string(), Millis(10))]);
    assert_eq!(s.running_jobs(&ep).await.unwrap().len(), 2);
    assert!(s.finish_job_of("j1", Some("w2"), Failed, None, Some("not yours"), Millis(19)).await.unwrap().is_none());
    let ended = s.finish_job_of("j1", Some("w1"), Completed, Some(r#"{"text":"ok"}"#), None, Millis(20)).await.unwrap();
    assert_eq!(ended, Some(None), "ended, and it has no webhook");
    assert!(s.running_on("w1").await.unwrap().is_empty());
    assert!(!s.finish_job("j1", Failed, None, Some("late"), Millis(21)).await.unwrap());
    let done = s.get_job(&ep, "j1").await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.output.as_deref(), done.finished_at),
        (Completed, Some(r#"{"text":"ok"}"#), Some(Millis(20)))
    );
    // A dead worker's job goes back to the queue with a retry counted.
    assert_eq!(s.requeue_worker_jobs("w2", 1, "worker died", Millis(25)).await.unwrap(), 1);
    let back = s.get_job(&ep, "j2").await.unwrap().unwrap();
    assert_eq!((back.state, back.retries, back.worker_id), (InQueue, 1, None));
    // Past the cap it fails visibly instead of going round again.
    s.claim_job(&ep, "w4", Millis(26)).await.unwrap().unwrap();
    assert_eq!(s.requeue_worker_jobs("w4", 1, "worker died", Millis(27)).await.unwrap(), 0);
    let failed = s.get_job(&ep, "j2").await.unwrap().unwrap();
    assert_eq!((failed.state, failed.error.as_deref()), (Failed, Some("worker died")));
    assert!(s.retry_job(&ep, "j2").await.unwrap().unwrap().0);
    // A lost job goes back only from the worker it runs on.
    s.claim_job(&ep, "w5", Millis(28)).await.unwrap().unwrap();
    assert_eq!(s.running_jobs(&ep).await.unwrap(), vec![("j2".to_string(), "w5".to_string(), Millis(28))]);
    assert_eq!(s.requeue_job("j2", "w6", 5, "lost", Millis(29)).await.unwrap(), None, "not its worker");
    assert_eq!(s.requeue_job("j2", "w5", 5, "lost", Millis(29)).await.unwrap(), Some(InQueue));
    assert_eq!(s.get_job(&ep, "j2").await.unwrap().unwrap().retries, 3);
    assert_eq!(s.requeue_job("j2", "w5", 5, "lost", Millis(29)).await.unwrap(), None, "no longer in progress");
    // Cancel, purge, counts.
    assert_eq!(s.cancel_job(&ep, "j2", Millis(30)).await.unwrap().unwrap().state, Cancelled);
    assert_eq!(s.cancel_job(&ep, "j1", Millis(31)).await.unwrap().unwrap().state, Completed, "final stays final");
    s.create_job(&job("j3", "ep1", 40, None)).await.unwrap();
    assert_eq!(s.purge_queue(&ep).await.unwrap(), 1);
    let c = s.job_counts(&ep).await.unwrap();
    assert_eq!((c.in_queue, c.completed, c.cancelled, c.retried), (0, 1, 1, 1));
    s.delete_job("j1").await.unwrap();
    assert!(s.get_job(&ep, "j1").await.unwrap().is_none());
}

async fn stream_chunks_are_delivered_once_in_order(db: &Db) {
    let s = db.open().await;
    s.create_job(&job("j1", "ep1", 1, None)).await.unwrap();
    for c in ["a", "b"] {
        s.add_stream_chunk("j1", &format!("\"{c}\"")).await.unwrap();
    }
    assert_eq!(s.take_stream_chunks("j1").await.unwrap(), ["\"a\"", "\"b\""]);
    assert!(s.take_stream_chunks("j1").await.unwrap().is_empty());
    s.add_stream_chunk("j1", "\"c\"").await.unwrap();
    assert_eq!(s.take_stream_chunks("j1").await.unwrap(), ["\"c\""]);
    assert!(s.take_stream_chunks("nope").await.unwrap().is_empty());
}

async fn log_lines_query_follow_and_retention(db: &Db) {
    use crate::{LogQuery, NewLogLine};
    let s = db.open().await;
    let ep = EndpointId::parse("ep1").unwrap();
    let other = EndpointId::parse("ep2").unwrap();
    let line = |e: &EndpointId, w: &str, stream: &'static str, ts: u64, text: &str| NewLogLine {
        endpoint_id: e.clone(),
        worker_id: (!w.is_empty()).then(|| w.to_owned()),
        stream,
        ts: Millis(ts),
        line: text.to_owned(),
    };
    let stored = s
        .add_log_lines(vec![
            line(&ep, "w1", "stdout", 1_000, "booting"),
            line(&ep, "w1", "stderr", 2_000, "WARN disk 50%_full"),
            line(&ep, "", "platform", 3_000, "worker w2 launched"),
            line(&ep, "w2", "stdout", 4_000, "GET /health 200"),
            line(&other, "w9", "stdout", 4_500, "elsewhere"),
        ])
        .await
        .unwrap();
    assert!(stored.windows(2).all(|p| p[0].id < p[1].id), "ids grow");
    let q = |f: fn(&mut LogQuery)| {
        let mut q = LogQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    let texts = |v: Vec<crate::LogLine>| v.into_iter().map(|l| l.line).collect::<Vec<_>>();
    assert_eq!(s.query_logs(&ep, &q(|_| {})).await.unwrap().len(), 4, "only this endpoint");
    assert_eq!(
        texts(s.query_logs(&ep, &q(|q| q.worker = Some("w1".into()))).await.unwrap()),
        ["booting", "WARN disk 50%_full"]
    );
    assert_eq!(
        texts(s.query_logs(&ep, &q(|q| q.stream = Some("platform".into()))).await.unwrap()),
        ["worker w2 launched"]
    );
    assert_eq!(
        texts(
            s.query_logs(&ep, &q(|q| (q.since, q.until) = (Some(Millis(2_000)), Some(Millis(3_000))))).await.unwrap()
        ),
        ["WARN disk 50%_full", "worker w2 launched"]
    );
    let like = |p: &str| sluice_core::logs::like_pattern(p);
    let mut lq = q(|_| {});
    lq.like = Some(like("warn"));
    assert_eq!(texts(s.query_logs(&ep, &lq).await.unwrap()), ["WARN disk 50%_full"], "case-insensitive");
    lq.like = Some(like("50%_"));
    assert_eq!(s.query_logs(&ep, &lq).await.unwrap().len(), 1, "% and _ are literal");
    lq.like = Some(like("5%_"));
    assert_eq!(s.query_logs(&ep, &lq).await.unwrap().len(), 0);
    lq.like = Some(like("GET */health"));
    assert_eq!(texts(s.query_logs(&ep, &lq).await.unwrap()), ["GET /health 200"]);
    // The newest `limit`, oldest first; after an id, the oldest after it.
    assert_eq!(texts(s.query_logs(&ep, &q(|q| q.limit = 2)).await.unwrap()), ["worker w2 launched", "GET /health 200"]);
    let mut after = q(|q| q.limit = 1);
    after.after_id = Some(stored[0].id);
    assert_eq!(texts(s.query_logs(&ep, &after).await.unwrap()), ["WARN disk 50%_full"]);
    // Retention: by age, then by bytes per endpoint (newest kept).
    assert_eq!(s.prune_logs(Millis(1_500), u64::MAX).await.unwrap(), 1);
    assert_eq!(s.prune_logs(Millis(0), 20).await.unwrap(), 2, "ep1 keeps its newest 20 bytes' worth");
    assert_eq!(texts(s.query_logs(&ep, &q(|_| {})).await.unwrap()), ["GET /health 200"]);
    assert_eq!(texts(s.query_logs(&other, &q(|_| {})).await.unwrap()), ["elsewhere"]);
}

/// Claims from many connections at once (PostgreSQL runs them side by side): every job is taken
/// exactly once and none is left behind.
async fn concurrent_claims_take_each_job_once(db: &Db) {
    let s = db.open().await;
    let ep = EndpointId::parse("ep1").unwrap();
    for i in 0..60 {
        s.create_job(&job(&format!("j{i:02}"), "ep1", i, None)).await.unwrap();
    }
    let takers = (0..6).map(|w| {
        let (s, ep) = (s.clone(), ep.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = s.claim_job(&ep, &format!("w{w}"), Millis(100)).await.unwrap() {
                got.push(j.id);
            }
            got
        })
    });
    let mut all: Vec<String> = Vec::new();
    for t in takers.collect::<Vec<_>>() {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (0..60).map(|i| format!("j{i:02}")).collect::<Vec<_>>());
    assert_eq!(s.job_counts(&ep).await.unwrap().in_progress, 60);
}

/// Accounts, keys, the usage ledger and credit: what billing and the accounts API stand on.
async fn accounts_usage_and_credit(db: &Db) {
    use sluice_core::billing::Class;
    let s = db.open().await;
    s.ensure_account("admin", 100, Millis(1)).await.unwrap();
    s.ensure_account("admin", 5, Millis(2)).await.unwrap();
    let acct = AccountRecord {
        name: "team".into(),
        max_workers_quota: 4,
        created_at: Millis(3),
        balance_nanos: Some(1_000),
        low_credit_warned: false,
        webhook_url: None,
    };
    s.create_account(&acct).await.unwrap();
    assert!(matches!(s.create_account(&acct).await, Err(Error::Conflict(_))));
    assert_eq!(s.get_account("admin").await.unwrap().unwrap().max_workers_quota, 100, "ensure never overwrites");
    assert_eq!(s.list_accounts(&Scope::All).await.unwrap().len(), 2);
    assert_eq!(s.list_accounts(&Scope::Account("team".into())).await.unwrap().len(), 1);
    assert!(s.set_account_quota("team", 6).await.unwrap());
    assert!(!s.set_account_quota("nobody", 6).await.unwrap());
    s.set_webhook("team", Some("http://127.0.0.1:9/hook")).await.unwrap();
    s.set_low_credit_warned("team", true).await.unwrap();
    let team = s.get_account("team").await.unwrap().unwrap();
    assert_eq!((team.max_workers_quota, team.low_credit_warned), (6, true));
    assert_eq!(team.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));

    // Keys: listed newest first, revoked by the first 16 hex digits of the digest.
    let digest = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    s.put_key(&digest('a'), "sk_a", "team", "user", Some("ci"), Millis(10)).await.unwrap();
    s.put_key(&digest('b'), "sk_b", "team", "user", None, Millis(11)).await.unwrap();
    let keys = s.list_keys("team").await.unwrap();
    assert_eq!(keys.iter().map(|k| k.prefix.as_str()).collect::<Vec<_>>(), ["sk_b", "sk_a"]);
    assert!(s.revoke_key("team", &digest('a')[..16], Millis(12)).await.unwrap());
    assert!(!s.revoke_key("team", &digest('a')[..16], Millis(13)).await.unwrap(), "already revoked");
    assert!(!s.revoke_key("other", &digest('b')[..16], Millis(13)).await.unwrap(), "not its key");
    assert_eq!(s.live_keys().await.unwrap(), vec![(digest('b'), "team".to_string())]);

    // Usage is charged with the ledger entry, in one transaction; admin has no balance to charge.
    let entry = |account: &str, worker: &str, secs: u64, cost: i64, at: u64| UsageEntry {
        account: account.into(),
        endpoint_id: EndpointId::parse("ep1").unwrap(),
        worker_id: WorkerId::parse(worker).unwrap(),
        class: Class::Autoscaled,
        gpu_type: "SIM".into(),
        gpus: 2,
        seconds: secs,
        cost_nanos: cost,
        at: Millis(at),
    };
    let day2 = 86_400_000 + 5;
    s.add_usage(&[entry("team", "w1", 10, 300, 1_000), entry("team", "w1", 5, 150, day2)]).await.unwrap();
    s.add_usage(&[entry("admin", "w2", 7, 999, 2_000)]).await.unwrap();
    assert_eq!(s.get_account("team").await.unwrap().unwrap().balance_nanos, Some(550));
    assert_eq!(s.get_account("admin").await.unwrap().unwrap().balance_nanos, None);
    let billed = s.billed(&[WorkerId::parse("w1").unwrap(), WorkerId::parse("w9").unwrap()]).await.unwrap();
    assert_eq!(billed.get(&WorkerId::parse("w1").unwrap()), Some(&(15, Class::Autoscaled)));
    assert_eq!(billed.len(), 1);
    let rows = s.usage(&Scope::Account("team".into()), None, Millis(0), Millis(u64::MAX)).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.day.as_str(), r.gpu_seconds, r.cost_nanos)).collect::<Vec<_>>(),
        [("1970-01-01", 20, 300), ("1970-01-02", 10, 150)],
        "by UTC day, GPU-seconds are seconds × GPUs"
    );
    assert_eq!(s.usage(&Scope::All, Some("ep1"), Millis(0), Millis(day2)).await.unwrap().len(), 2, "to is exclusive");
    let mut totals = s.usage_totals().await.unwrap();
    totals.sort();
    assert_eq!(totals, vec![("ep1".to_string(), 44, 1449)]);

    // Credit and account events.
    assert_eq!(s.add_credit("team", 450, Millis(50)).await.unwrap(), Some(1_000));
    s.add_account_event("team", Millis(60), "low_credit", "below 10%").await.unwrap();
    let events = s.list_account_events("team", 10).await.unwrap();
    assert_eq!(events.first().map(|e| e.kind.as_str()), Some("low_credit"), "newest first");
    s.create_endpoint(&endpoint("ep1", "team", "one")).await.unwrap();
    s.create_endpoint(&endpoint("ep2", "other", "two")).await.unwrap();
    assert_eq!(s.turn_off_account("team", Millis(70)).await.unwrap(), vec!["ep1".to_string()]);
    assert_eq!(
        s.get_endpoint(&EndpointId::parse("ep1").unwrap()).await.unwrap().unwrap().status,
        EndpointStatus::StoppedNoCredit
    );
    assert_eq!(
        s.get_endpoint(&EndpointId::parse("ep2").unwrap()).await.unwrap().unwrap().status,
        EndpointStatus::Running
    );
}

/// Leader election's lease: one holder at a time, renewable by it, taken over only after expiry,
/// and exactly one winner when many race for it.
async fn a_lease_has_one_holder_until_it_expires(db: &Db) {
    let s = db.open().await;
    assert_eq!(s.lease_holder("control").await.unwrap(), None);
    assert!(s.acquire_lease("control", "a", "http://127.0.0.1:1", 60_000).await.unwrap());
    assert!(!s.acquire_lease("control", "b", "http://127.0.0.1:2", 60_000).await.unwrap(), "a holds it");
    assert!(s.acquire_lease("control", "a", "http://127.0.0.1:1", 60_000).await.unwrap(), "renewed");
    let held = s.lease_holder("control").await.unwrap().unwrap();
    assert_eq!((held.holder.as_str(), held.address.as_str()), ("a", "http://127.0.0.1:1"));
    assert!(held.left_ms > 50_000 && held.left_ms <= 60_000, "{held:?}");
    // An expired lease goes to whoever asks first; the old holder cannot renew it then.
    assert!(s.acquire_lease("other", "a", "x", 0).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(s.lease_holder("other").await.unwrap(), None, "expired");
    assert!(s.acquire_lease("other", "b", "y", 60_000).await.unwrap());
    assert!(!s.acquire_lease("other", "a", "x", 60_000).await.unwrap());
    // Released: free at once.
    s.release_lease("control", "b").await.unwrap();
    assert!(s.lease_holder("control").await.unwrap().is_some(), "only its holder releases it");
    s.release_lease("control", "a").await.unwrap();
    assert_eq!(s.lease_holder("control").await.unwrap(), None);
    // Ten contenders at once: exactly one wins.
    let racers = (0..10).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.acquire_lease("race", &format!("c{i}"), "z", 60_000).await.unwrap() })
    });
    let mut wins = 0;
    for r in racers.collect::<Vec<_>>() {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// The race from issue 15: a PATCH (read, change the spec, write) and the credit cut-off
/// (`turn_off_account`) interleave. Whatever the order, the cut-off wins: the endpoint ends
/// `stopped_no_credit` with the PATCH's spec. Run once in the worst order by hand, then many
/// times concurrently.
async fn a_spec_update_never_writes_back_a_status_changed_meanwhile(db: &Db) {
    let s = db.open().await;
    let e = endpoint("race1", "acct", "racer");
    s.create_endpoint(&e).await.unwrap();
    // Read (running) → cut-off → write the changed spec.
    let mut read = s.get_endpoint(&e.id).await.unwrap().unwrap();
    assert_eq!(s.turn_off_account("acct", Millis(5)).await.unwrap(), vec!["race1".to_string()]);
    read.spec.workers.max_workers = 9;
    s.update_endpoint_spec(&read).await.unwrap();
    let now = s.get_endpoint(&e.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.spec.workers.max_workers), (EndpointStatus::StoppedNoCredit, 9));
    // A start decided on the stale read does not undo it either.
    assert!(!s.set_endpoint_status(&e.id, EndpointStatus::Stopped, EndpointStatus::Running, Millis(6)).await.unwrap());

    // Concurrently: 12 endpoints, each PATCHed by 4 tasks (retrying on Conflict) while the
    // account is cut off.
    let ids: Vec<String> = (0..12).map(|i| format!("racer{i:02}")).collect();
    for id in &ids {
        s.create_endpoint(&endpoint(id, "many", id)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, id) in ids.iter().cycle().take(48).enumerate() {
        let (s, id) = (s.clone(), EndpointId::parse(id).unwrap());
        tasks.push(tokio::spawn(async move {
            loop {
                let mut e = s.get_endpoint(&id).await.unwrap().unwrap();
                e.spec.workers.max_workers = 1 + (n as u32 % 9);
                match s.update_endpoint_spec(&e).await {
                    Ok(()) => return,
                    Err(Error::Stale(_)) => tokio::task::yield_now().await,
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    let cut = {
        let s = s.clone();
        tokio::spawn(async move { s.turn_off_account("many", Millis(7)).await.unwrap() })
    };
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cut.await.unwrap().len(), 12);
    for e in s.list_endpoints(&Scope::Account("many".into())).await.unwrap() {
        assert_eq!(e.status, EndpointStatus::StoppedNoCredit, "{}", e.id);
        assert_eq!(e.version, 4, "{}: each of the four changes landed once", e.id);
    }
}
