//! The GPU price catalog (R5.2); defaults are seed 001's table plus the simulated type.

/// (type, baseline USD per hour, autoscaling USD per second)
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    // The simulated type is priced so that metering and credits show real numbers.
    ("SIM", 0.36, 0.0002),
    ("L40", 2.67, 0.00424),
    ("A40", 1.73, 0.00272),
    ("A100", 4.32, 0.00608),
    ("H100", 9.0, 0.01240),
];

/// Autoscaling price per GPU-second of a type from the default catalog.
pub fn per_second(gpu_type: &str) -> Option<f64> {
    DEFAULT_PRICES.iter().find(|p| p.0 == gpu_type).map(|p| p.2)
}

/// Baseline price per GPU-hour of a type from the default catalog.
pub fn per_hour(gpu_type: &str) -> Option<f64> {
    DEFAULT_PRICES.iter().find(|p| p.0 == gpu_type).map(|p| p.1)
}
