//! `sluice endpoint …` and `sluice deploy`.
use std::{collections::BTreeMap, time::Duration};

use anyhow::bail;
use http::Method;
use sluice_api::{EndpointList, EndpointStatusView, EndpointView, ScalingEventList, WorkerList};

use super::{
    Conn,
    args::{EndpointCmd, RegistryArgs},
    cell, print_json_or,
};
use crate::table;

pub(super) fn print_endpoint(v: &EndpointView) {
    let w = &v.workers;
    let lines = [
        ("id", v.id.clone()),
        ("name", v.name.clone()),
        ("status", v.status.clone()),
        ("url", v.url.clone()),
        ("path url", v.path_url.clone()),
        (
            "workers",
            format!(
                "{} ready, {} starting, {} pending, {} draining, {} sleeping (desired {}; active {}, max {})",
                w.ready, w.starting, w.pending, w.draining, w.sleeping, w.desired, v.active_workers, v.max_workers
            ),
        ),
        ("gpus", format!("{} x {}", v.gpus_per_worker, v.gpu_type)),
        ("data center", v.data_center.clone()),
        ("image", cell(&v.image)),
        ("start command", cell(&v.start_command)),
        ("health check", v.health_check_path.clone()),
        (
            "timeouts",
            format!(
                "idle {} s, execution {} s, startup {} s",
                v.idle_timeout_secs, v.execution_timeout_secs, v.startup_timeout_secs
            ),
        ),
        ("load balancing", v.load_balancing.clone()),
        (
            "autoscaling",
            format!(
                "{} on {} (target {}, cap {} per worker; up +{}%/{} s, down after {} s; queue {} for {} s)",
                v.scaling_policy,
                v.scaling_signal,
                v.scaling_target,
                v.concurrency_per_worker,
                v.scale_up_max_percent,
                v.scale_up_window_secs,
                v.scale_down_delay_secs,
                v.queue_capacity,
                v.queue_timeout_secs
            ),
        ),
        (
            "sleep",
            match (&v.sleep_path, &v.wake_path, v.max_sleeping) {
                (Some(s), Some(w), n) if n > 0 => {
                    format!("up to {n} asleep (POST {s}, wake POST {w}; stopped after {} s asleep)", v.sleep_ttl_secs)
                }
                _ => "off".into(),
            },
        ),
        (
            "certificate",
            v.certificate.as_ref().map_or_else(
                || "-".into(),
                |c| {
                    format!(
                        "{} ({}; {}){}",
                        c.state,
                        c.source,
                        cell(&c.expires_at),
                        c.last_error.as_deref().map_or(String::new(), |e| format!(": {e}"))
                    )
                },
            ),
        ),
    ];
    for (k, val) in lines {
        println!("{k:<15} {val}");
    }
    if !v.models.is_empty() {
        println!("models");
        for m in &v.models {
            for n in &m.nodes {
                println!("  {}  {}", m.source, super::models::node_state(n));
            }
        }
    }
    if !v.env.is_empty() {
        println!("env");
        for (k, val) in &v.env {
            println!("  {k}={val}");
        }
    }
}

pub(super) async fn deploy(
    conn: Conn,
    template: String,
    set: Vec<String>,
    registry: RegistryArgs,
) -> anyhow::Result<()> {
    let mut values = BTreeMap::new();
    for kv in &set {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set: expected KEY=VALUE (an argument without '=')") };
        values.insert(k.to_owned(), v.to_owned());
    }
    let input = sluice_api::DeployInput { set: values, registry_auth: registry.into_dto()? };
    let v: EndpointView =
        conn.client().call(Method::POST, &format!("/v1/templates/{template}/deploy"), Some(&input)).await?;
    print_json_or(&conn, &v, print_endpoint)
}

pub(super) async fn endpoint(conn: Conn, cmd: EndpointCmd) -> anyhow::Result<()> {
    let c = conn.client();
    let show = |v: &EndpointView| print_json_or(&conn, v, print_endpoint);
    match cmd {
        EndpointCmd::Create { spec, wait, wait_timeout } => {
            let input = spec.into_input()?;
            let v: EndpointView = c.call(Method::POST, "/v1/endpoints", Some(&input)).await?;
            if wait {
                let timeout = Duration::from_secs(wait_timeout);
                crate::progress::wait_pulls(&c, &v.id, timeout).await?;
                crate::progress::wait_models(&c, &v.id, timeout).await?;
                crate::progress::wait_ready(&c, &v.id, v.active_workers.min(1), timeout).await?;
                show(&c.get(&format!("/v1/endpoints/{}", v.id)).await?)?;
            } else {
                show(&v)?;
            }
        }
        EndpointCmd::Update { id, spec, wait, wait_timeout } => {
            let input = spec.into_input()?;
            let v: EndpointView = c.call(Method::PATCH, &format!("/v1/endpoints/{id}"), Some(&input)).await?;
            if wait {
                let timeout = Duration::from_secs(wait_timeout);
                crate::progress::wait_pulls(&c, &id, timeout).await?;
                crate::progress::wait_models(&c, &id, timeout).await?;
                crate::progress::wait_rollout(&c, &id, timeout).await?;
                show(&c.get(&format!("/v1/endpoints/{id}")).await?)?;
            } else {
                show(&v)?;
            }
        }
        EndpointCmd::Get { id } => show(&c.get(&format!("/v1/endpoints/{id}")).await?)?,
        EndpointCmd::Stop { id } => {
            show(&c.call(Method::POST, &format!("/v1/endpoints/{id}/stop"), None::<&()>).await?)?
        }
        EndpointCmd::Start { id } => {
            show(&c.call(Method::POST, &format!("/v1/endpoints/{id}/start"), None::<&()>).await?)?;
        }
        EndpointCmd::Delete { id } => {
            c.call::<()>(Method::DELETE, &format!("/v1/endpoints/{id}"), None::<&()>).await?;
            #[derive(serde::Serialize)]
            struct Deleted<'a> {
                deleted: &'a str,
            }
            let gone = Deleted { deleted: &id };
            print_json_or(&conn, &gone, |g| println!("deleted endpoint {}", g.deleted))?;
        }
        EndpointCmd::List => {
            let v: EndpointList = c.get("/v1/endpoints").await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .endpoints
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            e.name.clone(),
                            e.status.clone(),
                            format!("{}/{}", e.workers.ready, e.workers.desired),
                            format!("{}x{}", e.gpus_per_worker, e.gpu_type),
                            e.url.clone(),
                        ]
                    })
                    .collect();
                println!("{}", table::render(&["ID", "NAME", "STATUS", "READY/DESIRED", "GPUS", "URL"], &rows));
            })?;
        }
        EndpointCmd::Events { id, limit, before } => {
            let mut path = format!("/v1/endpoints/{id}/events?limit={limit}");
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let v: ScalingEventList = c.get(&path).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .events
                    .iter()
                    .map(|e| vec![e.id.to_string(), e.at.clone(), format!("{} -> {}", e.from, e.to), e.reason.clone()])
                    .collect();
                println!("{}", table::render(&["ID", "AT", "WORKERS", "REASON"], &rows));
            })?;
        }
        EndpointCmd::Status { id } => {
            let v: EndpointStatusView = c.get(&format!("/v1/endpoints/{id}/status")).await?;
            print_json_or(&conn, &v, |v| {
                let w = &v.workers;
                println!("status                              {}", v.status);
                println!("current concurrency limit           {}", v.current_concurrency_limit);
                println!("fully autoscaled concurrency limit  {}", v.fully_autoscaled_concurrency_limit);
                let rpm = v.max_requests_per_minute.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                println!("max requests per minute             {rpm}");
                println!("running requests                    {}", v.running_requests);
                println!("queued requests                     {}", v.queued_requests);
                println!(
                    "workers                             {} ready, {} starting, {} pending, {} draining, {} sleeping (desired {})",
                    w.ready, w.starting, w.pending, w.draining, w.sleeping, w.desired
                );
            })?;
        }
        EndpointCmd::Workers { id } => {
            let v: WorkerList = c.get(&format!("/v1/endpoints/{id}/workers")).await?;
            print_json_or(&conn, &v, |v| {
                let rows: Vec<Vec<String>> = v
                    .workers
                    .iter()
                    .map(|w| {
                        let gpus: Vec<String> = w.gpus.iter().map(ToString::to_string).collect();
                        vec![
                            w.id.clone(),
                            w.state.clone(),
                            if gpus.is_empty() { "-".into() } else { gpus.join(",") },
                            cell(&w.address),
                            cell(&w.pid),
                            w.created_at.clone(),
                            cell(&w.start),
                            cell(&w.reason),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table::render(&["ID", "STATE", "GPUS", "ADDRESS", "PID", "CREATED", "LAST START", "REASON"], &rows)
                );
            })?;
        }
    }
    Ok(())
}
