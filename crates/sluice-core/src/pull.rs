//! RunPod's worker protocol, the pure parts (R6.2): what a worker built on
//! `runpod.serverless.start()` is given (its `RUNPOD_*` variables and per-worker token), what it
//! reports (`job-done`, `job-stream`), and the heartbeat and stop-channel arithmetic.
//!
//! The worker long-polls `job-take` (one job) or `job-take-batch` (`&batch_size=N`), POSTs
//! results to `job-done` with a form content type carrying a JSON body (progress updates go to
//! the same URL with `"status": "IN_PROGRESS"`), POSTs generator chunks to `job-stream`,
//! long-polls `job-stop` for jobs to cancel and pings every `RUNPOD_PING_INTERVAL` ms.
use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Millis;

/// How long `job-take` and `job-stop` hold a poll with nothing to hand out. The SDK gives up on
/// a poll after 90 s, and on 204 polls again at once.
pub const HOLD_MS: u64 = 20_000;

/// Largest `batch_size` a worker gets at once.
pub const MAX_BATCH: u32 = 64;

/// Heartbeat intervals a worker may miss before it is presumed dead.
pub const MISSED_PINGS_DEAD: u32 = 3;

/// Default `RUNPOD_PING_INTERVAL` (the SDK's own default).
pub const DEFAULT_PING_MS: u64 = 10_000;

/// A worker's token: it is sent as the raw `Authorization` header (no Bearer) on every protocol
/// call, and is valid only for that endpoint and worker. Derived from the platform's secret, so
/// the store keeps nothing per worker and a restarted platform still knows the tokens of the
/// workers it adopts.
pub fn token(secret: &[u8], endpoint: &str, worker: &str) -> String {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(b"\0worker-token\0");
    h.update((endpoint.len() as u64).to_le_bytes());
    h.update(endpoint.as_bytes());
    h.update(worker.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut s = String::from("swt_");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Constant-time comparison of a presented token with the expected one.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `application/x-www-form-urlencoded` for one query value (RunPod sends `gpu=NVIDIA+RTX+4090`).
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The variables a pull worker is started with. `base` is how the worker reaches the platform's
/// `/v2` API (no trailing slash). The SDK substitutes `$ID` (worker id in the take URL, job id
/// in the others) and `$RUNPOD_POD_ID`, and appends `&…` parameters, so every URL already
/// carries a query.
pub fn worker_env(
    base: &str,
    endpoint: &str,
    worker: &str,
    gpu: &str,
    token: &str,
    ping_ms: u64,
) -> Vec<(String, String)> {
    let base = base.trim_end_matches('/');
    let q = format!("?gpu={}", query_value(gpu));
    let v2 = format!("{base}/v2/{endpoint}");
    [
        ("RUNPOD_WEBHOOK_GET_JOB", format!("{v2}/job-take/$ID{q}")),
        ("RUNPOD_WEBHOOK_POST_OUTPUT", format!("{v2}/job-done/$RUNPOD_POD_ID/$ID{q}")),
        ("RUNPOD_WEBHOOK_POST_STREAM", format!("{v2}/job-stream/$RUNPOD_POD_ID/$ID{q}")),
        ("RUNPOD_WEBHOOK_PING", format!("{v2}/ping/$RUNPOD_POD_ID{q}")),
        ("RUNPOD_POD_ID", worker.to_owned()),
        ("RUNPOD_POD_HOSTNAME", worker.to_owned()),
        ("RUNPOD_ENDPOINT_ID", endpoint.to_owned()),
        ("RUNPOD_AI_API_KEY", token.to_owned()),
        ("RUNPOD_PING_INTERVAL", ping_ms.to_string()),
        ("RUNPOD_GPU_TYPE_ID", gpu.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Whether workers reach the platform at a loopback address (`127.0.0.0/8`, `::1`,
/// `localhost`): containers then share the host's network, since from a bridge network
/// loopback is the container itself.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// What a worker POSTed to `job-done`.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `progress_update`: the job's output so far; it is still running.
    Progress(Value),
    /// The job ended: an error (FAILED) or else its output (COMPLETED, possibly without output).
    /// `stop_pod`: the handler asked for `refresh_worker`.
    Done { output: Option<Value>, error: Option<String>, stop_pod: bool },
}

/// Reads a `job-done` body. The SDK sends JSON with a form content type, so the content type is
/// not consulted.
pub fn parse_report(body: &[u8]) -> Result<Report, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("body must be a JSON object with \"output\" or \"error\"".into());
    };
    if m.get("status").and_then(Value::as_str) == Some("IN_PROGRESS") {
        return Ok(Report::Progress(m.remove("output").unwrap_or(Value::Null)));
    }
    let stop_pod = m.get("stopPod").and_then(Value::as_bool).unwrap_or(false);
    let error = match m.remove("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(Report::Done { output: m.remove("output"), error, stop_pod })
}

/// Reads a `job-stream` body: `{"output": chunk}`, or `{"error": "..."}` when the generator
/// failed (the job's end follows on `job-done`).
pub fn parse_chunk(body: &[u8]) -> Result<Result<Value, String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match v {
        Value::Object(mut m) => match (m.remove("output"), m.remove("error")) {
            (_, Some(e)) if !e.is_null() => Ok(Err(e.as_str().map_or_else(|| e.to_string(), str::to_owned))),
            (Some(o), _) => Ok(Ok(o)),
            (None, _) => Err("body needs \"output\"".into()),
        },
        _ => Err("body must be a JSON object with \"output\"".into()),
    }
}

/// The `job_id` parameter of a ping: comma-separated ids of the jobs the worker is running.
pub fn parse_job_ids(param: Option<&str>) -> Vec<String> {
    param
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_owned)
        .take(1024)
        .collect()
}

/// Whole heartbeat intervals since the worker was last heard from (a take, a report or a ping).
pub fn missed_pings(last_seen: Millis, now: Millis, interval_ms: u64) -> u32 {
    let gap = now.saturating_sub(last_seen);
    u32::try_from(gap / interval_ms.max(1)).unwrap_or(u32::MAX)
}

/// How often a stop is told again while the worker still holds the job: a stop can reach the
/// SDK between its take and the start of the handler, when it has nothing to cancel yet.
pub const RETELL_MS: u64 = 2_000;

/// Times a worker is told to stop one job.
pub const MAX_TELLS: u8 = 3;

/// A job a worker was handed and has not reported on: how often it was told to stop, and when
/// last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub tells: u8,
    pub last_told: Millis,
}

/// The jobs a worker should be told to stop now: those it holds that the store no longer has
/// running on it (cancelled, timed out, deleted by TTL, handed elsewhere), not yet told, or told
/// [`RETELL_MS`] ago and fewer than [`MAX_TELLS`] times.
pub fn jobs_to_stop<'a>(
    held: impl IntoIterator<Item = (&'a String, &'a Held)>,
    running_here: &[String],
    now: Millis,
) -> Vec<String> {
    let mut v: Vec<String> = held
        .into_iter()
        .filter(|(j, h)| {
            !running_here.contains(j)
                && (h.tells == 0 || (h.tells < MAX_TELLS && now.saturating_sub(h.last_told) >= RETELL_MS))
        })
        .map(|(j, _)| j.clone())
        .collect();
    v.sort();
    v
}

/// Per job: misses counted (pings in a row that left it out) and when the last one counted.
pub type Misses = HashMap<String, (u32, Millis)>;

/// Pings in a row that must leave out a job its worker runs (by the store) before the job is
/// presumed lost and goes back to the queue.
pub const LOST_AFTER_PINGS: u32 = 2;

/// A ping's verdict on the jobs the store says run on its worker (`running`: id and when it was
/// claimed). A worker lists in every ping the jobs it holds, from its take until its report has
/// been answered; a job it no longer lists is gone from it. Either its result arrived (then the
/// store no longer has it running there), or the worker dropped it: RunPod's SDK drops a result
/// it could not deliver (a refused connection while the platform restarted is not retried), and
/// a take whose answer never reached the worker leaves a job it never had. A miss counts only
/// from a ping that arrives at least one interval after the claim (one sent while the take's
/// answer was on its way cannot list the job yet), and at most one per half interval (two pings
/// close together are one); [`LOST_AFTER_PINGS`] in a row and the job is lost. Only a worker that
/// is known to list its jobs is judged this way (see `Registry` in the control plane). Returns the
/// misses to keep (count, and when the last one counted, per job still running and unlisted) and
/// the lost jobs.
pub fn lost_jobs(
    running: &[(String, Millis)],
    listed: &[String],
    misses: &Misses,
    now: Millis,
    ping_ms: u64,
) -> (Misses, Vec<String>) {
    let mut keep = HashMap::new();
    let mut lost = Vec::new();
    for (job, claimed) in running {
        if listed.contains(job) {
            continue;
        }
        let before = misses.get(job).copied();
        let counts = now.saturating_sub(*claimed) >= ping_ms
            && before.is_none_or(|(_, last)| now.saturating_sub(last) >= ping_ms / 2);
        let next = if counts { Some((before.map_or(0, |b| b.0) + 1, now)) } else { before };
        match next {
            Some((n, _)) if n >= LOST_AFTER_PINGS => lost.push(job.clone()),
            Some(m) => {
                keep.insert(job.clone(), m);
            }
            None => {}
        }
    }
    lost.sort();
    (keep, lost)
}

/// The `batch_size` a `job-take-batch` asks for, bounded.
pub fn batch_size(param: Option<&str>) -> u32 {
    param.and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(1).clamp(1, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_job_its_worker_stops_listing_is_lost_after_two_pings() {
        let ping = 1_000;
        let run = |jobs: &[(&str, u64)]| jobs.iter().map(|(j, t)| (j.to_string(), Millis(*t))).collect::<Vec<_>>();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (running, listed, misses before, now) -> (misses after, lost); a miss is (count, when).
        type Misses<'a> = &'a [(&'a str, (u32, u64))];
        type Case<'a> = (&'a [(&'a str, u64)], &'a [&'a str], Misses<'a>, u64, Misses<'a>, &'a [&'a str]);
        let cases: [Case; 9] = [
            // Listed: nothing to count.
            (&[("a", 0)], &["a"], &[("a", (1, 4_000))], 5_000, &[], &[]),
            // Unlisted, but claimed less than one interval ago: the ping may predate the take.
            (&[("a", 4_500)], &[], &[], 5_000, &[], &[]),
            // First miss, then the second: lost.
            (&[("a", 0)], &[], &[], 5_000, &[("a", (1, 5_000))], &[]),
            (&[("a", 0)], &[], &[("a", (1, 5_000))], 6_000, &[], &["a"]),
            // Two pings close together count once.
            (&[("a", 0)], &[], &[("a", (1, 5_000))], 5_100, &[("a", (1, 5_000))], &[]),
            // A listing in between starts over.
            (&[("a", 0)], &["a"], &[("a", (1, 5_000))], 6_000, &[], &[]),
            // Finished jobs (no longer running) drop out of the counts.
            (&[], &[], &[("gone", (1, 5_000))], 6_000, &[], &[]),
            // Several at once, sorted.
            (&[("b", 0), ("a", 0), ("c", 0)], &["c"], &[("a", (1, 8_000)), ("b", (1, 8_000))], 9_000, &[], &["a", "b"]),
            // After a restart the counts are empty: two pings settle it.
            (&[("x", 100)], &["y"], &[], 1_100, &[("x", (1, 1_100))], &[]),
        ];
        let map = |m: Misses| m.iter().map(|(j, (n, t))| (j.to_string(), (*n, Millis(*t)))).collect::<HashMap<_, _>>();
        for (running, listed, before, now, after, lost) in cases {
            let before = map(before);
            let (keep, got) = lost_jobs(&run(running), &ids(listed), &before, Millis(now), ping);
            let after = map(after);
            assert_eq!((keep, got), (after, ids(lost)), "{running:?} {listed:?} {before:?} {now}");
        }
    }

    #[test]
    fn tokens_are_per_endpoint_and_worker() {
        let t = token(b"secret", "ep1", "w1");
        assert!(t.starts_with("swt_") && t.len() == 68, "{t}");
        assert_eq!(t, token(b"secret", "ep1", "w1"));
        assert_ne!(t, token(b"secret", "ep1", "w2"));
        assert_ne!(t, token(b"secret", "ep2", "w1"));
        assert_ne!(t, token(b"other", "ep1", "w1"));
        // The length prefix keeps ("a", "b/c") apart from ("a/b", "c").
        assert_ne!(token(b"s", "a", "b/c"), token(b"s", "a/b", "c"));
        assert_ne!(token(b"s", "ab", "c"), token(b"s", "a", "bc"));
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t[..67], &t));
        assert!(!token_matches("", &t));
        let mut other = t.clone().into_bytes();
        other[10] ^= 1;
        assert!(!token_matches(std::str::from_utf8(&other).unwrap(), &t));
    }

    #[test]
    fn query_values_are_form_encoded() {
        assert_eq!(query_value("NVIDIA RTX 4090"), "NVIDIA+RTX+4090");
        assert_eq!(query_value("SIM"), "SIM");
        assert_eq!(query_value("a&b=c?d/e"), "a%26b%3Dc%3Fd%2Fe");
        assert_eq!(query_value("é"), "%C3%A9");
        assert_eq!(query_value(""), "");
    }

    #[test]
    fn worker_env_matches_what_the_sdk_expects() {
        let env: std::collections::HashMap<_, _> =
            worker_env("http://127.0.0.1:8080/", "ep1", "w1", "NVIDIA A100", "tok", 2_000).into_iter().collect();
        assert_eq!(env["RUNPOD_WEBHOOK_GET_JOB"], "http://127.0.0.1:8080/v2/ep1/job-take/$ID?gpu=NVIDIA+A100");
        assert_eq!(
            env["RUNPOD_WEBHOOK_POST_OUTPUT"],
            "http://127.0.0.1:8080/v2/ep1/job-done/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+A100"
        );
        assert_eq!(
            env["RUNPOD_WEBHOOK_POST_STREAM"],
            "http://127.0.0.1:8080/v2/ep1/job-stream/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+A100"
        );
        assert_eq!(env["RUNPOD_WEBHOOK_PING"], "http://127.0.0.1:8080/v2/ep1/ping/$RUNPOD_POD_ID?gpu=NVIDIA+A100");
        // Every URL already has a query: the SDK appends "&job_in_progress=…", "&isStream=…".
        for k in ["RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_POST_STREAM"] {
            assert!(env[k].contains('?'), "{k}");
        }
        // The SDK derives the stop channel from the take URL.
        assert!(env["RUNPOD_WEBHOOK_GET_JOB"].contains("/job-take/"));
        assert_eq!(
            (env["RUNPOD_POD_ID"].as_str(), env["RUNPOD_AI_API_KEY"].as_str(), env["RUNPOD_PING_INTERVAL"].as_str()),
            ("w1", "tok", "2000")
        );
        assert_eq!(env["RUNPOD_ENDPOINT_ID"], "ep1");
    }

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9/x",
            "http://localhost:1",
            "http://[::1]:80/v2",
            "https://LOCALHOST",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.5:8080",
            "http://sluice.internal",
            "http://128.0.0.1",
            "http://[::2]:80",
            "http://127.0.0.1.example.com",
            "http://user@10.1.1.1",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
        assert!(is_loopback_url("http://u:p@127.0.0.1:9"));
    }

    #[test]
    fn reports() {
        let r = |v: Value| parse_report(v.to_string().as_bytes());
        assert_eq!(
            r(json!({"output": {"a": 1}})),
            Ok(Report::Done { output: Some(json!({"a": 1})), error: None, stop_pod: false })
        );
        assert_eq!(
            r(json!({"output": 5, "stopPod": true})),
            Ok(Report::Done { output: Some(json!(5)), error: None, stop_pod: true })
        );
        assert_eq!(r(json!({})), Ok(Report::Done { output: None, error: None, stop_pod: false }));
        assert_eq!(
            r(json!({"output": null})),
            Ok(Report::Done { output: Some(Value::Null), error: None, stop_pod: false })
        );
        assert_eq!(
            r(json!({"error": "boom", "output": {"partial": 1}})),
            Ok(Report::Done { output: Some(json!({"partial": 1})), error: Some("boom".into()), stop_pod: false })
        );
        assert_eq!(
            r(json!({"error": {"code": 3}})),
            Ok(Report::Done { output: None, error: Some("{\"code\":3}".into()), stop_pod: false })
        );
        assert_eq!(r(json!({"error": ""})), Ok(Report::Done { output: None, error: None, stop_pod: false }));
        assert_eq!(r(json!({"status": "IN_PROGRESS", "output": "50%"})), Ok(Report::Progress(json!("50%"))));
        assert_eq!(r(json!({"status": "IN_PROGRESS"})), Ok(Report::Progress(Value::Null)));
        // A generator's end: the stream is over, the output is the aggregate (or []).
        assert_eq!(
            r(json!({"output": []})),
            Ok(Report::Done { output: Some(json!([])), error: None, stop_pod: false })
        );
        assert!(parse_report(b"output=1").is_err());
        assert!(parse_report(b"[1]").is_err());
        assert!(parse_report(b"").is_err());
        assert!(parse_report(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn chunks() {
        let c = |v: Value| parse_chunk(v.to_string().as_bytes());
        assert_eq!(c(json!({"output": "tok"})), Ok(Ok(json!("tok"))));
        assert_eq!(c(json!({"output": {"t": 1}})), Ok(Ok(json!({"t": 1}))));
        assert_eq!(c(json!({"error": "gen failed"})), Ok(Err("gen failed".into())));
        assert_eq!(c(json!({"error": {"x": 1}})), Ok(Err("{\"x\":1}".into())));
        assert_eq!(c(json!({"output": 1, "error": null})), Ok(Ok(json!(1))));
        assert!(c(json!({})).is_err());
        assert!(c(json!("x")).is_err());
        assert!(parse_chunk(b"{").is_err());
    }

    #[test]
    fn ping_job_ids() {
        assert_eq!(parse_job_ids(None), Vec::<String>::new());
        assert_eq!(parse_job_ids(Some("")), Vec::<String>::new());
        assert_eq!(parse_job_ids(Some("a")), vec!["a"]);
        assert_eq!(parse_job_ids(Some("a, b,,c ")), vec!["a", "b", "c"]);
        assert_eq!(parse_job_ids(Some(&"x".repeat(200))), Vec::<String>::new());
        assert_eq!(parse_job_ids(Some(&"j,".repeat(5000))).len(), 1024);
    }

    #[test]
    fn heartbeats() {
        assert_eq!(missed_pings(Millis(1_000), Millis(1_000), 1_000), 0);
        assert_eq!(missed_pings(Millis(1_000), Millis(1_999), 1_000), 0);
        assert_eq!(missed_pings(Millis(1_000), Millis(2_000), 1_000), 1);
        assert_eq!(missed_pings(Millis(1_000), Millis(4_000), 1_000), MISSED_PINGS_DEAD);
        assert_eq!(missed_pings(Millis(5_000), Millis(1_000), 1_000), 0, "clock behind: nothing missed");
        assert_eq!(missed_pings(Millis(0), Millis(10_000), 0), 10_000, "zero interval does not divide by zero");
    }

    #[test]
    fn stop_lists() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let held = |v: &[(&str, u8, u64)]| {
            v.iter()
                .map(|(j, n, at)| (j.to_string(), Held { tells: *n, last_told: Millis(*at) }))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let t = Millis(10_000);
        assert_eq!(jobs_to_stop(&held(&[("a", 0, 0), ("b", 0, 0)]), &s(&["a", "b"]), t), s(&[]));
        assert_eq!(jobs_to_stop(&held(&[("a", 0, 0), ("b", 0, 0)]), &s(&["b"]), t), s(&["a"]));
        assert_eq!(jobs_to_stop(&held(&[("b", 0, 0), ("a", 0, 0)]), &s(&[]), t), s(&["a", "b"]), "sorted");
        assert_eq!(jobs_to_stop(&held(&[]), &s(&["a"]), t), s(&[]));
        // Told a moment ago: not again yet; after RETELL_MS: again; after MAX_TELLS: never.
        assert_eq!(jobs_to_stop(&held(&[("a", 1, 9_000)]), &s(&[]), t), s(&[]));
        assert_eq!(jobs_to_stop(&held(&[("a", 1, 8_000)]), &s(&[]), t), s(&["a"]));
        assert_eq!(jobs_to_stop(&held(&[("a", 2, 0)]), &s(&[]), t), s(&["a"]));
        assert_eq!(jobs_to_stop(&held(&[("a", MAX_TELLS, 0)]), &s(&[]), t), s(&[]));
        // A clock that went back does not re-tell early.
        assert_eq!(jobs_to_stop(&held(&[("a", 1, 20_000)]), &s(&[]), t), s(&[]));
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(batch_size(None), 1);
        assert_eq!(batch_size(Some("4")), 4);
        assert_eq!(batch_size(Some("0")), 1);
        assert_eq!(batch_size(Some("-3")), 1);
        assert_eq!(batch_size(Some("x")), 1);
        assert_eq!(batch_size(Some("100000")), MAX_BATCH);
    }
}
