//! `sluice trace export`, `sluice sim --endpoint` and `sluice audit` (issue 20): the recorded
//! traffic and decisions of an endpoint, read through the API.
use anyhow::bail;
use clap::Subcommand;
use sluice_api::{AuditView, ReplayView};
use sluice_core::pull::query_value;

use super::Conn;

#[derive(Subcommand)]
pub(super) enum TraceCmd {
    /// Print an endpoint's recorded requests as a trace CSV (`arrival_s,service_s`, what `sluice
    /// sim --trace` reads), or its recorded start (or wake) durations in the cold-start format.
    Export {
        /// The endpoint.
        id: String,
        /// From: an age (10m, 24h, 7d), RFC 3339 or Unix ms.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Until (default now).
        #[arg(long)]
        until: Option<String>,
        /// The start durations instead (`cold_start_s`, for `--cold-start-file`).
        #[arg(long, conflicts_with = "wakes")]
        starts: bool,
        /// The wake durations instead (`wake_s`, for `--wake-file`).
        #[arg(long)]
        wakes: bool,
    },
}

fn window(since: &str, until: Option<&str>) -> String {
    let mut q = format!("since={}", query_value(since));
    if let Some(u) = until {
        q.push_str(&format!("&until={}", query_value(u)));
    }
    q
}

pub(super) async fn trace(conn: &Conn, cmd: TraceCmd) -> anyhow::Result<()> {
    let TraceCmd::Export { id, since, until, starts, wakes } = cmd;
    let kind = if starts {
        "starts"
    } else if wakes {
        "wakes"
    } else {
        "requests"
    };
    let csv = conn
        .client()
        .get_text(&format!("/v1/endpoints/{}/trace?{}&kind={kind}", query_value(&id), window(&since, until.as_deref())))
        .await?;
    print!("{csv}");
    Ok(())
}

pub(super) async fn sim_endpoint(conn: &Conn, id: &str, a: &crate::sim::SimArgs) -> anyhow::Result<()> {
    let mut path = format!(
        "/v1/endpoints/{}/replay?{}&policy={}",
        query_value(id),
        window(&a.since, a.until.as_deref()),
        query_value(&a.policy)
    );
    if let Some(s) = a.slo_p99_secs {
        path.push_str(&format!("&slo_p99_secs={s}"));
    }
    crate::progress::note("replaying the endpoint's recorded traffic through the policies");
    let v: ReplayView = conn.client().get(&path).await?;
    if !conn.json {
        println!(
            "{} requests from {} to {}, {} recorded cold starts; `actual` is what happened.\n",
            v.requests, v.since, v.until, v.cold_starts
        );
    }
    crate::sim::print_results(&v.results, conn.json)
}

pub(super) async fn audit(conn: &Conn, id: &str, since: &str, until: Option<&str>) -> anyhow::Result<()> {
    let v: AuditView =
        conn.client().get(&format!("/v1/endpoints/{}/audit?{}", query_value(id), window(since, until))).await?;
    if conn.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}/{} decisions reproduce ({} to {})", v.reproduced, v.decisions - v.unchecked, v.since, v.until);
        if v.unchecked > 0 {
            println!("{} decisions were recorded without what they started from and were not checked", v.unchecked);
        }
        for m in &v.mismatches {
            println!("event {} at {}: {}", m.event_id, m.at, m.detail);
        }
    }
    if !v.mismatches.is_empty() {
        bail!("{} of {} decisions did not reproduce", v.mismatches.len(), v.decisions - v.unchecked);
    }
    Ok(())
}
