//! Waiting with visible progress: image pulls and model stagings as progress bars (`sluice image
//! prewarm`, `sluice endpoint create --wait`), then workers becoming ready, and rolling updates
//! (`sluice endpoint update --wait`). Progress goes to stderr, and only when stderr is a terminal
//! (or `SLUICE_PROGRESS=always`) and `--quiet` was not given.
use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::bail;
use sluice_api::{EndpointView, ImagePullView, ModelView, WorkerList};

use crate::client::ApiClient;

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress at all.
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Whether progress is shown.
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed)
        && (std::io::stderr().is_terminal() || std::env::var("SLUICE_PROGRESS").is_ok_and(|v| v == "always"))
}

/// Prints a progress line on stderr when progress is shown.
pub fn note(line: &str) {
    if enabled() {
        eprintln!("{line}");
    }
}

/// One line for a pull: `[#########...........]  45%  12.3/27.0 MB  node local`.
pub fn bar(state: &str, done: u64, total: u64, node: &str) -> String {
    const W: usize = 30;
    let mb = |b: u64| b as f64 / 1e6;
    match state {
        "pulling" | "downloading" if total > 0 => {
            let frac = (done as f64 / total as f64).clamp(0.0, 1.0);
            let fill = (frac * W as f64).round() as usize;
            format!(
                "[{}{}] {:>3.0}%  {:.1}/{:.1} MB  {node}",
                "#".repeat(fill),
                ".".repeat(W - fill),
                frac * 100.0,
                mb(done),
                mb(total)
            )
        }
        "pulling" | "downloading" => format!("[{}] {state}  {node}", ".".repeat(W)),
        "ready" => format!("[{}] ready  {node}", "#".repeat(W)),
        other => format!("[{}] {other}  {node}", ".".repeat(W)),
    }
}

/// Redraws pull progress on stderr (in place on a terminal, a line per change otherwise).
#[derive(Default)]
pub struct PullDisplay {
    last: String,
}

impl PullDisplay {
    /// Shows `pulls`: `Ok(true)` once all are ready, an error naming the image and the reason
    /// once one failed, `Ok(false)` while in progress.
    pub fn update(&mut self, pulls: &[ImagePullView]) -> anyhow::Result<bool> {
        Ok(show(&pull_rows(pulls), &mut self.last, std::io::stderr().is_terminal())?.is_some())
    }
}

/// One line of progress: an image on a node, or a model on a node.
struct Row<'a> {
    what: &'a str,
    state: &'a str,
    done: u64,
    total: u64,
    node: &'a str,
    error: Option<&'a str>,
}

fn pull_rows(pulls: &[ImagePullView]) -> Vec<Row<'_>> {
    pulls
        .iter()
        .map(|p| Row {
            what: &p.image,
            state: &p.state,
            done: p.bytes_done,
            total: p.bytes_total,
            node: &p.node,
            error: p.error.as_deref(),
        })
        .collect()
}

fn model_rows(models: &[ModelView]) -> Vec<Row<'_>> {
    models
        .iter()
        .flat_map(|m| {
            m.nodes.iter().map(|n| Row {
                what: &m.source,
                state: &n.state,
                done: n.bytes_done,
                total: n.bytes_total,
                node: &n.node,
                error: n.error.as_deref(),
            })
        })
        .collect()
}

fn show(rows: &[Row<'_>], last: &mut String, tty: bool) -> anyhow::Result<Option<bool>> {
    let lines: Vec<String> =
        rows.iter().map(|r| format!("{}  {}", r.what, bar(r.state, r.done, r.total, r.node))).collect();
    let text = lines.join("\n");
    if text != *last && enabled() {
        let mut err = std::io::stderr();
        if tty && !last.is_empty() {
            // Move up over the previous lines and redraw them.
            write!(err, "\x1b[{}F\x1b[J", last.lines().count())?;
        }
        writeln!(err, "{text}")?;
        *last = text;
    }
    if let Some(f) = rows.iter().find(|r| r.state == "failed") {
        let verb = if f.what.contains("://") { "staging" } else { "pulling" };
        bail!("{verb} {} failed: {}", f.what, f.error.unwrap_or("unknown"));
    }
    Ok((!rows.is_empty() && rows.iter().all(|r| r.state == "ready")).then_some(true))
}

/// Polls the endpoint until every model it lists is staged on every node (as a progress bar per
/// model and node); models staged by the workers themselves (Kubernetes) are not waited for.
pub async fn wait_models(c: &ApiClient, id: &str, timeout: Duration) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v: EndpointView = c.get(&format!("/v1/endpoints/{id}")).await?;
        let rows = model_rows(&v.models);
        if rows.iter().all(|r| r.state == "staged_by_worker") || show(&rows, &mut last, tty)?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {} s waiting for the models to be staged", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the endpoint until every pull of its image is ready; returns it as it is then.
pub async fn wait_pulls(c: &ApiClient, id: &str, timeout: Duration) -> anyhow::Result<EndpointView> {
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v: EndpointView = c.get(&format!("/v1/endpoints/{id}")).await?;
        if v.image_pulls.is_empty() || show(&pull_rows(&v.image_pulls), &mut last, tty)?.is_some() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {} s waiting for the image", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After the image: waits until the endpoint has `want` ready workers, printing changes.
pub async fn wait_ready(c: &ApiClient, id: &str, want: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let v: EndpointView = c.get(&format!("/v1/endpoints/{id}")).await?;
        let w = &v.workers;
        let line = format!("workers: {} ready, {} starting, {} pending", w.ready, w.starting, w.pending);
        if line != last {
            note(&line);
            last = line;
        }
        if w.ready >= want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let ws: WorkerList = c.get(&format!("/v1/endpoints/{id}/workers")).await?;
            let reasons: Vec<String> = ws
                .workers
                .iter()
                .filter_map(|w| Some(format!("{} {}: {}", w.id, w.state, w.reason.as_deref()?)))
                .collect();
            bail!("timed out after {} s waiting for a ready worker; {}", timeout.as_secs(), reasons.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// After an update: waits until no worker of an older version is left (the rolling replacement
/// is over) and the desired workers are ready, printing each step.
pub async fn wait_rollout(c: &ApiClient, id: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let v: EndpointView = c.get(&format!("/v1/endpoints/{id}")).await?;
        let w = &v.workers;
        let want = if v.status == "running" { w.desired } else { 0 };
        let line = format!(
            "rolling update: {}/{want} workers on the new version ready, {} of the old version still running",
            w.updated, w.outdated
        );
        if line != last {
            note(&line);
            last.clone_from(&line);
        }
        if w.outdated == 0 && w.updated >= want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {} s; {line}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(
            bar("pulling", 50, 100, "n1"),
            format!("[{}{}]  50%  0.0/0.0 MB  n1", "#".repeat(15), ".".repeat(15))
        );
        assert!(bar("pulling", 0, 0, "n").contains("pulling"));
        assert!(bar("ready", 0, 0, "n").starts_with(&format!("[{}]", "#".repeat(30))));
        assert!(bar("pulling", 200, 100, "n").contains("100%"), "clamped");
        assert!(bar("pending", 0, 0, "n").contains("pending"));
        assert!(bar("downloading", 25, 100, "n").contains(" 25%"));
    }
}
