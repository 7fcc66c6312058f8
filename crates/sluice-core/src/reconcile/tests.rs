//! The plan as tables: a state in (endpoints, workers, what the runtime and health sources
//! say), the list of actions out, one line each. Every decision a pass makes is here, without a
//! process, a store or a clock.
use super::*;
use crate::placement::Gpu;

fn id(s: &str) -> WorkerId {
    WorkerId::parse(s).unwrap()
}

fn eid(s: &str) -> EndpointId {
    EndpointId::parse(s).unwrap()
}

/// An endpoint wanting `desired` workers of one SIM GPU each (kept in the case's table of
/// counts, as the autoscaler would give them).
fn ep(name: &str, desired: u32) -> (Intent, u32) {
    let i = Intent {
        id: eid(name),
        running: true,
        generation: 1,
        updated_at: Millis(0),
        data_center: "dc".into(),
        gpu_type: "SIM".into(),
        gpus_per_worker: 1,
        startup_timeout_secs: 60,
        execution_timeout_secs: 600,
        health_path: "/health".into(),
        pull: false,
    };
    (i, desired)
}

/// `ep` with changes to the intent.
fn ep_with(name: &str, desired: u32, f: fn(&mut Intent)) -> (Intent, u32) {
    let (mut i, d) = ep(name, desired);
    f(&mut i);
    (i, d)
}

/// A worker of endpoint `e` in `state`; launched ones hold GPU `gpu` of node `n1` and are
/// healthy when ready.
fn w(name: &str, e: &str, state: WorkerState, gpu: u32) -> Worker {
    let launched = state.has_runtime();
    Worker {
        id: id(name),
        endpoint: eid(e),
        generation: 1,
        state,
        created_at: Millis(0),
        since: Millis(0),
        was_ready: state == WorkerState::Ready,
        adopted: false,
        health: launched.then_some(Health { healthy: state == WorkerState::Ready, failures: 0 }),
        unplaceable: false,
        allocation: launched.then(|| Allocation { node: "n1".into(), gpus: vec![gpu] }),
        reason: None,
        in_flight: 0,
    }
}

fn nodes(gpus: u32) -> Vec<Node> {
    vec![Node {
        name: "n1".into(),
        data_center: "dc".into(),
        gpus: (0..gpus).map(|index| Gpu { index, gpu_type: "SIM".into() }).collect(),
    }]
}

/// One line per action.
fn render(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::StopStray { worker } => format!("stop stray {worker}"),
            Action::Lost { worker, reason, refreshed } => {
                format!("lost {worker}{}: {reason}", if *refreshed { " (refreshed)" } else { "" })
            }
            Action::Ready { worker, cold } => format!("ready {worker}{}", if *cold { " (cold start)" } else { "" }),
            Action::Unready { worker, reason } => format!("unready {worker}: {reason}"),
            Action::Drain { worker, reason } => format!("drain {worker}: {reason}"),
            Action::Stop { worker, state, reason } => format!("stop {worker} as {}: {reason}", state.as_str()),
            Action::Create { worker, endpoint } => format!("create {worker} for {endpoint}"),
            Action::Forget { endpoint } => format!("forget launch failures of {endpoint}"),
            Action::Wait { worker, reason, unplaceable } => {
                format!("wait {worker}{}: {reason}", if *unplaceable { " (no room)" } else { "" })
            }
            Action::Launch { worker, allocation } => {
                format!("launch {worker} on {} {:?}", allocation.node, allocation.gpus)
            }
        })
        .collect()
}

/// A case: the state, the time, and the expected actions.
struct Case<'a> {
    name: &'a str,
    intents: Vec<(Intent, u32)>,
    workers: Vec<Worker>,
    tweak: fn(&mut Observed),
    memory: Memory,
    gpus: u32,
    now: u64,
    expect: &'a [&'a str],
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            name: "",
            intents: vec![],
            workers: vec![],
            tweak: |_| {},
            memory: Memory::default(),
            gpus: 4,
            now: 10_000,
            expect: &[],
        }
    }
}

fn check(c: Case) -> Option<String> {
    let nodes = nodes(c.gpus);
    let mut obs =
        Observed { workers: c.workers, memory: Some(&c.memory), nodes: &nodes, ping_ms: 1000, ..Default::default() };
    (c.tweak)(&mut obs);
    let mut n = 0;
    let mut new_id = || {
        n += 1;
        id(&format!("new{n}"))
    };
    let want: HashMap<EndpointId, u32> = c.intents.iter().map(|(i, d)| (i.id.clone(), *d)).collect();
    let intents: Vec<Intent> = c.intents.into_iter().map(|(i, _)| i).collect();
    let mut desire = |i: &Intent, _live: u32, _ready: u32| want[&i.id];
    let got = render(&plan(&intents, &obs, Millis(c.now), &mut desire, &mut new_id));
    (got != c.expect).then(|| format!("case {:?}\n  got:  {got:#?}\n  want: {:#?}", c.name, c.expect))
}

#[test]
fn plans() {
    use WorkerState::*;
    let cases = vec![
        Case {
            name: "steady: nothing to do",
            intents: vec![ep("e", 2)],
            workers: vec![w("a", "e", Ready, 0), w("b", "e", Ready, 1)],
            ..Default::default()
        },
        Case {
            name: "scale up from zero: created and launched in the same pass, on free GPUs",
            intents: vec![ep("e", 2)],
            expect: &["create new1 for e", "create new2 for e", "launch new1 on n1 [0]", "launch new2 on n1 [1]"],
            ..Default::default()
        },
        Case {
            name: "a starting worker answers: ready, a cold start",
            intents: vec![ep("e", 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.health = Some(Health { healthy: true, failures: 0 });
                x.was_ready = false;
                x
            }],
            expect: &["ready a (cold start)"],
            ..Default::default()
        },
        Case {
            name: "adopted after a restart: ready again, not a cold start",
            intents: vec![ep("e", 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.health = Some(Health { healthy: true, failures: 0 });
                x.adopted = true;
                x.was_ready = false;
                x
            }],
            expect: &["ready a"],
            ..Default::default()
        },
        Case {
            name: "a ready worker fails its health check three times: out of rotation, replaced meanwhile",
            intents: vec![ep("e", 1)],
            workers: vec![{
                let mut x = w("a", "e", Ready, 0);
                x.health = Some(Health { healthy: false, failures: 3 });
                x
            }],
            expect: &["unready a: health check /health failing; out of rotation"],
            ..Default::default()
        },
        Case {
            name: "startup timeout: failed at once, no drain; its replacement comes next pass (after the back-off)",
            intents: vec![ep("e", 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.since = Millis(0);
                x
            }],
            now: 60_000,
            expect: &["stop a as failed: did not answer 200 on /health within the startup timeout of 60 s"],
            ..Default::default()
        },
        Case {
            name: "a crashed worker: recorded lost; its replacement waits out the crash back-off",
            intents: vec![ep("e", 1)],
            workers: vec![w("a", "e", Ready, 0)],
            tweak: |o| {
                o.gone.insert(id("a"), Gone::Exited("exited with status 17".into()));
            },
            memory: Memory { failures: [(eid("e"), (1, Millis(9_500)))].into(), ..Default::default() },
            expect: &[
                "lost a: worker process exited with status 17",
                "create new1 for e",
                "wait new1: restarting after 1 failure(s); back-off 1000 ms",
            ],
            ..Default::default()
        },
        Case {
            name: "crash back-off over: launched",
            intents: vec![ep("e", 1)],
            workers: vec![w("p", "e", Pending, 0)],
            memory: Memory { failures: [(eid("e"), (1, Millis(8_000)))].into(), ..Default::default() },
            expect: &["launch p on n1 [0]"],
            ..Default::default()
        },
        Case {
            name: "placement failure: waits with the reason, marked as having no room",
            intents: vec![ep_with("big", 1, |i| i.gpus_per_worker = 8)],
            expect: &[
                "create new1 for big",
                "wait new1 (no room): waiting for 8 free SIM GPU(s) on one node in \"dc\"; at most 4 free on any node",
            ],
            ..Default::default()
        },
        Case {
            name: "scale down: the least busy ready worker drains, the pending one stops first",
            intents: vec![ep("e", 1)],
            workers: vec![
                {
                    let mut x = w("busy", "e", Ready, 0);
                    x.in_flight = 5;
                    x
                },
                {
                    let mut x = w("idle", "e", Ready, 1);
                    x.in_flight = 0;
                    x
                },
                w("pend", "e", Pending, 0),
            ],
            expect: &["stop pend as stopped: scaled down", "drain idle: scaled down"],
            ..Default::default()
        },
        Case {
            name: "a drain that began this pass does not complete in it",
            intents: vec![ep("e", 0)],
            workers: vec![{
                let mut x = w("d", "e", Draining, 0);
                x.since = Millis(10_000);
                x
            }],
            ..Default::default()
        },
        Case {
            name: "drain completion: nothing in flight",
            intents: vec![ep("e", 0)],
            workers: vec![{
                let mut x = w("d", "e", Draining, 0);
                x.since = Millis(9_000);
                x.reason = Some("scaled down".into());
                x
            }],
            expect: &["stop d as stopped: scaled down"],
            ..Default::default()
        },
        Case {
            name: "drain waits for requests in flight, up to the execution timeout",
            intents: vec![ep("e", 0), ep_with("f", 0, |i| i.execution_timeout_secs = 5)],
            workers: vec![
                {
                    let mut x = w("d", "e", Draining, 0);
                    x.since = Millis(9_000);
                    x.in_flight = 2;
                    x
                },
                {
                    let mut x = w("g", "f", Draining, 1);
                    x.since = Millis(5_000);
                    x.in_flight = 2;
                    x
                },
            ],
            expect: &["stop g as stopped: drained"],
            ..Default::default()
        },
        Case {
            name: "rolling update with a free GPU: one new worker first, no old one drains yet",
            intents: vec![ep_with("e", 2, |i| i.generation = 2)],
            workers: vec![w("old1", "e", Ready, 0), w("old2", "e", Ready, 1)],
            expect: &["create new1 for e", "launch new1 on n1 [2]"],
            ..Default::default()
        },
        Case {
            name: "rolling update: the new worker is ready, one old one drains",
            intents: vec![ep_with("e", 2, |i| i.generation = 2)],
            workers: vec![w("old1", "e", Ready, 0), w("old2", "e", Ready, 1), {
                let mut x = w("new", "e", Ready, 2);
                x.generation = 2;
                x
            }],
            expect: &["drain old1: replaced by a new version of the endpoint (rolling update)"],
            ..Default::default()
        },
        Case {
            name: "rolling update without a free GPU: an old worker drains to make room",
            intents: vec![ep_with("e", 2, |i| i.generation = 2)],
            workers: vec![w("old1", "e", Ready, 0), w("old2", "e", Ready, 1), {
                let mut x = w("new", "e", Pending, 0);
                x.generation = 2;
                x.unplaceable = true;
                x
            }],
            gpus: 2,
            expect: &[
                "drain old1: replaced by a new version of the endpoint (rolling update)",
                "wait new (no room): waiting for 1 free SIM GPU(s) on one node in \"dc\"; at most 0 free on any node",
            ],
            ..Default::default()
        },
        Case {
            name: "an outdated worker not serving stops at once",
            intents: vec![ep_with("e", 1, |i| i.generation = 2)],
            workers: vec![w("old", "e", Starting, 0)],
            expect: &[
                "stop old as stopped: replaced by a new version of the endpoint",
                "create new1 for e",
                "launch new1 on n1 [0]",
            ],
            ..Default::default()
        },
        Case {
            name: "a deleted endpoint's workers: ready ones drain, others stop",
            intents: vec![],
            workers: vec![w("r", "gone", Ready, 0), w("s", "gone", Starting, 1)],
            expect: &["drain r: endpoint deleted", "stop s as stopped: endpoint deleted"],
            ..Default::default()
        },
        Case {
            name: "credit turn-off: the endpoint is not running and wants nothing; its workers drain",
            intents: vec![ep_with("e", 0, |i| i.running = false)],
            workers: vec![w("a", "e", Ready, 0), w("b", "e", Pending, 0)],
            expect: &["stop b as stopped: endpoint stopped", "drain a: endpoint stopped"],
            ..Default::default()
        },
        Case {
            name: "a stray process of this instance is stopped; a vanished worker is lost",
            intents: vec![ep("e", 1)],
            workers: vec![w("a", "e", Ready, 0)],
            tweak: |o| {
                o.strays.push(id("stray"));
                o.gone.insert(id("a"), Gone::Vanished);
            },
            expect: &[
                "stop stray stray",
                "lost a: worker process is no longer running",
                "create new1 for e",
                "launch new1 on n1 [0]",
            ],
            ..Default::default()
        },
        Case {
            name: "refresh_worker: an exited worker is not a crash; a live one drains, and is replaced",
            intents: vec![ep_with("e", 2, |i| i.pull = true)],
            workers: vec![w("a", "e", Ready, 0), w("b", "e", Ready, 1)],
            tweak: |o| {
                o.gone.insert(id("a"), Gone::Exited("exited with status 0".into()));
                o.refresh.insert(id("a"));
                o.refresh.insert(id("b"));
            },
            expect: &[
                "lost a (refreshed): refresh_worker: replaced after its job",
                "drain b: refresh_worker: replaced after its job",
                "create new1 for e",
                "launch new1 on n1 [0]",
            ],
            ..Default::default()
        },
        Case {
            name: "a pull worker silent for three pings is dead, and says why it failed its check",
            intents: vec![ep_with("e", 1, |i| i.pull = true)],
            workers: vec![
                {
                    let mut x = w("a", "e", Ready, 0);
                    x.health = Some(Health { healthy: false, failures: 3 });
                    x
                },
                w("b", "e", Ready, 1),
            ],
            tweak: |o| {
                o.gone.insert(id("b"), Gone::Exited("exited with status 1".into()));
                o.unhealthy.insert(id("b"), "worker reported itself unhealthy: gpu check failed".into());
            },
            expect: &[
                "lost b: worker reported itself unhealthy: gpu check failed; worker process exited with status 1",
                "stop a as failed: missed 3 heartbeats (1000 ms apart): presumed dead",
            ],
            ..Default::default()
        },
        Case {
            name: "five refused launches: the endpoint gives up until it is updated",
            intents: vec![ep("e", 1)],
            workers: vec![w("p", "e", Pending, 0)],
            memory: Memory {
                launch_failures: [(eid("e"), (5, Millis(0), "image not found".into()))].into(),
                ..Default::default()
            },
            expect: &[
                "wait p: gave up after 5 failed launches: image not found; update the endpoint (image, credentials) to try again",
            ],
            ..Default::default()
        },
        Case {
            name: "updated since it gave up: the counts start over and it launches",
            intents: vec![ep_with("e", 1, |i| i.updated_at = Millis(5))],
            workers: vec![w("p", "e", Pending, 0)],
            memory: Memory {
                launch_failures: [(eid("e"), (5, Millis(0), "image not found".into()))].into(),
                failures: [(eid("e"), (5, Millis(9_999)))].into(),
            },
            expect: &["forget launch failures of e", "launch p on n1 [0]"],
            ..Default::default()
        },
        Case {
            name: "GPUs of a worker stopped in this pass are free for a launch in the same pass",
            intents: vec![ep("e", 0), ep("f", 1)],
            workers: vec![w("s", "e", Starting, 0)],
            gpus: 1,
            expect: &["stop s as stopped: scaled down", "create new1 for f", "launch new1 on n1 [0]"],
            ..Default::default()
        },
    ];
    let wrong: Vec<String> = cases.into_iter().filter_map(check).collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn adoption_after_a_restart() {
    let rec = |w: &str, e: &str, generation: u64, state: WorkerState| Remembered {
        id: id(w),
        endpoint: eid(e),
        generation,
        state,
    };
    let endpoints: HashMap<EndpointId, u64> = [(eid("e"), 2)].into();
    let remembered = [
        rec("keep", "e", 2, WorkerState::Ready),
        rec("old", "e", 1, WorkerState::Ready),
        rec("deleted", "gone", 1, WorkerState::Ready),
        rec("noaddr", "e", 2, WorkerState::Starting),
        rec("vanished", "e", 2, WorkerState::Ready),
        rec("never", "e", 2, WorkerState::Pending),
    ];
    let running =
        [(id("keep"), true), (id("old"), true), (id("deleted"), true), (id("noaddr"), false), (id("unknown"), true)];
    let got = adopt(&endpoints, &remembered, &running);
    let stop = |w: &str, remembered: bool| Adoption::Stop {
        worker: id(w),
        remembered,
        reason: "stopped after platform restart: no longer wanted".into(),
    };
    assert_eq!(
        got,
        vec![
            Adoption::Adopt { worker: id("keep") },
            stop("old", true),
            stop("deleted", true),
            stop("noaddr", true),
            stop("unknown", false),
            Adoption::Gone {
                worker: id("never"),
                state: WorkerState::Stopped,
                reason: "platform restarted before launch".into()
            },
            Adoption::Gone {
                worker: id("vanished"),
                state: WorkerState::Failed,
                reason: "not running after platform restart".into()
            },
        ]
    );
}
