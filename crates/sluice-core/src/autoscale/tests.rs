//! Decisions driven by short text traces through one helper, plus properties over random loads.
use super::*;

/// Runs `decide` once per second. The trace is `t=SECS d=DEMAND` steps ("; "-separated; the demand
/// holds until the next step; `r=READY` optionally overrides ready workers, default = target).
/// Returns the log of target changes as `t:old->new`.
fn check_scaling(p: &ScalingPolicy, trace: &str, until_s: u64) -> String {
    let steps: Vec<(u64, u64, Option<u32>)> = trace
        .split(';')
        .map(|s| {
            let mut t = 0;
            let mut d = 0;
            let mut r = None;
            for kv in s.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap();
                match k {
                    "t" => t = v.parse().unwrap(),
                    "d" => d = v.parse().unwrap(),
                    "r" => r = Some(v.parse().unwrap()),
                    _ => panic!("bad key {k}"),
                }
            }
            (t, d, r)
        })
        .collect();
    let mut st = ScalerState { target: p.min_workers, ..Default::default() };
    let mut log = Vec::new();
    for sec in 0..=until_s {
        let (_, d, r) = *steps.iter().rev().find(|s| s.0 <= sec).unwrap();
        let cap = u64::from(st.target) * u64::from(p.concurrency_per_worker);
        let snap = MetricsSnapshot {
            in_flight: d.min(cap),
            waiting: d.saturating_sub(cap),
            arrivals: d,
            oldest_wait_ms: 0,
            ready: r.unwrap_or(st.target),
            provisioned: st.target,
            sleeping: 0,
            gpu_util_percent: None,
            engine_running: None,
            engine_waiting: None,
            kv_cache_percent: None,
        };
        let before = st.target;
        let dec = decide(p, &mut st, &snap, Millis(sec * 1000));
        assert!(dec.target >= p.min_workers && dec.target <= p.max_workers, "{dec:?}");
        if dec.target != before {
            log.push(format!("{sec}:{before}->{}", dec.target));
        }
    }
    log.join(" ")
}

fn policy(preset: Preset, min: u32, max: u32, cpw: u32) -> ScalingPolicy {
    ScalingPolicy::new(preset, min, max, cpw)
}

#[test]
fn seed_atlas_scales_up_within_200_percent_per_minute_and_down_one_at_a_time() {
    let p = policy(Preset::SeedAtlas, 1, 20, 10);
    // 1 worker, then 150 concurrent: need 15; +200% of 1 = 3 in the first minute, then 9, then 15.
    let log = check_scaling(&p, "t=0 d=5; t=10 d=150; t=200 d=5", 400);
    assert_eq!(
        log,
        "10:1->3 70:3->9 130:9->15 260:15->14 261:14->13 262:13->12 263:12->11 264:11->10 265:10->9 266:9->8 267:8->7 268:7->6 269:6->5 270:5->4 271:4->3 272:3->2 273:2->1"
    );
}

#[test]
fn scale_to_zero_only_when_active_is_zero_and_after_the_idle_timeout() {
    let mut p = policy(Preset::SeedAtlas, 0, 5, 10);
    p.idle_timeout_ms = 30_000;
    let log = check_scaling(&p, "t=0 d=0; t=5 d=3; t=20 d=0", 200);
    // Up at once on demand; down 60 s after the load fell (the delay exceeds the idle timeout).
    assert_eq!(log, "5:0->1 80:1->0");
    let mut p1 = p.clone();
    p1.min_workers = 1;
    assert_eq!(check_scaling(&p1, "t=0 d=0; t=5 d=3; t=20 d=0", 200), "");
}

#[test]
fn idle_timeout_keeps_autoscaled_workers() {
    let mut p = policy(Preset::FixedKeepalive, 0, 10, 1);
    p.idle_timeout_ms = 20_000;
    assert_eq!(check_scaling(&p, "t=0 d=0; t=3 d=4; t=5 d=1; t=8 d=0", 60), "3:0->4 24:4->1 27:1->0");
    let b = policy(Preset::Beta9, 0, 10, 2);
    assert_eq!(check_scaling(&b, "t=0 d=0; t=1 d=4; t=2 d=0", 400), "1:0->2 181:2->0");
}

#[test]
fn damped_and_hf_presets_wait_minutes() {
    let p = policy(Preset::SeedDamped, 0, 10, 10);
    assert_eq!(check_scaling(&p, "t=0 d=0; t=1 d=50; t=400 d=0", 1200), "1:0->1 302:1->5 700:5->0");
    let h = policy(Preset::SeedHf, 0, 10, 10);
    let log = check_scaling(&h, "t=0 d=0; t=1 d=30; t=600 d=0", 2000);
    assert!(log.starts_with("1:0->1 181:1->2 361:2->3"), "{log}");
    assert!(log.ends_with("->0"), "{log}");
}

#[test]
fn knative_panics_on_bursts_and_hpa_stays_above_zero() {
    let k = policy(Preset::Knative, 0, 100, 10);
    // Poked at zero, then panic mode ramps with the 6 s window to 70 / (10 x 0.7) = 10 pods;
    // down at most halving per tick once the 60 s stable window empties; zero after the grace.
    let log = check_scaling(&k, "t=0 d=0; t=2 d=70; t=100 d=0", 300);
    assert!(log.starts_with("2:0->4 4:4->6 6:6->9 8:9->10 "), "{log}");
    assert!(log.ends_with("190:1->0"), "{log}");
    let h = policy(Preset::Hpa, 0, 100, 10);
    let log = check_scaling(&h, "t=0 d=0; t=1 d=100; t=200 d=0", 900);
    assert!(log.starts_with("0:0->1"), "{log}");
    assert!(!log.ends_with("->0"), "HPA keeps minReplicas 1: {log}");
}

#[test]
fn ray_serve_waits_30_s_up_and_600_s_down() {
    let r = policy(Preset::RayServe, 0, 50, 5);
    let log = check_scaling(&r, "t=0 d=0; t=1 d=10; t=100 d=0", 1500);
    let first: Vec<&str> = log.split(' ').take(2).collect();
    assert_eq!(first[0], "1:0->1");
    assert!(first[1].starts_with("3") && first[1].ends_with("->5"), "{log}");
}

#[test]
fn signals_compute_need() {
    let st = ScalerState::default();
    let snap = MetricsSnapshot {
        in_flight: 30,
        waiting: 11,
        arrivals: 90,
        oldest_wait_ms: 5_000,
        ready: 3,
        provisioned: 3,
        sleeping: 0,
        gpu_util_percent: None,
        engine_running: None,
        engine_waiting: None,
        kv_cache_percent: None,
    };
    let mut p = policy(Preset::Default, 0, 100, 10);
    p.target = 10;
    assert_eq!(raw_need(&p, &st, &snap, Millis(0)), 5);
    p.signal = Signal::RequestCount;
    p.target = 4;
    assert_eq!(raw_need(&p, &st, &snap, Millis(0)), 11);
    p.signal = Signal::Rpm;
    p.target = 60;
    assert_eq!(raw_need(&p, &st, &snap, Millis(0)), 2);
    p.signal = Signal::QueueDelay;
    p.target = 4;
    assert_eq!(raw_need(&p, &st, &snap, Millis(0)), 3 + 2);
    p.signal = Signal::GpuUtilization;
    p.target = 80;
    assert_eq!(raw_need(&p, &st, &snap, Millis(0)), 6);
    // Measured by the driver: 3 ready workers at 100 % for an 80 % target need 4; at 20 %, 1.
    let measured = |u| MetricsSnapshot { gpu_util_percent: Some(u), ..snap };
    assert_eq!(raw_need(&p, &st, &measured(100), Millis(0)), 4);
    assert_eq!(raw_need(&p, &st, &measured(20), Millis(0)), 1);
    assert_eq!(raw_need(&p, &st, &MetricsSnapshot { in_flight: 0, waiting: 0, ..measured(0) }, Millis(0)), 0);
}

/// A tiny deterministic generator for property checks (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn properties_bounds_and_seed_rate_limit_hold_for_random_loads() {
    let mut rng = Lcg(7);
    for case in 0..200 {
        let preset = Preset::ALL[case % Preset::ALL.len()];
        let min = (rng.next() % 3) as u32;
        let max = min + 1 + (rng.next() % 20) as u32;
        let p = policy(preset, min, max, 1 + (rng.next() % 16) as u32);
        let mut st = ScalerState { target: min, ..Default::default() };
        let mut demand = 0u64;
        let mut targets = Vec::new();
        for sec in 0..600u64 {
            if rng.next().is_multiple_of(10) {
                demand = rng.next() % 400;
            }
            let cap = u64::from(st.target) * u64::from(p.concurrency_per_worker);
            let snap = MetricsSnapshot {
                in_flight: demand.min(cap),
                waiting: demand.saturating_sub(cap),
                arrivals: demand / 2,
                oldest_wait_ms: if demand > cap { 3000 } else { 0 },
                ready: st.target,
                provisioned: st.target,
                sleeping: 0,
                gpu_util_percent: None,
                engine_running: None,
                engine_waiting: None,
                kv_cache_percent: None,
            };
            let d = decide(&p, &mut st, &snap, Millis(sec * 1000));
            assert!(d.target >= min && d.target <= max, "{preset:?} {d:?}");
            targets.push((sec, d.target));
        }
        if matches!(preset, Preset::Default | Preset::SeedAtlas) {
            // Within any 60 s, capacity grows at most to 3x the capacity at the window start,
            // except in the first window after leaving zero, which is sized to the load.
            for (i, &(t0, c0)) in targets.iter().enumerate() {
                if targets[..=i].iter().rev().take_while(|(t, _)| t0 - t <= 60).any(|x| x.1 == 0) {
                    continue;
                }
                let peak = targets[i..].iter().take_while(|(t, _)| t - t0 < 60).map(|x| x.1).max().unwrap();
                assert!(peak <= c0 * 3, "{preset:?}: {c0} at {t0} -> {peak} within 60 s");
            }
            // Scale-down removes one worker per step.
            for w in targets.windows(2) {
                assert!(w[1].1 + 1 >= w[0].1, "{preset:?}: {:?}", w);
            }
        }
    }
}

#[test]
fn default_sizes_a_cold_start_to_the_load_then_obeys_the_rate_limit() {
    let p = policy(Preset::Default, 0, 50, 10);
    // From zero the first window is sized to the load: 200 concurrent / 10 per worker = 20.
    let log = check_scaling(&p, "t=0 d=0; t=5 d=200; t=100 d=0", 400);
    assert!(log.starts_with("5:0->20 "), "{log}");
    assert!(log.ends_with("->0"), "{log}");
    let downs: Vec<u64> = log.split(' ').skip(1).map(|s| s.split(':').next().unwrap().parse().unwrap()).collect();
    // Kept through the idle timeout (10 s after the load fell), then one worker per tick
    // following the 60 s mean.
    assert!(downs[0] >= 110, "{log}");
    assert_eq!(downs.len(), 20, "one worker per step: {log}");
    // From a warm endpoint the +200%/60 s limit applies.
    let p2 = policy(Preset::Default, 2, 50, 10);
    assert_eq!(check_scaling(&p2, "t=0 d=10; t=10 d=200", 200), "10:2->6 70:6->18 130:18->20");
}
