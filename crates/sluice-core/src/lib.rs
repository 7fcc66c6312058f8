//! Sluice's pure domain: identifiers, validated endpoint specifications, the worker lifecycle,
//! GPU placement, worker choice for the gateway, and the reconciler's decisions.
//!
//! **This crate does no I/O, reads no clock and depends on no async runtime.** Time is always an
//! argument ([`Millis`]), so every decision here is reproducible in tests and in the simulator.
#![forbid(unsafe_code)]

pub mod endpoint;
pub mod error;
pub mod ids;
pub mod placement;
pub mod reconcile;
pub mod routing;
pub mod secrets;
pub mod worker;

pub use endpoint::{
    EndpointDraft, EndpointSpec, EndpointStatus, LoadBalancing, NetworkVolume, RuntimeKind,
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
