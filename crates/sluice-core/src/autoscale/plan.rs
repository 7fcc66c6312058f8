//! The planner (R4.8): seed 001's RPM calculation turned into a recommendation.
use serde::Serialize;

use crate::FieldError;

/// Hours in an average month (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Requests per minute one worker sustains: 60 / latency × concurrent requests per worker.
    pub rpm_per_worker: f64,
    pub active_workers: u32,
    pub max_workers: u32,
    /// Baseline workers all month at the hourly price.
    pub monthly_cost_min_usd: f64,
    /// Plus every autoscaled worker running all month at the per-second price.
    pub monthly_cost_max_usd: f64,
}

/// Seed 001: a model with latency L serves 60/L requests per minute per worker (times its
/// concurrency); baseline workers cover the expected RPM, max workers the peak.
pub fn plan(
    latency_secs: f64,
    rpm: f64,
    peak_rpm: Option<f64>,
    concurrency_per_worker: u32,
    gpus_per_worker: u32,
    usd_per_hour: f64,
    usd_per_second: f64,
) -> Result<Plan, FieldError> {
    if !(latency_secs.is_finite() && latency_secs > 0.0) {
        return Err(FieldError::new("latency_secs", "must be a number above 0"));
    }
    if !(rpm.is_finite() && rpm >= 0.0) {
        return Err(FieldError::new("rpm", "must be a number >= 0"));
    }
    let peak = peak_rpm.unwrap_or(rpm);
    if !(peak.is_finite() && peak >= rpm) {
        return Err(FieldError::new("peak_rpm", "must be a number >= rpm"));
    }
    if concurrency_per_worker == 0 || gpus_per_worker == 0 {
        return Err(FieldError::new("concurrency_per_worker", "must be at least 1"));
    }
    let per = 60.0 / latency_secs * f64::from(concurrency_per_worker);
    let active = (rpm / per - 1e-9).ceil().max(0.0) as u32;
    let max = ((peak / per - 1e-9).ceil() as u32).max(active).max(1);
    let gpus = f64::from(gpus_per_worker);
    let min_cost = f64::from(active) * gpus * usd_per_hour * HOURS_PER_MONTH;
    let max_cost = min_cost + f64::from(max - active) * gpus * usd_per_second * 3600.0 * HOURS_PER_MONTH;
    Ok(Plan {
        rpm_per_worker: per,
        active_workers: active,
        max_workers: max,
        monthly_cost_min_usd: min_cost,
        monthly_cost_max_usd: max_cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_001_example() {
        // faceswap-v2: ~6 s per request -> 10 RPM per machine; 20 RPM, 100 at peak -> 2-10.
        let p = plan(6.0, 20.0, Some(100.0), 1, 1, 4.32, 0.00608).unwrap();
        assert_eq!((p.active_workers, p.max_workers), (2, 10));
        assert!((p.rpm_per_worker - 10.0).abs() < 1e-9);
        assert!((p.monthly_cost_min_usd - 2.0 * 4.32 * 730.0).abs() < 1e-6);
        assert!((p.monthly_cost_max_usd - (p.monthly_cost_min_usd + 8.0 * 0.00608 * 3600.0 * 730.0)).abs() < 1e-6);
    }

    #[test]
    fn edges_and_errors() {
        let p = plan(6.0, 0.0, None, 1, 1, 1.0, 0.001).unwrap();
        assert_eq!((p.active_workers, p.max_workers), (0, 1));
        let p = plan(0.5, 200.0, Some(250.0), 4, 2, 1.0, 0.001).unwrap();
        assert_eq!(p.rpm_per_worker, 480.0);
        assert_eq!((p.active_workers, p.max_workers), (1, 1));
        assert_eq!(plan(0.0, 1.0, None, 1, 1, 1.0, 1.0).unwrap_err().field, "latency_secs");
        assert_eq!(plan(1.0, -1.0, None, 1, 1, 1.0, 1.0).unwrap_err().field, "rpm");
        assert_eq!(plan(1.0, 10.0, Some(5.0), 1, 1, 1.0, 1.0).unwrap_err().field, "peak_rpm");
        assert_eq!(plan(1.0, 10.0, None, 0, 1, 1.0, 1.0).unwrap_err().field, "concurrency_per_worker");
    }
}
