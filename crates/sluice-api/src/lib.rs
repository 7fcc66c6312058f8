//! Wire types: every message Sluice sends or receives on the wire is defined here (fields may be
//! `sluice-core` value types: ids, states, figures). The `/v1` control API (`endpoints`,
//! `accounts`, `error`), RunPod's `/v2` API and worker protocol (`v2`), and the protocol between
//! control and gateway processes (`internal`). Validation lives in `sluice-core`; this crate only
//! maps shapes, with `deny_unknown_fields` on every input.
#![forbid(unsafe_code)]

mod accounts;
mod certificates;
mod endpoints;
mod error;
pub mod internal;
mod json;
pub mod v2;

pub use accounts::*;
pub use certificates::*;
pub use endpoints::*;
pub use error::*;
pub use json::{JsonError, parse_json, scrub};
