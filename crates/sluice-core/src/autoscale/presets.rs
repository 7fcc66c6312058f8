//! The scaling algorithms. Each returns (target before bounds, reason). Constants cite
//! `../shared/AUTOSCALING-REFERENCE.md` (section numbers in comments).
use super::{MetricsSnapshot, Preset, ScalerState, ScalingPolicy};
use crate::Millis;

const SEC: u64 = 1000;

/// The longest window of history a preset reads.
pub fn history_ms(p: &ScalingPolicy) -> u64 {
    let own = match p.preset {
        Preset::Default | Preset::Slo => p.idle_timeout_ms.max(p.scale_down_delay_ms),
        Preset::SeedAtlas => p.idle_timeout_ms.max(p.scale_down_delay_ms).max(p.scale_up_window_ms),
        Preset::SeedDamped | Preset::SeedHf => 300 * SEC,
        Preset::FixedKeepalive => p.idle_timeout_ms,
        Preset::Knative => 60 * SEC,
        Preset::Hpa => 15 * SEC,
        Preset::RayServe => 30 * SEC,
        Preset::Beta9 => 180 * SEC,
    };
    own.max(60 * SEC)
}

/// How long after its last change, with no load at all, a preset can still change its target
/// on its own (timers: keep-alive, damping, cadences). The simulator skips idle time after that.
pub fn rest_ms(p: &ScalingPolicy) -> u64 {
    let timers = match p.preset {
        Preset::SeedHf => 900 * SEC,
        Preset::RayServe => 600 * SEC,
        Preset::SeedDamped | Preset::Hpa => 300 * SEC,
        Preset::Knative => 90 * SEC,
        _ => 0,
    };
    history_ms(p).max(p.idle_timeout_ms).max(p.scale_down_delay_ms).max(timers) + 2 * SEC
}

/// Max raw need over the last `window_ms`, the current need included.
fn max_need(st: &ScalerState, window_ms: u64, now: Millis, need: u32) -> u32 {
    st.history.iter().filter(|s| now.saturating_sub(s.at) < window_ms).map(|s| s.need).fold(need, u32::max)
}

/// Mean demand (in flight + waiting) over the last `window_ms`, the current snapshot included.
fn mean_demand(st: &ScalerState, window_ms: u64, now: Millis, snap: &MetricsSnapshot) -> f64 {
    let mut sum = snap.demand() as f64;
    let mut n = 1.0;
    for s in st.history.iter().filter(|s| now.saturating_sub(s.at) < window_ms) {
        sum += s.snap.demand() as f64;
        n += 1.0;
    }
    sum / n
}

/// Seed 000's scale-up limit: within any `scale_up_window`, add at most `scale_up_max_percent`
/// of the capacity the window started with. A percentage of nothing is nothing, so a window that
/// started at zero (the endpoint is cold-starting and no worker can serve yet) is sized to the load
/// instead: "increments based on request load" is the only rule left to apply.
fn rate_limited_up(p: &ScalingPolicy, st: &ScalerState, cur: u32, want: u32, now: Millis) -> u32 {
    let added: u32 = st
        .changes
        .iter()
        .filter(|c| now.saturating_sub(c.0) < p.scale_up_window_ms && c.2 > c.1)
        .map(|c| c.2 - c.1)
        .sum();
    let base = u64::from(cur.saturating_sub(added));
    if base == 0 {
        return want;
    }
    let ceiling = base + base * u64::from(p.scale_up_max_percent) / 100;
    let allowed = ceiling.saturating_sub(u64::from(cur)).min(u64::from(u32::MAX)) as u32;
    want.min(cur.saturating_add(allowed))
}

/// Workers removed within the scale-down window would exceed `scale_down_max_percent` of the
/// capacity the window started with if one more went now.
fn down_rate_reached(p: &ScalingPolicy, st: &ScalerState, cur: u32, now: Millis) -> bool {
    let removed: u32 = st
        .changes
        .iter()
        .filter(|c| now.saturating_sub(c.0) < p.scale_down_delay_ms && c.2 < c.1)
        .map(|c| c.1 - c.2)
        .sum();
    u64::from(removed + 1) * 100 > u64::from(cur + removed) * u64::from(p.scale_down_max_percent)
}

/// Seed 000's scale-down: after `scale_down_delay` below, one worker per step, at most
/// `scale_down_max_percent` of the window's starting capacity per window, and never below what
/// was needed within the idle timeout (each autoscaled worker stays until idle that long).
fn seed_down(p: &ScalingPolicy, st: &mut ScalerState, cur: u32, need: u32, now: Millis) -> Option<(u32, String)> {
    let since = *st.below_since.get_or_insert(now);
    if now.saturating_sub(since) < p.scale_down_delay_ms {
        return None;
    }
    let keep = max_need(st, p.idle_timeout_ms, now, need);
    if keep >= cur {
        return None;
    }
    if down_rate_reached(p, st, cur, now) {
        return None;
    }
    Some((
        cur - 1,
        format!(
            "scale down: need {need} below {cur} for {} s and no worker needed within the idle timeout of {} s",
            now.saturating_sub(since) / SEC,
            p.idle_timeout_ms / SEC
        ),
    ))
}

pub fn evaluate(
    p: &ScalingPolicy,
    st: &mut ScalerState,
    snap: &MetricsSnapshot,
    need: u32,
    now: Millis,
) -> (u32, String) {
    let cur = st.target;
    let hold = |why: &str| (cur, format!("hold at {cur}: {why}"));
    match p.preset {
        Preset::Default | Preset::Slo => {
            // Sluice's default, within seed 000's limits:
            // - up at once to what the demand fills (every waiting request gets a slot), as far
            //   as the +200%/60 s limit allows; a cold start from zero is sized to the load;
            // - each worker kept while it was needed within the idle timeout (seed 001), and the
            //   count kept at the scale-down window's *mean* demand at 80% of the per-worker cap
            //   ("60 s of low utilization" as a mean, the way Knative's stable window reads it),
            //   so a lull shorter than a cold start does not cost one;
            // - down one worker per tick, at most `scale_down_max_percent` per window.
            let cap = f64::from(p.concurrency_per_worker);
            let fill = |s: &MetricsSnapshot, need: u32| need.max(((s.demand() as f64) / cap).ceil() as u32);
            let want = fill(snap, need);
            if want > cur {
                let up = rate_limited_up(p, st, cur, want, now);
                if up > cur {
                    let lim = if up < want {
                        format!("; limited to {up} by +{}%/{} s", p.scale_up_max_percent, p.scale_up_window_ms / SEC)
                    } else {
                        String::new()
                    };
                    return (up, format!("scale up: {} concurrent requests need {want} workers{lim}", snap.demand()));
                }
                return hold(&format!("need {want}, scale-up rate limit reached"));
            }
            let recent = st
                .history
                .iter()
                .filter(|s| now.saturating_sub(s.at) < p.idle_timeout_ms)
                .map(|s| fill(&s.snap, s.need))
                .fold(want, u32::max);
            let mean = mean_demand(st, p.scale_down_delay_ms, now, snap);
            let steady = (mean / (cap * 0.8)).ceil() as u32;
            let keep = recent.max(steady);
            if keep < cur {
                if down_rate_reached(p, st, cur, now) {
                    return hold(&format!("need {keep}; scale-down rate limit reached"));
                }
                return (
                    cur - 1,
                    format!(
                        "scale down: {mean:.1} concurrent requests on average over {} s fit {steady} workers at 80%, \
                         at most {recent} needed within the idle timeout",
                        p.scale_down_delay_ms / SEC
                    ),
                );
            }
            hold(&format!(
                "mean demand {mean:.1} over {} s needs {steady}; recent need {recent}",
                p.scale_down_delay_ms / SEC
            ))
        }
        Preset::SeedAtlas => {
            if need > cur {
                st.below_since = None;
                let up = rate_limited_up(p, st, cur, need, now);
                if up > cur {
                    let lim = if up < need {
                        format!("; limited to {up} by +{}%/{} s", p.scale_up_max_percent, p.scale_up_window_ms / SEC)
                    } else {
                        String::new()
                    };
                    return (up, format!("scale up: {} concurrent requests need {need} workers{lim}", snap.demand()));
                }
                return hold(&format!("need {need}, scale-up rate limit reached"));
            }
            if need < cur {
                if let Some(d) = seed_down(p, st, cur, need, now) {
                    return d;
                }
                return hold(&format!("need {need}; waiting out the scale-down delay and idle timeout"));
            }
            st.below_since = None;
            hold("load matches capacity")
        }
        Preset::SeedDamped => {
            // Seed 002: "a 5 min dampening and delay": a change must persist 5 minutes. From
            // zero the first worker starts at once (nothing could serve otherwise).
            const DAMP: u64 = 300 * SEC;
            if cur == 0 && need > 0 {
                return (1, "scale from zero on demand".into());
            }
            if need > cur {
                st.below_since = None;
                let since = *st.above_since.get_or_insert(now);
                if now.saturating_sub(since) >= DAMP {
                    st.above_since = None;
                    return (need, format!("scale up after 5 min damping: need {need}"));
                }
                return hold("damping scale-up (5 min)");
            }
            if need < cur {
                st.above_since = None;
                let since = *st.below_since.get_or_insert(now);
                if now.saturating_sub(since) >= DAMP {
                    st.below_since = None;
                    let to = max_need(st, DAMP, now, need);
                    return (to.min(cur), format!("scale down after 5 min damping: need {to}"));
                }
                return hold("damping scale-down (5 min)");
            }
            st.above_since = None;
            st.below_since = None;
            hold("load matches capacity")
        }
        Preset::SeedHf => {
            // Seed 004 / §4.6: up every 3 min (80% utilization over 1 min), down every 5 min,
            // to zero after 15 min without requests.
            if cur == 0 {
                if need == 0 {
                    return hold("idle at zero");
                }
                // The evaluation cadences start with the first replica.
                st.last_up_eval = Some(now);
                st.last_down_eval = Some(now);
                return (1, "scale from zero on a request".into());
            }
            if st.last_busy.is_some_and(|b| now.saturating_sub(b) >= 900 * SEC) {
                return (0, "no request for 15 min: scale to zero".into());
            }
            let capacity = f64::from(cur) * f64::from(p.concurrency_per_worker);
            let up_due = st.last_up_eval.is_none_or(|t| now.saturating_sub(t) >= 180 * SEC);
            if up_due {
                st.last_up_eval = Some(now);
                let util = mean_demand(st, 60 * SEC, now, snap) / capacity;
                if util >= 0.8 {
                    return (
                        cur + 1,
                        format!("scale up: utilization {:.0}% over 1 min (evaluated every 3 min)", util * 100.0),
                    );
                }
            }
            let down_due = st.last_down_eval.is_none_or(|t| now.saturating_sub(t) >= 300 * SEC);
            if down_due {
                st.last_down_eval = Some(now);
                if max_need(st, 300 * SEC, now, need) < cur && cur > 1 {
                    return (cur - 1, "scale down: less needed over 5 min (evaluated every 5 min)".into());
                }
            }
            hold("between evaluations")
        }
        Preset::FixedKeepalive => {
            let keep = max_need(st, p.idle_timeout_ms, now, need);
            if keep == cur {
                return hold("each worker kept for its idle timeout");
            }
            (keep, format!("need {need}; workers kept {} s after their last request: {keep}", p.idle_timeout_ms / SEC))
        }
        Preset::Beta9 => {
            // §4.4: desired = ceil(in flight / tasks per container) every second; a container is
            // stoppable only after keep_warm_seconds (180 s) without a task.
            let keep = max_need(st, 180 * SEC, now, need);
            if keep == cur {
                return hold("keep-warm 180 s");
            }
            (keep, format!("ceil(in flight / per-container) = {need}; keep-warm 180 s: {keep}"))
        }
        Preset::Knative => knative(p, st, snap, now),
        Preset::Hpa => hpa(p, st, snap, now),
        Preset::RayServe => ray(p, st, snap, now),
    }
}

/// §1.4: KPA `Scale()` every 2 s (at once when at zero with demand).
fn knative(p: &ScalingPolicy, st: &mut ScalerState, snap: &MetricsSnapshot, now: Millis) -> (u32, String) {
    let cur = st.target;
    let poke = cur == 0 && snap.demand() > 0;
    if !poke && st.last_up_eval.is_some_and(|t| now.saturating_sub(t) < 2 * SEC) {
        return (cur, "between 2 s ticks".into());
    }
    st.last_up_eval = Some(now);
    let target_value = (f64::from(p.concurrency_per_worker) * 0.7).max(0.01);
    let stable = mean_demand(st, 60 * SEC, now, snap);
    let panic = mean_demand(st, 6 * SEC, now, snap);
    let ready = snap.ready.max(1);
    let max_up = (1000.0 * f64::from(ready)).ceil() as u32;
    let max_down = ready / 2;
    let dspc = (stable / target_value).ceil() as u32;
    let dppc = (panic / target_value).ceil() as u32;
    let des_stable = dspc.clamp(max_down.min(max_up), max_up);
    let des_panic = dppc.clamp(max_down.min(max_up), max_up);
    let over_panic = f64::from(dppc) / f64::from(ready) >= 2.0;
    if over_panic {
        st.panic_since = Some(now);
    } else if st.panic_since.is_some_and(|t| now.saturating_sub(t) > 60 * SEC) {
        st.panic_since = None;
        st.panic_max = 0;
    }
    let mut desired = des_stable;
    let mut why = format!("stable {stable:.1} / {target_value:.1} per pod");
    if st.panic_since.is_some() {
        desired = desired.max(des_panic);
        st.panic_max = st.panic_max.max(desired);
        desired = st.panic_max;
        why = format!("panic: 6 s demand {panic:.1} >= 2x ready capacity");
    }
    // §1.5: zero only after the stable window is empty and the 30 s grace has passed.
    if desired == 0 && st.last_busy.is_some_and(|b| now.saturating_sub(b) < 90 * SEC) {
        desired = cur.min(1);
        why = "stable window empty; scale-to-zero grace".into();
    }
    (desired, why)
}

/// §2.1: HPA sync every 15 s, 10% tolerance, scale-up max(+4 pods, +100%) per period,
/// scale-down stabilization 300 s (max of recommendations), minReplicas ≥ 1.
fn hpa(p: &ScalingPolicy, st: &mut ScalerState, snap: &MetricsSnapshot, now: Millis) -> (u32, String) {
    let cur = st.target;
    if st.last_up_eval.is_some_and(|t| now.saturating_sub(t) < 15 * SEC) && cur > 0 {
        return (cur, "between 15 s syncs".into());
    }
    st.last_up_eval = Some(now);
    let cur_pods = cur.max(1);
    let per_pod = snap.demand() as f64 / f64::from(cur_pods);
    let ratio = per_pod / f64::from(p.target.max(1));
    let desired = if (ratio - 1.0).abs() <= 0.1 { cur_pods } else { (f64::from(cur_pods) * ratio).ceil() as u32 };
    st.recs.push_back((now, desired));
    while st.recs.front().is_some_and(|r| now.saturating_sub(r.0) > 300 * SEC) {
        st.recs.pop_front();
    }
    let down_rec = st.recs.iter().map(|r| r.1).max().unwrap_or(desired);
    let mut rec = cur_pods;
    if rec < desired {
        rec = desired;
    }
    if rec > down_rec {
        rec = down_rec;
    }
    let up_limit = (cur_pods + 4).max(cur_pods * 2);
    let rec = rec.min(up_limit).max(1);
    (rec, format!("per-pod {per_pod:.1} vs target {} (ratio {ratio:.2}); 300 s down stabilization", p.target))
}

/// §3.2: Ray Serve with target_ongoing_requests = 2 and max_ongoing_requests = 5, i.e. 40% of
/// the per-worker cap; 30 s look-back mean; 30 s upscale and 600 s downscale delays.
fn ray(p: &ScalingPolicy, st: &mut ScalerState, snap: &MetricsSnapshot, now: Millis) -> (u32, String) {
    let cur = st.target;
    let target_ongoing = (f64::from(p.concurrency_per_worker) * 0.4).max(1.0);
    let n = mean_demand(st, 30 * SEC, now, snap);
    let running = snap.ready;
    if running == 0 {
        return if snap.demand() > 0 {
            (cur.max(1), "0 -> 1 with no upscale delay".into())
        } else {
            (cur, "no replicas".into())
        };
    }
    let error = n / (target_ongoing * f64::from(running));
    let mut desired = (f64::from(running) * error).ceil() as u32;
    if ((f64::from(running) * error).ceil() as u32) < running && desired == running {
        desired -= 1;
    }
    if desired > cur {
        st.streak = st.streak.max(0) + 1;
        if st.streak > 30 {
            st.streak = 0;
            return (desired, format!("ongoing {n:.1} / {target_ongoing:.1} per replica for 30 s"));
        }
        (cur, "upscale delay 30 s".into())
    } else if desired < cur {
        st.streak = st.streak.min(0) - 1;
        let desired = if cur == 1 && desired == 0 { 0 } else { desired.max(1) };
        if st.streak < -600 {
            st.streak = 0;
            return (desired, format!("ongoing {n:.1} below target for 600 s"));
        }
        (cur, "downscale delay 600 s".into())
    } else {
        st.streak = 0;
        (cur, "at target".into())
    }
}
