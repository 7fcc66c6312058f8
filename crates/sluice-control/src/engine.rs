//! Engine metrics: a worker's Prometheus text (its `metrics_path`), read for the engine's own
//! load (`sluice_core::engine`: the names, a parser that cannot panic, the figures).
use sluice_core::engine::{EngineFigures, figures, samples};

/// The largest metrics page read.
pub const MAX_BYTES: usize = 4 << 20;

/// The engine's figures in `text`, by the names of `engine`.
pub fn parse(engine: &str, text: &str) -> Option<EngineFigures> {
    figures(engine, samples(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_text_is_read_and_bad_text_gives_nothing() {
        let text = "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n\
                    vllm:num_requests_running{model_name=\"m\"} 2.0\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 5\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n";
        assert_eq!(
            parse("vllm", text),
            Some(EngineFigures { running: 2.0, waiting: 5.0, kv_cache_percent: Some(50.0) })
        );
        for bad in [
            "",
            "garbage",
            "vllm:num_requests_running{",
            "vllm:num_requests_running{a=\"} 1",
            "\u{0}\u{ffff}",
            "x 1e999999",
        ] {
            assert_eq!(parse("vllm", bad), None, "{bad:?}");
        }
    }
}
