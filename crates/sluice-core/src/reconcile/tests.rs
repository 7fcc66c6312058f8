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
        sleep: None,
    };
    (i, desired)
}

/// `ep` whose workers may sleep (at most `max` at once, for a minute).
fn sleepy(name: &str, desired: u32, max: u32) -> (Intent, u32) {
    let (mut i, d) = ep(name, desired);
    i.sleep = Some(SleepPolicy { max_sleeping: max, ttl_ms: 60_000 });
    (i, d)
}

/// A sleeping worker of `e` holding GPU `gpu`, asleep since `since` ms.
fn asleep(name: &str, e: &str, gpu: u32, since: u64) -> Worker {
    let mut x = w(name, e, WorkerState::Sleeping, gpu);
    x.since = Millis(since);
    x.was_ready = true;
    x.health = Some(Health { healthy: true, failures: 0 });
    x
}

/// A drained worker of `e` (drained because it scaled down) holding GPU `gpu`.
fn drained(name: &str, e: &str, gpu: u32) -> Worker {
    let mut x = w(name, e, WorkerState::Draining, gpu);
    x.reason = Some(SCALED_DOWN.into());
    x.was_ready = true;
    x
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
            Action::Sleep { worker } => format!("sleep {worker}"),
            Action::Wake { worker } => format!("wake {worker}"),
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
    let mut desire = |i: &Intent, _: Headcount| want[&i.id];
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
            name: "sleep: a worker drained for a scale-down sleeps instead of stopping",
            intents: vec![sleepy("e", 0, 1)],
            workers: vec![drained("d", "e", 0)],
            expect: &["sleep d"],
            ..Default::default()
        },
        Case {
            name: "sleep: at most max_sleeping sleep; the rest stop as before",
            intents: vec![sleepy("e", 0, 1)],
            workers: vec![asleep("z", "e", 2, 5_000), drained("d", "e", 0)],
            expect: &["stop d as stopped: scaled down"],
            ..Default::default()
        },
        Case {
            name: "sleep: a worker drained for a new version or a stop never sleeps",
            intents: vec![ep_with("e", 0, |i| {
                i.sleep = Some(SleepPolicy { max_sleeping: 2, ttl_ms: 60_000 });
                i.running = false;
            })],
            workers: vec![{
                let mut x = drained("d", "e", 0);
                x.reason = Some("endpoint stopped".into());
                x
            }],
            expect: &["stop d as stopped: endpoint stopped"],
            ..Default::default()
        },
        Case {
            name: "wake: a scale-up wakes sleepers first, most recently asleep first, then cold-starts the rest",
            intents: vec![sleepy("e", 3, 2)],
            workers: vec![asleep("old", "e", 0, 1_000), asleep("new", "e", 1, 5_000)],
            expect: &["wake new", "wake old", "create new1 for e", "launch new1 on n1 [2]"],
            ..Default::default()
        },
        Case {
            name: "wake: a woken worker is not ready until its wake call answered, however healthy",
            intents: vec![sleepy("e", 1, 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.health = Some(Health { healthy: true, failures: 0 });
                x.was_ready = true;
                x
            }],
            tweak: |o| {
                o.calls.insert(id("a"), Call::Waking);
            },
            ..Default::default()
        },
        Case {
            name: "wake: answered and healthy: ready again, not a cold start",
            intents: vec![sleepy("e", 1, 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.health = Some(Health { healthy: true, failures: 0 });
                x.was_ready = true;
                x
            }],
            expect: &["ready a"],
            ..Default::default()
        },
        Case {
            name: "wake failed: the worker fails (a fresh one comes with the next pass's count)",
            intents: vec![sleepy("e", 1, 1)],
            workers: vec![{
                let mut x = w("a", "e", Starting, 0);
                x.was_ready = true;
                x
            }],
            tweak: |o| {
                o.calls.insert(id("a"), Call::Failed("POST /wake_up answered 500".into()));
            },
            expect: &["stop a as failed: wake failed: POST /wake_up answered 500"],
            ..Default::default()
        },
        Case {
            name: "sleep failed: stopped as it would have been",
            intents: vec![sleepy("e", 0, 1)],
            workers: vec![asleep("z", "e", 0, 9_000)],
            tweak: |o| {
                o.calls.insert(id("z"), Call::Failed("no answer within 60 s".into()));
            },
            expect: &["stop z as stopped: sleep failed (no answer within 60 s); stopped instead"],
            ..Default::default()
        },
        Case {
            name: "a sleeper past sleep_ttl_secs stops; a sleeper whose health fails is removed, not replaced",
            intents: vec![sleepy("e", 0, 2)],
            workers: vec![asleep("ttl", "e", 0, 0), {
                let mut x = asleep("sick", "e", 1, 9_000);
                x.health = Some(Health { healthy: false, failures: 3 });
                x
            }],
            now: 61_000,
            expect: &[
                "stop sick as failed: asleep, and its health check /health failing: removed, not replaced",
                "stop ttl as stopped: asleep for 60 s (sleep_ttl_secs)",
            ],
            ..Default::default()
        },
        Case {
            name: "sleepers of an older version, of a stopped, deleted or no-longer-sleepy endpoint stop",
            intents: vec![
                ep_with("v", 0, |i| {
                    i.sleep = Some(SleepPolicy { max_sleeping: 1, ttl_ms: 60_000 });
                    i.generation = 2;
                }),
                ep_with("s", 0, |i| {
                    i.sleep = Some(SleepPolicy { max_sleeping: 1, ttl_ms: 60_000 });
                    i.running = false;
                }),
                ep("off", 0),
            ],
            workers: vec![
                asleep("a", "v", 0, 9_000),
                asleep("b", "s", 1, 9_000),
                asleep("c", "gone", 2, 9_000),
                asleep("d", "off", 3, 9_000),
            ],
            expect: &[
                "stop d as stopped: sleep turned off for its endpoint",
                "stop a as stopped: replaced by a new version of the endpoint",
                "stop b as stopped: endpoint stopped",
                "stop c as stopped: endpoint deleted",
            ],
            ..Default::default()
        },
        Case {
            name: "GPUs: a start that finds no room stops the longest-sleeping worker whose GPUs fit",
            intents: vec![sleepy("e", 0, 2), ep("f", 1)],
            workers: vec![asleep("young", "e", 0, 9_000), asleep("old", "e", 1, 1_000)],
            gpus: 2,
            expect: &[
                "create new1 for f",
                "stop old as stopped: asleep; stopped to free its GPUs for a worker of endpoint f",
                "launch new1 on n1 [1]",
            ],
            ..Default::default()
        },
        Case {
            name: "models: a worker waits (not placed, not billed) while its endpoint's models are staged",
            intents: vec![ep("e", 1), ep("f", 1)],
            tweak: |o| {
                o.staging.insert(eid("e"), "staging model 3.1/14.9 GB".into());
            },
            expect: &[
                "create new1 for e",
                "create new2 for f",
                "wait new1: staging model 3.1/14.9 GB",
                "launch new2 on n1 [0]",
            ],
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

/// Property checks over generated states: sleepers never exceed `max_sleeping`, a wake is never
/// chosen without a sleeper, and a start never waits while a sleeper's GPUs would let it in.
#[test]
fn sleeping_invariants_hold_over_many_states() {
    use WorkerState::*;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..3000 {
        let gpus = 1 + rnd(6) as u32;
        let max = rnd(4) as u32;
        let desired_e = rnd(5) as u32;
        let desired_f = rnd(3) as u32;
        let (ie, _) = if max > 0 { sleepy("e", desired_e, max) } else { ep("e", desired_e) };
        let (i_f, _) = ep("f", desired_f);
        let mut workers = Vec::new();
        for (k, gpu) in (0..rnd(7).min(u64::from(gpus))).zip(0u32..) {
            let st = [Ready, Draining, Sleeping, Starting][rnd(4) as usize];
            let mut x = if st == Sleeping {
                asleep(&format!("w{k}"), "e", gpu, rnd(9_000))
            } else if st == Draining {
                drained(&format!("w{k}"), "e", gpu)
            } else {
                w(&format!("w{k}"), "e", st, gpu)
            };
            x.since = Millis(rnd(9_000));
            workers.push(x);
        }
        let sleepers_in = workers.iter().filter(|x| x.state == Sleeping).count();
        let nodes = nodes(gpus);
        let obs = Observed { workers: workers.clone(), nodes: &nodes, ping_ms: 1000, ..Default::default() };
        let want: HashMap<EndpointId, u32> = [(eid("e"), desired_e), (eid("f"), desired_f)].into();
        let mut n = 0;
        let mut new_id = || {
            n += 1;
            id(&format!("new{n}"))
        };
        let mut desire = |i: &Intent, _: Headcount| want[&i.id];
        let p = plan(&[ie.clone(), i_f.clone()], &obs, Millis(10_000), &mut desire, &mut new_id);
        let (mut sleeps, mut wakes, mut stopped_sleepers) = (0usize, 0usize, 0usize);
        for a in &p.actions {
            match a {
                Action::Sleep { .. } => sleeps += 1,
                Action::Wake { worker } => {
                    wakes += 1;
                    assert!(
                        workers.iter().any(|x| &x.id == worker && x.state == Sleeping),
                        "case {case}: woke a non-sleeper"
                    );
                }
                Action::Stop { worker, .. } if workers.iter().any(|x| &x.id == worker && x.state == Sleeping) => {
                    stopped_sleepers += 1
                }
                _ => {}
            }
        }
        let after = sleepers_in + sleeps - wakes - stopped_sleepers;
        assert!(
            after as u32 <= max.max(sleepers_in as u32),
            "case {case}: {after} asleep after the pass, max_sleeping {max}: {:?}",
            p.actions
        );
        if max == 0 {
            assert_eq!(sleeps, 0, "case {case}: slept with sleep off");
        }
        // A start waits for room only when no sleeper's GPUs are left to take (one put to sleep
        // in this pass is taken in the next, once its sleep call has answered).
        let waiting_for_room = p.actions.iter().any(|a| matches!(a, Action::Wait { unplaceable: true, .. }));
        if waiting_for_room {
            let left = sleepers_in - wakes - stopped_sleepers;
            assert_eq!(left, 0, "case {case}: a start waits while a sleeper holds GPUs: {:?}", p.actions);
        }
    }
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
