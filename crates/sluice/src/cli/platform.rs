//! What the platform offers and shows: `sluice gpus`, `templates`, `image …`, and `logs`.
use std::time::Duration;

use anyhow::bail;
use http::Method;
use sluice_api::{GpuInventory, ImageList, LogLineView, LogList, TemplateList};

use super::{Conn, args::ImageCmd, cell, print_json_or};
use crate::table;

pub(super) async fn gpus(conn: Conn) -> anyhow::Result<()> {
    let v: GpuInventory = conn.client().get("/v1/gpus").await?;
    print_json_or(&conn, &v, |v| {
        let source = match v.source.as_str() {
            "nvml" => "real GPUs found through NVML",
            _ => "simulated GPUs declared in the config",
        };
        println!("{source}");
        let mut rows = Vec::new();
        for n in &v.nodes {
            for g in &n.gpus {
                // Another account's worker shows as in use, without its ids.
                let worker = if g.worker.is_none() && g.in_use { "(in use)".into() } else { cell(&g.worker) };
                rows.push(vec![
                    n.name.clone(),
                    n.data_center.clone(),
                    g.index.to_string(),
                    g.gpu_type.clone(),
                    worker,
                    cell(&g.endpoint),
                ]);
            }
        }
        print!("{}", table::render(&["NODE", "DC", "GPU", "TYPE", "WORKER", "ENDPOINT"], &rows));
    })
}

/// `sluice certs`: the certificates HTTPS is served with; why one is not issued yet.
pub(super) async fn certs(conn: Conn) -> anyhow::Result<()> {
    let v: sluice_api::CertificateList = conn.client().get("/v1/certificates").await?;
    print_json_or(&conn, &v, |v| {
        if v.certificates.is_empty() {
            println!("no certificates (HTTPS is off, or nothing needs one yet)");
            return;
        }
        let rows: Vec<Vec<String>> = v
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.host.clone(),
                    c.source.clone(),
                    c.state.clone(),
                    cell(&c.expires_at),
                    cell(&c.issuer),
                    cell(&c.last_error),
                ]
            })
            .collect();
        print!("{}", table::render(&["HOST", "SOURCE", "STATE", "EXPIRES", "ISSUER", "LAST ERROR"], &rows));
        println!();
    })
}

pub(super) async fn templates(conn: Conn) -> anyhow::Result<()> {
    let v: TemplateList = conn.client().get("/v1/templates").await?;
    print_json_or(&conn, &v, |v| {
        for t in &v.templates {
            println!("{:<16} {}  [{}]", t.name, t.title, t.image);
            for p in &t.params {
                let d = match p.default.as_deref() {
                    None => "required".to_owned(),
                    Some("") => "optional".to_owned(),
                    Some(d) => format!("default {d}"),
                };
                println!("  --set {}=...  {} ({d})", p.name, p.description);
            }
        }
    })
}

pub(super) async fn image(conn: Conn, cmd: ImageCmd) -> anyhow::Result<()> {
    let c = conn.client();
    match cmd {
        ImageCmd::Prewarm { image, data_center, no_wait, registry } => {
            let input = sluice_api::PrewarmInput {
                image: image.clone(),
                data_center: data_center.clone(),
                registry_auth: registry.into_dto()?,
            };
            let v: ImageList = c.call(Method::POST, "/v1/images/prewarm", Some(&input)).await?;
            if no_wait {
                return print_json_or(&conn, &v, |_| {});
            }
            // Poll the list, keeping only this image's rows for the data center asked.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
            let mut display = crate::progress::PullDisplay::default();
            loop {
                let all: ImageList = c.get("/v1/images").await?;
                let mine: Vec<_> = all
                    .images
                    .into_iter()
                    .filter(|p| p.image == image)
                    .filter(|p| data_center.as_ref().is_none_or(|dc| p.data_center == *dc))
                    .collect();
                if mine.is_empty() {
                    bail!("no node (of data center {}) takes images", data_center.as_deref().unwrap_or("any"));
                }
                if display.update(&mine)? {
                    return Ok(());
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("timed out waiting for {image}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        ImageCmd::List => {
            let v: ImageList = c.get("/v1/images").await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .images
                    .iter()
                    .map(|p| {
                        vec![
                            p.image.clone(),
                            p.node.clone(),
                            p.data_center.clone(),
                            p.state.clone(),
                            format!("{}/{}", p.bytes_done, p.bytes_total),
                            cell(&p.error),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["IMAGE", "NODE", "DC", "STATE", "BYTES", "ERROR"], &rows));
            })
        }
    }
}

fn print_log_line(json: bool, l: &LogLineView) {
    if json {
        println!("{}", serde_json::to_string(l).unwrap_or_default());
    } else {
        println!("{}  {:<12}  {:<8}  {}", l.time, l.worker.as_deref().unwrap_or("-"), l.stream, l.line);
    }
}

pub(super) async fn logs(conn: Conn, path: String, follow: bool) -> anyhow::Result<()> {
    let client = conn.client();
    if !follow {
        let v: LogList = client.get(&path).await?;
        for l in &v.lines {
            print_log_line(conn.json, l);
        }
        if v.dropped > 0 {
            eprintln!(
                "({} lines of this endpoint were dropped: the platform could not store them fast enough)",
                v.dropped
            );
        }
        return Ok(());
    }
    let mut last = None;
    loop {
        let json = conn.json;
        let followed = client
            .follow_events(&format!("{path}&follow=true"), last.clone(), |_, data| {
                if let Ok(l) = serde_json::from_str::<LogLineView>(data) {
                    print_log_line(json, &l);
                }
            })
            .await;
        match followed {
            Ok(id) => last = id.or(last),
            // The API refused (bad query, unknown endpoint): no point in retrying.
            Err(e) if e.downcast_ref::<crate::client::ApiError>().is_some() => return Err(e),
            Err(e) => eprintln!("log stream interrupted ({e:#}); reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
