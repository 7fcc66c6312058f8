//! What an LLM engine says of its own load, read from its Prometheus text (`metrics_path`):
//! requests running and waiting inside it and its KV-cache usage. Built-in name sets for vLLM,
//! SGLang and TGI; any other engine names its three metrics. Pure: the names and the figures;
//! the scrape is the control plane's.
use serde::{Deserialize, Serialize};

/// The metric names an engine's load is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNames {
    pub running: Vec<&'static str>,
    pub waiting: Vec<&'static str>,
    /// KV-cache usage: a fraction (0-1) or a percent, whichever the engine reports.
    pub kv_cache: Vec<&'static str>,
}

/// An engine's load as scraped.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EngineFigures {
    pub running: f64,
    pub waiting: f64,
    /// Percent (0-100), when the engine reports it.
    pub kv_cache_percent: Option<f64>,
}

/// The engines Sluice knows by name.
pub const KNOWN: [&str; 3] = ["vllm", "sglang", "tgi"];

/// The names of a known engine.
pub fn preset(engine: &str) -> Option<EngineNames> {
    Some(match engine {
        "vllm" => EngineNames {
            running: vec!["vllm:num_requests_running"],
            waiting: vec!["vllm:num_requests_waiting"],
            kv_cache: vec!["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        },
        "sglang" => EngineNames {
            running: vec!["sglang:num_running_reqs"],
            waiting: vec!["sglang:num_queue_reqs"],
            kv_cache: vec!["sglang:token_usage"],
        },
        "tgi" => {
            EngineNames { running: vec!["tgi_batch_current_size"], waiting: vec!["tgi_queue_size"], kv_cache: vec![] }
        }
        _ => return None,
    })
}

/// A metric name as Prometheus allows it.
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        && s.len() <= 200
}

/// Checks an endpoint's `engine`: a known engine, or `RUNNING,WAITING[,KV_CACHE]` metric names.
pub fn validate(engine: &str) -> Result<(), String> {
    if KNOWN.contains(&engine) {
        return Ok(());
    }
    let parts: Vec<&str> = engine.split(',').map(str::trim).collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|p| is_metric_name(p)) {
        Ok(())
    } else {
        Err(format!(
            "must be {} or three metric names RUNNING,WAITING[,KV_CACHE] (letters, digits, '_' and ':')",
            KNOWN.join(", ")
        ))
    }
}

/// The samples `(name, value)` of a Prometheus text page, comment lines and timestamps
/// skipped. A line it cannot read is skipped; nothing here can panic on any input. (Written
/// here rather than taken from `prometheus-parse`, whose names cannot hold the `:` that vLLM's
/// and SGLang's names have.)
pub fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines().filter_map(|line| {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
        let (name, mut rest) = line.split_at(end);
        if name.is_empty() {
            return None;
        }
        if rest.starts_with('{') {
            // Labels: up to the `}` outside quotes.
            let (mut quoted, mut escaped, mut close) = (false, false, None);
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '}' if !quoted => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            rest = &rest[close? + 1..];
        }
        let value = rest.split_whitespace().next()?;
        Some((name, value.parse::<f64>().ok()?))
    })
}

/// The figures from samples `(name, value)` of a scrape: running and waiting summed over their
/// label sets, the KV-cache usage averaged (a value up to 1 read as a fraction). `None` when
/// the engine reported neither running nor waiting.
pub fn figures<'a>(engine: &str, samples: impl Iterator<Item = (&'a str, f64)>) -> Option<EngineFigures> {
    let custom: Vec<String> = engine.split(',').map(|s| s.trim().to_owned()).collect();
    let names = preset(engine);
    let is = |which: usize, name: &str| match &names {
        Some(n) => [&n.running, &n.waiting, &n.kv_cache][which].contains(&name),
        None => custom.get(which).is_some_and(|c| c == name),
    };
    let (mut running, mut waiting, mut kv, mut kv_n, mut seen) = (0.0, 0.0, 0.0, 0u32, false);
    for (name, v) in samples.filter(|(_, v)| v.is_finite() && *v >= 0.0) {
        if is(0, name) {
            running += v;
            seen = true;
        } else if is(1, name) {
            waiting += v;
            seen = true;
        } else if is(2, name) {
            kv += if v <= 1.0 { v * 100.0 } else { v.min(100.0) };
            kv_n += 1;
        }
    }
    seen.then(|| EngineFigures { running, waiting, kv_cache_percent: (kv_n > 0).then(|| kv / f64::from(kv_n)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_read_line_by_line_and_never_panics() {
        let text = "# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{model_name=\"m\",x=\"a}b\\\"c\"} 2.0\n\
                    plain 5 1700000000000\n  spaced 1e3\nbad{unclosed=\"x 1\nnovalue\n{x=\"y\"} 3\n";
        let got: Vec<(&str, f64)> = samples(text).collect();
        assert_eq!(got, vec![("vllm:num_requests_running", 2.0), ("plain", 5.0), ("spaced", 1000.0)]);
        // Arbitrary bytes: no panic, whatever comes back.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab:_{}\"\\ =,\n#0123456789.eE+-NaInf\t";
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(x % 80) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()] as char);
            }
            let _ = samples(&s).count();
            let _ = figures("vllm", samples(&s));
        }
    }

    #[test]
    fn engines_are_read_by_their_own_names() {
        let s = [
            ("vllm:num_requests_running", 3.0),
            ("vllm:num_requests_waiting", 2.0),
            ("vllm:num_requests_waiting", 1.0),
            ("vllm:kv_cache_usage_perc", 0.25),
            ("other", 9.0),
            ("vllm:num_requests_running", f64::NAN),
        ];
        assert_eq!(
            figures("vllm", s.iter().copied()),
            Some(EngineFigures { running: 3.0, waiting: 3.0, kv_cache_percent: Some(25.0) })
        );
        assert_eq!(figures("sglang", s.iter().copied()), None, "no SGLang names there");
        let tgi = [("tgi_batch_current_size", 4.0), ("tgi_queue_size", 0.0)];
        assert_eq!(
            figures("tgi", tgi.iter().copied()),
            Some(EngineFigures { running: 4.0, waiting: 0.0, kv_cache_percent: None })
        );
        let custom = [("my_running", 1.0), ("my_waiting", 5.0), ("my_kv", 70.0)];
        assert_eq!(
            figures("my_running, my_waiting, my_kv", custom.iter().copied()),
            Some(EngineFigures { running: 1.0, waiting: 5.0, kv_cache_percent: Some(70.0) })
        );
        for (e, ok) in [
            ("vllm", true),
            ("a,b", true),
            ("a,b,c", true),
            ("a", false),
            ("a,b c", false),
            ("1a,b", false),
            ("", false),
        ] {
            assert_eq!(validate(e).is_ok(), ok, "{e}");
        }
    }
}
