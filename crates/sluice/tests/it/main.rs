//! Integration tests: the real `sluice` binary, real SQLite, real worker processes, real HTTP over
//! loopback. One test binary (each extra `tests/*.rs` is another link on 2 cores).
mod accounts;
mod api;
mod autoscale;
mod cli;
mod console;
mod dashboard;
mod deploy;
mod docker;
mod gateway;
mod https;
mod insight;
mod lifecycle;
mod llm;
mod logs;
mod metrics;
mod models;
mod pebble;
mod queue;
mod reported;
mod restart;
mod runpod;
mod sleep;
mod split;
mod support;
mod surface;
