//! Metering arithmetic (R5.3), pure. Money is integer nanodollars so that sums are exact.
//!
//! A worker is metered per second of its lifetime (launch to stop) times its GPU count. While it
//! runs, whole elapsed seconds are billed; when it stops, its lifetime rounded up. Each accrual
//! bills only what is due beyond what was billed before, so however often it runs, the total of
//! a worker's entries is exactly `ceil(lifetime) × gpus` seconds, never more.
use serde::{Deserialize, Serialize};

use crate::Millis;

/// Nanodollars per dollar.
pub const NANOS: i64 = 1_000_000_000;

/// Workers up to `active_workers` are baseline (hourly rate, pro rata); those above are
/// autoscaled (per-second rate); a worker's seconds asleep are sleeping (their own rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Baseline,
    Autoscaled,
    Sleeping,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Baseline => "baseline",
            Class::Autoscaled => "autoscaled",
            Class::Sleeping => "sleeping",
        }
    }
    pub fn parse(s: &str) -> Option<Class> {
        match s {
            "baseline" => Some(Class::Baseline),
            "autoscaled" => Some(Class::Autoscaled),
            "sleeping" => Some(Class::Sleeping),
            _ => None,
        }
    }
}

/// The share of the autoscaled per-second price that a sleeping GPU-second costs when a price
/// does not say: a tenth. A sleeper holds host memory (its offloaded weights) and its GPUs'
/// place, but yields the GPUs to any start that needs them, so it costs far less than a
/// serving worker and more than nothing.
pub const DEFAULT_SLEEPING_SHARE: f64 = 0.1;

/// A GPU type's prices (R5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub gpu_type: String,
    /// Baseline, USD per GPU-hour.
    pub per_hour: f64,
    /// Autoscaled, USD per GPU-second.
    pub per_second: f64,
    /// Asleep, USD per GPU-second (default: [`DEFAULT_SLEEPING_SHARE`] of `per_second`).
    #[serde(default)]
    pub sleeping_per_second: Option<f64>,
}

impl Price {
    /// A price with the default sleeping rate.
    pub fn new(gpu_type: impl Into<String>, per_hour: f64, per_second: f64) -> Price {
        Price { gpu_type: gpu_type.into(), per_hour, per_second, sleeping_per_second: None }
    }

    /// Nanodollars per GPU-second for a class (rounded to the nearest nanodollar).
    pub fn nanos_per_gpu_second(&self, class: Class) -> i64 {
        let usd = match class {
            Class::Baseline => self.per_hour / 3600.0,
            Class::Autoscaled => self.per_second,
            Class::Sleeping => self.sleeping_per_second.unwrap_or(self.per_second * DEFAULT_SLEEPING_SHARE),
        };
        (usd * NANOS as f64).round() as i64
    }
}

/// Worker-seconds still to bill for a worker launched at `start`: at `now` while it runs (whole
/// seconds elapsed), or for its whole life rounded up once it has `stopped`, less `billed`.
pub fn seconds_due(start: Millis, now: Millis, stopped: bool, billed: u64) -> u64 {
    let elapsed = now.0.saturating_sub(start.0);
    let total = if stopped { elapsed.div_ceil(1000) } else { elapsed / 1000 };
    total.saturating_sub(billed)
}

/// Which class a newly metered worker gets, given how many of its endpoint's live workers are
/// already baseline.
pub fn classify(baseline_in_use: u32, active_workers: u32) -> Class {
    if baseline_in_use < active_workers { Class::Baseline } else { Class::Autoscaled }
}

/// Cost of `seconds` of a worker with `gpus` GPUs at `nanos_per_gpu_second`.
pub fn cost_nanos(seconds: u64, gpus: u32, nanos_per_gpu_second: i64) -> i64 {
    (seconds as i64).saturating_mul(i64::from(gpus)).saturating_mul(nanos_per_gpu_second)
}

/// Dollars from nanodollars, for display.
pub fn usd(nanos: i64) -> f64 {
    nanos as f64 / NANOS as f64
}

/// The UTC calendar day (`YYYY-MM-DD`) of a time, for usage by day.
pub fn day(t: Millis) -> String {
    crate::rfc3339(t)[..10].to_owned()
}

/// Below this balance every endpoint of the account is turned off (R5.4): $10.
pub const CREDIT_FLOOR_NANOS: i64 = 10 * NANOS;

/// What 24 hours of an endpoint's runtime cost (R5.4, as documented): its active workers × GPUs
/// per worker × the baseline hourly price × 24. Scaling above `active_workers` is not counted.
pub fn daily_cost_nanos(active_workers: u32, gpus_per_worker: u32, price: Option<&Price>) -> i64 {
    let per_hour = price.map_or(0, |p| (p.per_hour * NANOS as f64).round() as i64);
    per_hour.saturating_mul(i64::from(active_workers) * i64::from(gpus_per_worker)).saturating_mul(24)
}

/// The balance an account needs to create or change an endpoint to this daily cost: 24 hours of
/// it, and never less than the floor below which endpoints are turned off.
pub fn balance_required(daily_cost: i64) -> i64 {
    daily_cost.max(CREDIT_FLOOR_NANOS)
}

/// The hourly cost of workers now running: (GPUs, class) each, at `price`.
pub fn hourly_cost_nanos(workers: &[(u32, Class)], price: Option<&Price>) -> i64 {
    let Some(p) = price else { return 0 };
    workers.iter().map(|(g, c)| p.nanos_per_gpu_second(*c).saturating_mul(3600).saturating_mul(i64::from(*g))).sum()
}

/// What an account's credit calls for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditVerdict {
    /// Record (and send) the low-credit warning: the balance just fell below 10 hours of the
    /// current runtime cost.
    pub warn: bool,
    /// The balance is back above that line: the next crossing warns again.
    pub rearm: bool,
    /// Below the floor: turn every endpoint off.
    pub turn_off: bool,
}

/// Credit rules (R5.4) for a balance, the account's current hourly cost, and whether the warning
/// was already given for this crossing.
pub fn credit_verdict(balance: i64, hourly_cost: i64, warned: bool) -> CreditVerdict {
    let low = hourly_cost > 0 && balance < hourly_cost.saturating_mul(10);
    CreditVerdict { warn: low && !warned, rearm: !low && warned, turn_off: balance < CREDIT_FLOOR_NANOS }
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ` into Unix ms.
pub fn parse_time(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (hh, mm, ss) = match b.len() {
        10 => (0, 0, 0),
        20 if b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'Z' => {
            (num(11..13)?, num(14..16)?, num(17..19)?)
        }
        _ => return None,
    };
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    (secs >= 0).then(|| Millis(secs as u64 * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a100() -> Price {
        Price::new("A100", 4.32, 0.00608)
    }

    #[test]
    fn prices_per_gpu_second() {
        assert_eq!(a100().nanos_per_gpu_second(Class::Baseline), 1_200_000); // 4.32 / 3600 = $0.0012
        assert_eq!(a100().nanos_per_gpu_second(Class::Autoscaled), 6_080_000);
        assert_eq!(a100().nanos_per_gpu_second(Class::Sleeping), 608_000, "a tenth by default");
        let own = Price { sleeping_per_second: Some(0.0), ..a100() };
        assert_eq!(own.nanos_per_gpu_second(Class::Sleeping), 0);
        for c in [Class::Baseline, Class::Autoscaled, Class::Sleeping] {
            assert_eq!(Class::parse(c.as_str()), Some(c));
        }
        assert_eq!(cost_nanos(3600, 2, 1_200_000), 8_640_000_000); // 2 GPU-hours baseline = $8.64
        assert!((usd(8_640_000_000) - 8.64).abs() < 1e-12);
    }

    #[test]
    fn seconds_due_cases() {
        let s = Millis(1_000);
        // Running: whole seconds only.
        assert_eq!(seconds_due(s, Millis(1_999), false, 0), 0);
        assert_eq!(seconds_due(s, Millis(3_500), false, 0), 2);
        assert_eq!(seconds_due(s, Millis(3_500), false, 2), 0);
        // Stopped: the lifetime rounded up, less what was billed.
        assert_eq!(seconds_due(s, Millis(3_500), true, 2), 1);
        assert_eq!(seconds_due(s, Millis(3_000), true, 2), 0);
        assert_eq!(seconds_due(s, Millis(1_001), true, 0), 1);
        assert_eq!(seconds_due(s, Millis(1_000), true, 0), 0);
        // A clock that went backwards bills nothing rather than underflowing.
        assert_eq!(seconds_due(s, Millis(500), true, 3), 0);
    }

    #[test]
    fn credit_rules() {
        let p = a100();
        assert_eq!(daily_cost_nanos(2, 4, Some(&p)), 2 * 4 * 4_320_000_000 * 24); // $829.44
        assert_eq!(daily_cost_nanos(0, 4, Some(&p)), 0);
        assert_eq!(daily_cost_nanos(2, 4, None), 0);
        assert_eq!(balance_required(0), CREDIT_FLOOR_NANOS);
        assert_eq!(balance_required(50 * NANOS), 50 * NANOS);
        // One baseline A100 worker with 2 GPUs: $8.64 an hour; one autoscaled: 0.00608 × 3600.
        assert_eq!(hourly_cost_nanos(&[(2, Class::Baseline)], Some(&p)), 8_640_000_000);
        assert_eq!(hourly_cost_nanos(&[(1, Class::Autoscaled)], Some(&p)), 21_888_000_000);
        let hour = 8_640_000_000;
        let v = |b: i64, warned| credit_verdict(b, hour, warned);
        assert_eq!(v(100 * NANOS, false), CreditVerdict { warn: false, rearm: false, turn_off: false });
        assert_eq!(v(80 * NANOS, false), CreditVerdict { warn: true, rearm: false, turn_off: false });
        assert_eq!(
            v(80 * NANOS, true),
            CreditVerdict { warn: false, rearm: false, turn_off: false },
            "once per crossing"
        );
        assert_eq!(v(100 * NANOS, true), CreditVerdict { warn: false, rearm: true, turn_off: false });
        assert_eq!(v(9 * NANOS, true), CreditVerdict { warn: false, rearm: false, turn_off: true });
        assert!(!credit_verdict(1, 0, false).warn, "nothing running, nothing to warn about");
        assert!(credit_verdict(1, 0, false).turn_off);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01"), Some(Millis(0)));
        assert_eq!(parse_time("2026-11-23"), Some(Millis(1_795_392_000_000)));
        assert_eq!(parse_time("2026-11-23T01:02:03Z"), Some(Millis(1_795_392_000_000 + 3_723_000)));
        for t in [Millis(0), Millis(1_795_392_000_000), Millis(951_782_400_000)] {
            assert_eq!(parse_time(&day(t)), Some(t), "round trip of {}", day(t));
        }
        for bad in ["", "2026-13-01", "2026-1-01", "yesterday", "2026-11-23T25:00:00Z", "2026-11-23 01:02:03"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn classes() {
        assert_eq!(classify(0, 1), Class::Baseline);
        assert_eq!(classify(1, 1), Class::Autoscaled);
        assert_eq!(classify(0, 0), Class::Autoscaled);
        assert_eq!(Class::parse(Class::Baseline.as_str()), Some(Class::Baseline));
        assert_eq!(day(Millis(86_400_000 * 3 + 5)), "1970-01-04");
    }

    /// Property: however the accruals fall, a worker's entries add up to its lifetime rounded
    /// up, and the ledger's cost total equals the sum of its entries' costs.
    #[test]
    fn ledger_total_equals_the_sum_of_its_parts() {
        let mut seed = 42u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..500 {
            let start = Millis(next(10_000_000));
            let life = next(400_000);
            let gpus = 1 + next(8) as u32;
            let rate = 1 + next(10_000_000) as i64;
            let mut t = start;
            let mut billed = 0;
            let mut entries = Vec::new();
            // Accruals at random moments while it runs, then the final one at stop.
            loop {
                t = Millis(t.0 + next(90_000));
                if t.0 >= start.0 + life {
                    break;
                }
                let due = seconds_due(start, t, false, billed);
                billed += due;
                entries.push(cost_nanos(due, gpus, rate));
            }
            let stop = Millis(start.0 + life);
            let due = seconds_due(start, stop, true, billed);
            billed += due;
            entries.push(cost_nanos(due, gpus, rate));
            assert_eq!(billed, life.div_ceil(1000), "start {start:?} life {life}");
            assert_eq!(entries.iter().sum::<i64>(), cost_nanos(billed, gpus, rate));
        }
    }
}
