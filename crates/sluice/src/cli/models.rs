//! `sluice models`: where the models of your endpoints stand, and `sluice models fetch`, which
//! stages models into a cache directory the way the platform does (a Kubernetes worker Pod runs
//! it in its init container, into its node's cache).
use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use sluice_api::{ModelList, ModelNodeView};
use sluice_core::models::{ModelDraft, validate_models};
use sluice_models::{Cache, Hub, Progress};

use super::{Conn, args::ModelsCmd, print_json_or};
use crate::table;

/// `ready`, `downloading 3.1/14.9 GB (120 MB/s)`, `failed: …` on a node.
pub(super) fn node_state(n: &ModelNodeView) -> String {
    let gb = |b: u64| b as f64 / 1e9;
    match n.state.as_str() {
        "downloading" => format!(
            "downloading {:.1}/{:.1} GB ({:.0} MB/s) on {}",
            gb(n.bytes_done),
            gb(n.bytes_total),
            n.rate_bytes_per_sec as f64 / 1e6,
            n.node
        ),
        "failed" => format!("failed on {}: {}", n.node, n.error.as_deref().unwrap_or("unknown")),
        s => format!("{s} on {}", n.node),
    }
}

pub(super) async fn models(conn: Conn, cmd: ModelsCmd) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::List => {
            let v: ModelList = conn.client().get("/v1/models").await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .models
                    .iter()
                    .flat_map(|m| {
                        m.nodes.iter().map(|n| {
                            vec![
                                m.source.clone(),
                                m.commit.as_deref().map_or("-", |c| &c[..c.len().min(12)]).to_owned(),
                                n.node.clone(),
                                n.state.clone(),
                                format!("{:.2}/{:.2} GB", n.bytes_done as f64 / 1e9, n.bytes_total as f64 / 1e9),
                                m.endpoints.join(","),
                                n.error.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["MODEL", "COMMIT", "NODE", "STATE", "BYTES", "ENDPOINTS", "ERROR"], &rows)
                );
            })
        }
        ModelsCmd::Fetch { sources, cache, include, exclude, hf_endpoint } => {
            let drafts: Vec<ModelDraft> = sources
                .iter()
                .map(|source| ModelDraft {
                    source: source.clone(),
                    include: (!include.is_empty()).then(|| include.clone()),
                    exclude: (!exclude.is_empty()).then(|| exclude.clone()),
                })
                .collect();
            let specs = validate_models(&drafts).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))?;
            let roots = sluice_tls::client::roots(conn.ca_cert.as_deref()).context("--ca-cert")?;
            let endpoint = hf_endpoint.filter(|e| !e.is_empty());
            let hub = Hub::new(
                endpoint.as_deref().unwrap_or(sluice_models::hub::DEFAULT_ENDPOINT),
                sluice_tls::client::config(roots),
            );
            let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
            fetch(&hub, &cache, &specs, token.as_deref()).await
        }
    }
}

/// Stages each model, one after another, printing where it lies (relative to the cache).
async fn fetch(
    hub: &Hub,
    root: &Path,
    specs: &[sluice_core::models::ModelSpec],
    token: Option<&str>,
) -> anyhow::Result<()> {
    let cache = Cache::open(root).map_err(|e| anyhow::anyhow!("{e}"))?;
    for spec in specs {
        let what = spec.source.display();
        let progress = Progress::new();
        let shown = tokio::spawn(show_progress(what.clone(), progress.clone()));
        let result = cache.stage(hub, spec, token, &progress, sluice_control::now()).await;
        shown.abort();
        match result {
            Ok(st) => println!("{what}  {}  {} bytes  {}", st.commit.as_deref().unwrap_or("-"), st.bytes, st.path),
            Err(e) => bail!("staging {what} failed: {e}"),
        }
    }
    Ok(())
}

async fn show_progress(what: String, p: Arc<Progress>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (done, total) = p.get();
        let line = format!("{what}  {}", crate::progress::bar("downloading", done, total, ""));
        if line != last {
            crate::progress::note(line.trim_end());
            last = line;
        }
    }
}
