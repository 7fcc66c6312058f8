//! RunPod's `/v2` wire: the client API (`run`, `runsync`, `status`, `stream`, `cancel`,
//! `retry`, `purge-queue`, `health`), job webhooks, and the worker protocol that
//! `runpod.serverless.start()` speaks (`job-take`, `job-done`, `job-stop`, `ping`). Field names
//! are RunPod's (`delayTime`, `jobsToStop`, `inProgress`).
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every `/v2` error: RunPod's clients read the status code; the body says what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V2Error {
    pub error: String,
}

/// A job's status envelope (`status`, `runsync`, `status-sync`, and webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: String,
    pub status: String,
    /// Ms from submission to the start (so far, while queued).
    pub delay_time: u64,
    /// Ms the job ran (so far, while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Once started: where its time went (queue, of which a worker's start, and execution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<sluice_core::jobs::JobTimings>,
}

/// What a webhook receives when a job ends: its status envelope, plus the input and the
/// webhook, as RunPod sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobWebhook {
    #[serde(flatten)]
    pub status: JobStatus,
    pub input: Value,
    pub webhook: String,
}

/// `run` and `cancel`, `retry`: the job and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub id: String,
    pub status: String,
}

/// `stream`: the chunks not yet read, and the job's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamBatch {
    pub status: String,
    /// Always present (RunPod's clients index it even when it is empty).
    pub stream: Vec<StreamChunk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChunk {
    pub output: Value,
}

/// `purge-queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purged {
    pub removed: u64,
    pub status: String,
}

/// `health`: jobs by state and workers by state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    pub jobs: JobTotals,
    pub workers: WorkerTotals,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTotals {
    pub completed: u64,
    pub failed: u64,
    pub in_progress: u64,
    pub in_queue: u64,
    pub retried: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerTotals {
    pub idle: u64,
    pub initializing: u32,
    pub ready: u32,
    pub running: u64,
    pub throttled: u32,
    pub unhealthy: u32,
}

/// A job handed to a worker by `job-take` (one) or `job-take-batch` (an array of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakenJob {
    pub id: String,
    pub input: Value,
}

/// `job-done` and `job-stream`: whether the report was taken (false: the job no longer runs on
/// that worker; nothing for it to retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: bool,
}

/// `job-stop`: the jobs the worker should stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsToStop {
    #[serde(rename = "jobsToStop")]
    pub jobs_to_stop: Vec<String>,
}

/// `ping` answers an empty object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pong {}

/// A job as pushed to a worker's `job_path` (push delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushedJob {
    pub id: String,
    pub input: Value,
}

/// The body of `run` and `runsync`: the job's input, and optionally its policy (RunPod's
/// `executionTimeout`, `ttl`, `lowPriority`) and a webhook. Other fields RunPod knows (such as
/// `s3Config`) are accepted and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub policy: Option<Value>,
    #[serde(default)]
    pub webhook: Option<Value>,
}
