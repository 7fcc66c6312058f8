//! Sluice's pure domain: identifiers, validated endpoint specifications, the worker lifecycle,
//! GPU placement, worker choice for the gateway, and the reconciler's decisions.
//!
//! **This crate does no I/O, reads no clock and depends on no async runtime.** Time is always an
//! argument ([`Millis`]), so every decision here is reproducible in tests and in the simulator.
#![forbid(unsafe_code)]

pub mod affinity;
pub mod autoscale;
pub mod billing;
pub mod catalog;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod models;
pub mod placement;
pub mod pull;
pub mod reconcile;
pub mod recording;
pub mod routing;
pub mod secrets;
pub mod templates;
pub mod tls;
pub mod worker;

pub use endpoint::{
    EndpointDraft, EndpointSpec, EndpointStatus, LoadBalancing, NetworkVolume, RegistryAuth, RuntimeKind,
    ValidationContext,
};
pub use error::FieldError;
pub use ids::{EndpointId, WorkerId};
pub use worker::WorkerState;

/// Milliseconds since the Unix epoch. The only notion of time in this crate; callers read the
/// clock and pass it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    pub fn saturating_sub(self, other: Millis) -> u64 {
        self.0.saturating_sub(other.0)
    }
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn plus_secs(self, secs: u64) -> Millis {
        self.plus_ms(secs.saturating_mul(1000))
    }
}

/// Formats a Unix time in milliseconds as an RFC 3339 UTC timestamp (`2026-11-23T19:54:53.123Z`).
pub fn rfc3339(t: Millis) -> String {
    let secs = t.0 / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", sod / 3600, sod / 60 % 60, sod % 60, t.0 % 1000)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn rfc3339_known_points() {
        assert_eq!(rfc3339(Millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(Millis(1_795_463_693_123)), "2026-11-23T19:54:53.123Z");
    }
}
