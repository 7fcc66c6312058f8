//! `sluice sim`: replay a trace through the autoscaling policies (R4.8).
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use sluice_core::{
    autoscale::{
        Preset, ScalingPolicy,
        sim::{ColdStart, SimConfig, SimResult, SimSleep, parse_cold_starts, parse_trace, simulate},
        tune,
    },
    catalog,
};

#[derive(Args, Clone)]
pub struct SimArgs {
    /// Trace CSV: arrival_s,service_s[,endpoint] with a header.
    #[arg(long, required_unless_present = "endpoint")]
    pub trace: Option<PathBuf>,
    /// Instead: replay this endpoint's own recorded traffic, with its own settings and recorded
    /// start times, on the platform; the table ends with a row `actual`: what really happened.
    #[arg(long, conflicts_with_all = ["trace", "cold_start_secs", "cold_start_file", "wake_secs", "wake_file"])]
    pub endpoint: Option<String>,
    /// With --endpoint: from (an age such as 24h, RFC 3339 or Unix ms) …
    #[arg(long, default_value = "24h", requires = "endpoint")]
    pub since: String,
    /// … until (default now).
    #[arg(long, requires = "endpoint")]
    pub until: Option<String>,
    /// Policies, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// Concurrent requests one worker serves (hard cap and concurrency target).
    #[arg(long, default_value_t = 8)]
    pub concurrency_per_worker: u32,
    /// Fixed cold start in seconds.
    #[arg(long, conflicts_with = "cold_start_file")]
    pub cold_start_secs: Option<f64>,
    /// Empirical cold starts: a CSV with a cold_start_s column.
    #[arg(long)]
    pub cold_start_file: Option<PathBuf>,
    /// GPU type, for the price per GPU-second.
    #[arg(long, default_value = "A100")]
    pub gpu_type: String,
    #[arg(long, default_value_t = 1)]
    pub gpus_per_worker: u32,
    #[arg(long, default_value_t = 0)]
    pub active_workers: u32,
    #[arg(long, default_value_t = 100)]
    pub max_workers: u32,
    /// Seconds an autoscaled worker stays idle (seed 001 / seed 000 defaults: 10).
    #[arg(long, default_value_t = 10)]
    pub idle_timeout_secs: u64,
    /// Scale-up rate limit (seed 000: +200% per 60 s window).
    #[arg(long, default_value_t = 200)]
    pub scale_up_max_percent: u32,
    /// Gateway queue capacity and wait timeout.
    #[arg(long, default_value_t = 1000)]
    pub queue_capacity: usize,
    #[arg(long, default_value_t = 600)]
    pub queue_timeout_secs: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sleeping workers: at most this many sleep instead of stopping (0: none).
    #[arg(long, default_value_t = 0)]
    pub max_sleeping: u32,
    /// How long a wake takes, seconds (with --max-sleeping).
    #[arg(long, conflicts_with = "wake_file")]
    pub wake_secs: Option<f64>,
    /// Empirical wake times: a CSV with a wake_s column (or one number per line).
    #[arg(long)]
    pub wake_file: Option<PathBuf>,
    /// A sleeper stops this long after it went to sleep.
    #[arg(long, default_value_t = 3600)]
    pub sleep_ttl_secs: u64,
    /// The SLO policy's p99 target, end to end (with `--policy slo`).
    #[arg(long)]
    pub slo_p99_secs: Option<f64>,
}

pub fn presets(list: &str) -> anyhow::Result<Vec<Preset>> {
    if list == "all" {
        return Ok(Preset::ALL.to_vec());
    }
    list.split(',')
        .map(|n| {
            Preset::parse(n.trim()).with_context(|| format!("unknown policy {n:?}; known: all, {}", Preset::names()))
        })
        .collect()
}

/// The SLO target, required with `--policy slo` and refused without it.
fn slo_target(a: &SimArgs, configs: &[SimConfig]) -> anyhow::Result<Option<f64>> {
    let wants = configs.iter().any(|c| c.policy.preset == Preset::Slo);
    match a.slo_p99_secs {
        None if wants => bail!("--policy slo needs --slo-p99-secs (the p99 target, seconds)"),
        Some(_) if !wants => bail!("--slo-p99-secs needs --policy slo (or a list with slo)"),
        Some(s) if !(s.is_finite() && s > 0.0) => bail!("--slo-p99-secs must be a number above 0, got {s}"),
        s => Ok(s),
    }
}

pub fn config(a: &SimArgs, preset: Preset) -> anyhow::Result<SimConfig> {
    let cold_start = match (&a.cold_start_file, a.cold_start_secs) {
        (Some(f), _) => {
            parse_cold_starts(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        (None, Some(s)) if s.is_finite() && s >= 0.0 => ColdStart::Fixed { ms: (s * 1000.0) as u64 },
        (None, Some(s)) => bail!("--cold-start-secs must be >= 0, got {s}"),
        (None, None) => ColdStart::Fixed { ms: 30_000 },
    };
    let price = catalog::per_second(&a.gpu_type).with_context(|| format!("unknown GPU type {:?}", a.gpu_type))?;
    if a.concurrency_per_worker == 0 {
        bail!("--concurrency-per-worker must be at least 1");
    }
    if a.max_workers == 0 || a.max_workers < a.active_workers {
        bail!("--max-workers must be at least max(1, --active-workers)");
    }
    let mut policy = ScalingPolicy::new(preset, a.active_workers, a.max_workers, a.concurrency_per_worker);
    policy.idle_timeout_ms = a.idle_timeout_secs * 1000;
    if a.scale_up_max_percent == 0 {
        bail!("--scale-up-max-percent must be at least 1");
    }
    policy.scale_up_max_percent = a.scale_up_max_percent;
    let sleep = if a.max_sleeping > 0 {
        let wake = match (&a.wake_file, a.wake_secs) {
            (Some(f), _) => {
                let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                parse_cold_starts(&text.replacen("wake_s", "cold_start_s", 1))
                    .map_err(|e| anyhow::anyhow!("{}: {}", f.display(), e.to_string().replace("cold_start", "wake")))?
            }
            (None, Some(s)) if s.is_finite() && s >= 0.0 => ColdStart::Fixed { ms: (s * 1000.0) as u64 },
            (None, Some(s)) => bail!("--wake-secs must be >= 0, got {s}"),
            (None, None) => bail!("--max-sleeping needs --wake-secs or --wake-file (how long a wake takes)"),
        };
        if a.max_sleeping > a.max_workers {
            bail!("--max-sleeping must not exceed --max-workers (sleepers count against it)");
        }
        Some(SimSleep {
            max_sleeping: a.max_sleeping,
            wake,
            ttl_ms: a.sleep_ttl_secs * 1000,
            usd_per_gpu_second: price * sluice_core::billing::DEFAULT_SLEEPING_SHARE,
        })
    } else {
        if a.wake_secs.is_some() || a.wake_file.is_some() {
            bail!("--wake-secs and --wake-file need --max-sleeping above 0");
        }
        None
    };
    Ok(SimConfig {
        policy,
        cold_start,
        sleep,
        queue_capacity: a.queue_capacity,
        queue_timeout_ms: a.queue_timeout_secs * 1000,
        gpus_per_worker: a.gpus_per_worker,
        usd_per_gpu_second: price,
        seed: a.seed,
    })
}

/// `json`: one JSON object per policy per line; `quiet`: no progress on stderr.
pub fn run(a: SimArgs, json: bool, quiet: bool) -> anyhow::Result<()> {
    let path = a.trace.clone().context("--trace (or --endpoint) is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let trace = parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let configs = presets(&a.policy)?.into_iter().map(|p| config(&a, p)).collect::<anyhow::Result<Vec<_>>>()?;
    let slo = slo_target(&a, &configs)?;
    // Policies are independent: simulate them on all cores, report in the order asked.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(configs.len()).max(1);
    let mut results: Vec<Option<SimResult>> = vec![None; configs.len()];
    crate::progress::set_quiet(quiet);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = configs.len();
    std::thread::scope(|s| {
        for (t, chunk) in results.chunks_mut(configs.len().div_ceil(threads)).enumerate() {
            let configs = &configs;
            let trace = &trace;
            let start = t * configs.len().div_ceil(threads);
            let done = &done;
            s.spawn(move || {
                for (k, slot) in chunk.iter_mut().enumerate() {
                    let r = match configs[start + k].policy.preset {
                        Preset::Slo => tune::simulate_slo(&configs[start + k], trace, slo.unwrap_or(f64::MAX)),
                        _ => simulate(&configs[start + k], trace),
                    };
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    crate::progress::note(&format!("simulated {n}/{total} policies (last: {})", r.policy));
                    *slot = Some(r);
                }
            });
        }
    });
    let results: Vec<SimResult> = results.into_iter().map(|r| r.expect("every policy simulated")).collect();
    print_results(&results, json)
}

/// The rows as JSON lines, or as the Markdown table.
pub fn print_results(results: &[SimResult], json: bool) -> anyhow::Result<()> {
    if json {
        for r in results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!("{}", table(results));
    }
    Ok(())
}

/// The results as a Markdown table.
pub fn table(results: &[SimResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.policy.clone(),
                r.requests.to_string(),
                r.completed.to_string(),
                format!("{} ({} full, {} timeout)", r.rejected, r.rejected_queue_full, r.rejected_timeout),
                format!("{:.2}", r.p50_s),
                format!("{:.2}", r.p95_s),
                format!("{:.2}", r.p99_s),
                r.cold_start_hits.to_string(),
                format!("{} ({} wakes)", r.wake_hits, r.wakes),
                format!("{:.0}", r.gpu_seconds),
                format!("{:.0}", r.sleeping_gpu_seconds),
                format!("{:.2}", r.cost_usd),
                format!("{:.2}", r.busy_fraction),
                format!("{:.1}", r.scale_events_per_hour),
            ]
        })
        .collect();
    let header = [
        "policy",
        "requests",
        "completed",
        "rejected",
        "p50 s",
        "p95 s",
        "p99 s",
        "cold-start waits",
        "of which wakes",
        "GPU-s",
        "asleep GPU-s",
        "cost $",
        "busy",
        "scale ev/h",
    ];
    let mut out =
        format!("| {} |\n|{}|", header.join(" | "), header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in rows {
        out.push_str(&format!("\n| {} |", r.join(" | ")));
    }
    out
}

#[derive(Args)]
pub struct PlanArgs {
    /// Average seconds one request takes (seed 001's "latency").
    #[arg(long, required_unless_present = "trace")]
    pub latency_secs: Option<f64>,
    /// Expected requests per minute.
    #[arg(long, required_unless_present = "trace")]
    pub rpm: Option<f64>,
    /// Requests per minute at peak (default: --rpm).
    #[arg(long)]
    pub peak_rpm: Option<f64>,
    #[arg(long, default_value = "A100")]
    pub gpu_type: String,
    #[arg(long, default_value_t = 1)]
    pub gpus_per_worker: u32,
    #[arg(long, default_value_t = 1)]
    pub concurrency_per_worker: u32,
    /// Instead: search settings with the simulator on this trace …
    #[arg(long, requires = "p99_secs", conflicts_with_all = ["latency_secs", "rpm"])]
    pub trace: Option<PathBuf>,
    /// … for the cheapest that keeps p99 under this, with no rejection.
    #[arg(long)]
    pub p99_secs: Option<f64>,
    /// Policies to search (with --trace).
    #[arg(long, default_value = "all")]
    pub policy: String,
    #[arg(long)]
    pub cold_start_file: Option<PathBuf>,
    #[arg(long)]
    pub cold_start_secs: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

pub fn plan(a: PlanArgs) -> anyhow::Result<()> {
    let hourly = catalog::per_hour(&a.gpu_type).with_context(|| format!("unknown GPU type {:?}", a.gpu_type))?;
    let per_s = catalog::per_second(&a.gpu_type).expect("same catalog");
    let Some(trace_path) = &a.trace else {
        let p = sluice_core::autoscale::plan::plan(
            a.latency_secs.expect("required by clap"),
            a.rpm.expect("required by clap"),
            a.peak_rpm,
            a.concurrency_per_worker,
            a.gpus_per_worker,
            hourly,
            per_s,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if a.json {
            println!("{}", serde_json::to_string(&p)?);
        } else {
            println!(
                "Each worker serves about {:.1} requests per minute.\nRecommended: active_workers = {}, max_workers = {} ({}-{}).\nMonthly cost on {}: ${:.2} (baseline only) to ${:.2} (every autoscaled worker busy all month).",
                p.rpm_per_worker,
                p.active_workers,
                p.max_workers,
                p.active_workers,
                p.max_workers,
                a.gpu_type,
                p.monthly_cost_min_usd,
                p.monthly_cost_max_usd
            );
        }
        return Ok(());
    };
    let p99 = a.p99_secs.expect("required by clap");
    let text = std::fs::read_to_string(trace_path).with_context(|| format!("reading {}", trace_path.display()))?;
    let trace = parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", trace_path.display()))?;
    let base = SimArgs {
        trace: Some(trace_path.clone()),
        endpoint: None,
        since: "24h".into(),
        until: None,
        policy: a.policy.clone(),
        concurrency_per_worker: a.concurrency_per_worker,
        cold_start_secs: a.cold_start_secs,
        cold_start_file: a.cold_start_file.clone(),
        gpu_type: a.gpu_type.clone(),
        gpus_per_worker: a.gpus_per_worker,
        active_workers: 0,
        max_workers: 100,
        idle_timeout_secs: 10,
        scale_up_max_percent: 200,
        queue_capacity: 1000,
        queue_timeout_secs: 600,
        seed: 1,
        max_sleeping: 0,
        wake_secs: None,
        wake_file: None,
        sleep_ttl_secs: 3600,
        slo_p99_secs: None,
    };
    let presets = presets(&a.policy)?;
    if presets.contains(&Preset::Slo) {
        bail!("--policy slo is not a fixed setting to search; plan searches the fixed policies");
    }
    let settings = tune::grid(base.max_workers);
    match tune::cheapest(&config(&base, Preset::Default)?, &presets, &settings, &trace, p99) {
        Some(tune::Found { preset, setting, result: r }) => {
            let (active, max, idle) = (setting.active_workers, setting.max_workers, setting.idle_timeout_secs);
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"policy": preset.as_str(), "active_workers": active, "max_workers": max, "idle_timeout_secs": idle, "result": r})
                );
            } else {
                println!(
                    "Cheapest setting with p99 <= {p99} s and no rejection: scaling_policy = {}, active_workers = {active}, max_workers = {max}, idle_timeout_secs = {idle}\n{}",
                    preset.as_str(),
                    table(std::slice::from_ref(&r))
                );
            }
            Ok(())
        }
        None => bail!("no searched setting keeps p99 under {p99} s without rejections; try a higher --p99-secs"),
    }
}
