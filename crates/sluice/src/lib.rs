//! The `sluice` binary as a library: CLI, configuration, platform wiring, API client, demo
//! worker. `main.rs` only calls [`cli::main`].
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod demo_engine;
pub mod gpus;
pub mod https;
pub mod platform;
pub mod progress;
pub mod remote_gateway;
pub mod sim;
pub mod table;
pub mod tls_listener;
