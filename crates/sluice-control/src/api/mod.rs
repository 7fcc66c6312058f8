//! The `/v1` REST API (R1.1): endpoint CRUD, stop/start, workers, and the OpenAPI document.
//! Every `/v1` call needs a bearer API key; every error is `{"error": {...}}` JSON.
mod accounts;
mod certs;
mod extract;
mod insight;
mod logs;
mod models;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sluice_api::{
    DeployInput, EndpointInput, EndpointList, EndpointView, ErrorBody, ImageList, ImagePullView, NetworkVolumeDto,
    PrewarmInput, ScalingEventList, ScalingEventView, TemplateList, TemplateParamView, TemplateView, WorkerCounts,
    WorkerList, WorkerView,
};
use sluice_api::{GpuInventory, GpuView, NodeView};
use sluice_core::{EndpointDraft, EndpointId, EndpointSpec, EndpointStatus, keys::Scope, rfc3339, secrets, templates};
use sluice_store::{EndpointRecord, WorkerRecord};
use utoipa::OpenApi;

pub use self::extract::JsonBody;
use crate::{AppError, AppState, auth, images::PullState, new_id, now};

/// Who is calling, from their API key: their account, and what they may see (`Scope::All` for
/// the admin). Handlers list and load through `scope`, never around it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: String,
    pub scope: Scope,
}

impl Caller {
    fn is_admin(&self) -> bool {
        self.scope == Scope::All
    }
}

type S = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/endpoints", get(list_endpoints).post(create_endpoint))
        .route("/endpoints/{id}", get(get_endpoint).patch(update_endpoint).delete(delete_endpoint))
        .route("/endpoints/{id}/stop", post(stop_endpoint))
        .route("/endpoints/{id}/start", post(start_endpoint))
        .route("/endpoints/{id}/workers", get(list_workers))
        .route("/endpoints/{id}/status", get(endpoint_status))
        .route("/endpoints/{id}/events", get(insight::list_events))
        .route("/endpoints/{id}/trace", get(insight::trace))
        .route("/endpoints/{id}/traffic", get(insight::traffic))
        .route("/endpoints/{id}/replay", get(insight::replay))
        .route("/endpoints/{id}/audit", get(insight::audit))
        .route("/endpoints/{id}/shadow", get(insight::shadow))
        .route("/endpoints/{id}/logs", get(logs::endpoint_logs))
        .route("/endpoints/{id}/series", get(endpoint_series))
        .route("/accounts", get(accounts::list_accounts).post(accounts::create_account))
        .route("/accounts/{name}", axum::routing::patch(accounts::update_account))
        .route("/accounts/{name}/credit", post(accounts::add_credit))
        .route("/accounts/{name}/events", get(accounts::account_events))
        .route("/keys", get(accounts::list_keys).post(accounts::create_key))
        .route("/keys/{id}", axum::routing::delete(accounts::revoke_key))
        .route("/usage", get(accounts::usage))
        .route("/gpus", get(list_gpus))
        .route("/certificates", get(certs::list_certificates))
        .route("/models", get(models::list_models))
        .route("/images", get(list_images))
        .route("/images/prewarm", post(prewarm_image))
        .route("/templates", get(list_templates))
        .route("/templates/{name}/deploy", post(deploy_template))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // Prometheus scrapes with the admin key (`authorization` in its scrape config): the figures
    // cover every account.
    let metrics = Router::new()
        .route("/metrics", get(crate::metrics::metrics))
        .route_layer(middleware::from_fn(require_admin))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/healthz", get(|| async { "ok" }))
        // The status page (R7.1, R7.4): static assets built into the binary; the page signs in
        // with an API key and reads /v1.
        .route("/", get(|| async { asset("text/html; charset=utf-8", include_str!("../dashboard/index.html")) }))
        // The console's scripts: helpers and lists, charts, endpoint forms, one endpoint's page.
        .route("/ui/app.js", get(|| async { js(include_str!("../dashboard/app.js")) }))
        .route("/ui/charts.js", get(|| async { js(include_str!("../dashboard/charts.js")) }))
        .route("/ui/forms.js", get(|| async { js(include_str!("../dashboard/forms.js")) }))
        .route("/ui/endpoint.js", get(|| async { js(include_str!("../dashboard/endpoint.js")) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", include_str!("../dashboard/app.css")) }))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .with_state(state)
}

fn js(body: &'static str) -> Response {
    asset("text/javascript; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            (axum::http::header::HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}

/// `router` behind the admin key (the internal routes gateways call).
pub fn admin_only(router: Router, state: Arc<AppState>) -> Router {
    router
        .route_layer(middleware::from_fn(require_admin))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

async fn require_admin(req: Request, next: Next) -> Result<Response, AppError> {
    match req.extensions().get::<Caller>() {
        Some(c) if c.is_admin() => Ok(next.run(req).await),
        _ => Err(AppError::Forbidden("only the admin key may read /metrics".into())),
    }
}

/// Requires a valid API key and records the caller.
async fn require_key(State(st): S, mut req: Request, next: Next) -> Result<Response, AppError> {
    let key = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::key_from_header)
        .ok_or(AppError::Unauthorized)?;
    let rec = st.store.find_key(&auth::digest(key)).await?.ok_or(AppError::Unauthorized)?;
    let scope = Scope::of_key(&rec.account, &rec.role);
    req.extensions_mut().insert(Caller { account: rec.account, scope });
    Ok(next.run(req).await)
}

fn pull_view(s: &crate::images::ImageStatus) -> ImagePullView {
    let (done, total) = match &s.state {
        PullState::Pulling { done, total } => (*done, *total),
        _ => (0, 0),
    };
    ImagePullView {
        image: s.image.clone(),
        node: s.node.clone(),
        data_center: s.data_center.clone(),
        state: s.state.name().into(),
        bytes_done: done,
        bytes_total: total,
        error: match &s.state {
            PullState::Failed(e) => Some(e.clone()),
            _ => None,
        },
        updated_at: rfc3339(s.updated_at),
    }
}

fn prewarm_spec(st: &AppState, account: &str, s: &EndpointSpec) {
    if let Some(image) = &s.image {
        st.images.prewarm(account, image, s.registry_auth.clone(), Some(&s.data_center));
    }
    // Its models too, with its HF_TOKEN for gated and private repositories.
    st.models.stage(s);
}

/// The GPU inventory as `scope` sees it: every GPU of every node (capacity is shared), and
/// which worker and endpoint hold a GPU only where they are the caller's own; another
/// account's use shows as `in_use` alone.
#[utoipa::path(get, path = "/v1/gpus", tag = "gpus", responses((status = 200, body = GpuInventory)))]
async fn list_gpus(State(st): S, Extension(caller): Extension<Caller>) -> Result<Json<GpuInventory>, AppError> {
    let workers = st.store.list_unfinished_workers().await?;
    let owners: std::collections::HashMap<EndpointId, String> =
        st.store.list_endpoints(&Scope::All).await?.into_iter().map(|e| (e.id, e.account)).collect();
    let holder = |node: &str, gpu: u32| {
        workers.iter().find(|w| w.state.has_runtime() && w.node.as_deref() == Some(node) && w.gpus.contains(&gpu))
    };
    let nodes = st
        .cfg
        .nodes
        .iter()
        .map(|n| NodeView {
            name: n.name.clone(),
            data_center: n.data_center.clone(),
            gpus: n
                .gpus
                .iter()
                .map(|g| {
                    let h = holder(&n.name, g.index);
                    // A worker whose endpoint is gone (being stopped) belongs to nobody visible.
                    let mine = h.filter(|w| {
                        caller.is_admin() || owners.get(&w.endpoint_id).is_some_and(|a| caller.scope.admits(a))
                    });
                    GpuView {
                        index: g.index,
                        gpu_type: g.gpu_type.clone(),
                        in_use: h.is_some(),
                        worker: mine.map(|w| w.id.to_string()),
                        endpoint: mine.map(|w| w.endpoint_id.to_string()),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Json(GpuInventory { source: st.cfg.gpu_source.clone(), nodes }))
}

#[utoipa::path(get, path = "/v1/images", tag = "images", responses((status = 200, body = ImageList)))]
async fn list_images(State(st): S, Extension(caller): Extension<Caller>) -> Json<ImageList> {
    Json(ImageList { images: st.images.list(&caller.scope).iter().map(pull_view).collect() })
}

#[utoipa::path(post, path = "/v1/images/prewarm", tag = "images", request_body = PrewarmInput,
    responses((status = 202, body = ImageList), (status = 422, body = ErrorBody)))]
async fn prewarm_image(
    State(st): S,
    Extension(caller): Extension<Caller>,
    JsonBody(input): JsonBody<PrewarmInput>,
) -> Result<(StatusCode, Json<ImageList>), AppError> {
    let image = input.image.trim();
    if image.is_empty() || image.len() > 512 || image.contains(char::is_whitespace) {
        return Err(AppError::InvalidField {
            field: Some("image".into()),
            message: "must be a non-empty image reference without spaces (at most 512 bytes)".into(),
        });
    }
    if let Some(dc) = &input.data_center
        && !st.cfg.data_centers().contains(dc)
    {
        return Err(AppError::InvalidField {
            field: Some("data_center".into()),
            message: format!("unknown data center; configured: {}", st.cfg.data_centers().join(", ")),
        });
    }
    let auth = input.registry_auth.map(|a| sluice_core::RegistryAuth {
        server: a.server,
        username: a.username,
        password: a.password,
    });
    let v = st.images.prewarm(&caller.account, image, auth, input.data_center.as_deref());
    Ok((StatusCode::ACCEPTED, Json(ImageList { images: v.iter().map(pull_view).collect() })))
}

fn view(st: &AppState, e: &EndpointRecord) -> EndpointView {
    let s = &e.spec;
    let host = sluice_core::tls::endpoint_host(e.id.as_str(), &s.data_center, &st.cfg.domain);
    let path_url = match (&st.cfg.tls.api_host, st.cfg.tls.enabled) {
        (Some(api), true) => format!("{}e/{}/", st.cfg.gateway_url(api), e.id),
        _ => format!("http://{}/e/{}/", st.cfg.gateway_addr, e.id),
    };
    let counts = st.counts.load().get(&e.id).cloned().unwrap_or(WorkerCounts::default());
    EndpointView {
        id: e.id.to_string(),
        name: s.name.clone(),
        status: e.status.as_str().into(),
        url: st.cfg.gateway_url(&host),
        certificate: st.certs.for_endpoint(&host),
        path_url,
        image: s.image.clone(),
        // A command line may carry a URL with a password (`--db postgres://app:…@db`).
        start_command: s.start_command.as_deref().map(secrets::mask_url_credentials),
        shell: s.shell.clone(),
        data_center: s.data_center.clone(),
        http_port: s.http_port,
        env: s.env.iter().map(|(k, v)| (k.clone(), secrets::display_value(k, v))).collect(),
        network_volume: s
            .network_volume
            .as_ref()
            .map(|v| NetworkVolumeDto { name: v.name.clone(), mount_path: v.mount_path.clone() }),
        registry_server: s.registry_auth.as_ref().map(|a| a.server.clone()),
        public: s.public,
        kind: match s.mode.kind() {
            sluice_core::endpoint::EndpointKind::Http => "http".into(),
            sluice_core::endpoint::EndpointKind::Queue => "queue".into(),
        },
        delivery: s.mode.delivery().as_str().into(),
        job_path: s.mode.job_path().unwrap_or("/").into(),
        account: e.account.clone(),
        image_pulls: s
            .image
            .as_deref()
            .map(|i| st.images.status(i, Some(&s.data_center)).iter().map(pull_view).collect())
            .unwrap_or_default(),
        health_check_path: s.health_check_path.clone(),
        idle_timeout_secs: s.timeouts.idle_timeout_secs,
        execution_timeout_secs: s.timeouts.execution_timeout_secs,
        startup_timeout_secs: s.timeouts.startup_timeout_secs,
        active_workers: s.workers.active_workers,
        max_workers: s.workers.max_workers,
        gpus_per_worker: s.workers.gpus_per_worker,
        gpu_type: s.workers.gpu_type.clone(),
        load_balancing: s.limits.load_balancing.as_str().into(),
        scaling_policy: s.autoscale.scaling_policy.as_str().into(),
        scaling_signal: s.autoscale.scaling_signal.as_str().into(),
        scaling_target: s.autoscale.scaling_target,
        concurrency_per_worker: s.limits.concurrency_per_worker,
        scale_up_window_secs: s.autoscale.scale_up_window_secs,
        scale_up_max_percent: s.autoscale.scale_up_max_percent,
        scale_down_delay_secs: s.autoscale.scale_down_delay_secs,
        scale_down_max_percent: s.autoscale.scale_down_max_percent,
        queue_capacity: s.limits.queue_capacity,
        queue_timeout_secs: s.limits.queue_timeout_secs,
        max_requests_per_minute: s.limits.max_requests_per_minute,
        sleep_path: s.sleep.sleep_path.clone(),
        wake_path: s.sleep.wake_path.clone(),
        max_sleeping: s.sleep.max_sleeping,
        sleep_ttl_secs: s.sleep.sleep_ttl_secs,
        models: models::views(st, &[e]),
        served_models: s.served_models.clone(),
        session_header: s.session_header.clone().unwrap_or_else(|| "x-session-id".into()),
        metrics_path: s.metrics_path.clone(),
        engine: s.engine.clone(),
        trace_retention_hours: s.insight.trace_retention_hours,
        trace_max_mb: s.insight.trace_max_mb,
        shadow_policies: s.insight.shadow_policies.iter().map(|p| p.as_str().to_owned()).collect(),
        slo_p99_secs: s.insight.slo_p99_secs,
        slo_mode: s.insight.slo_mode.as_str().into(),
        workers: counts,
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
    }
}

fn worker_view(w: &WorkerRecord) -> WorkerView {
    WorkerView {
        id: w.id.to_string(),
        endpoint_id: w.endpoint_id.to_string(),
        state: w.state.as_str().into(),
        reason: w.reason.clone(),
        node: w.node.clone(),
        gpus: w.gpus.clone(),
        address: w.port.map(|p| format!("127.0.0.1:{p}")),
        pid: w.pid,
        created_at: rfc3339(w.created_at),
        launched_at: w.launched_at.map(rfc3339),
        ready_at: w.ready_at.map(rfc3339),
        stopped_at: w.stopped_at.map(rfc3339),
        phases: w
            .phases
            .iter()
            .map(|p| sluice_api::PhaseView { phase: p.phase.as_str().into(), at: rfc3339(p.at) })
            .collect(),
        start: sluice_core::worker::describe_start(w.created_at, &w.phases),
    }
}

/// Loads an endpoint the caller may see; anything else is 404 (existence is not revealed).
pub(super) async fn load(st: &AppState, caller: &Caller, id: &str) -> Result<EndpointRecord, AppError> {
    let missing = || AppError::NotFound(format!("endpoint {id:?} not found"));
    let id = EndpointId::parse(id).map_err(|_| missing())?;
    let e = st.store.get_endpoint(&id).await?.ok_or_else(missing)?;
    if !caller.scope.admits(&e.account) {
        return Err(missing());
    }
    Ok(e)
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints",
    responses((status = 200, body = EndpointList), (status = 401, body = ErrorBody)))]
async fn list_endpoints(State(st): S, Extension(caller): Extension<Caller>) -> Result<Json<EndpointList>, AppError> {
    let all = st.store.list_endpoints(&caller.scope).await?;
    Ok(Json(EndpointList { endpoints: all.iter().map(|e| view(&st, e)).collect() }))
}

#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = EndpointInput,
    responses((status = 201, body = EndpointView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    JsonBody(input): JsonBody<EndpointInput>,
) -> Result<(StatusCode, Json<EndpointView>), AppError> {
    create(&st, &caller, EndpointDraft::from(input)).await
}

/// A `model` name routes to one endpoint of an account: none of `spec`'s served models may be
/// served by another endpoint of `account` (409 naming the name's place, not repeating it).
async fn served_models_free(
    st: &AppState,
    account: &str,
    spec: &EndpointSpec,
    except: Option<&EndpointId>,
) -> Result<(), AppError> {
    if spec.served_models.is_empty() {
        return Ok(());
    }
    let others = st.store.list_endpoints(&sluice_core::keys::Scope::Account(account.to_owned())).await?;
    for (i, name) in spec.served_models.iter().enumerate() {
        if let Some(o) = others.iter().find(|o| Some(&o.id) != except && o.spec.served_models.contains(name)) {
            return Err(AppError::Conflict(format!("served_models[{i}] is already served by endpoint {}", o.id)));
        }
    }
    Ok(())
}

/// What a draft is validated against: the platform's offer and the account's quota.
async fn validation(st: &AppState, account: &str) -> Result<sluice_core::ValidationContext, AppError> {
    let mut v = st.cfg.validation();
    if let Some(a) = st.store.get_account(account).await? {
        v.max_workers_quota = a.max_workers_quota;
    }
    Ok(v)
}

async fn create(
    st: &AppState,
    caller: &Caller,
    draft: EndpointDraft,
) -> Result<(StatusCode, Json<EndpointView>), AppError> {
    let spec = EndpointSpec::validate(draft, &validation(st, &caller.account).await?)?;
    served_models_free(st, &caller.account, &spec, None).await?;
    accounts::require_credit(st, &caller.account, &spec).await?;
    let t = now();
    let rec = EndpointRecord {
        id: EndpointId::generate(new_id()),
        account: caller.account.clone(),
        spec,
        status: EndpointStatus::Running,
        generation: 1,
        created_at: t,
        updated_at: t,
        version: 0,
    };
    st.store.create_endpoint(&rec).await?;
    tracing::info!(endpoint = %rec.id, name = %rec.spec.name, "endpoint created");
    prewarm_spec(st, &rec.account, &rec.spec);
    st.settle().await;
    Ok((StatusCode::CREATED, Json(view(st, &rec))))
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates", responses((status = 200, body = TemplateList)))]
async fn list_templates() -> Json<TemplateList> {
    let templates = templates::TEMPLATES
        .iter()
        .map(|t| TemplateView {
            name: t.name.into(),
            title: t.title.into(),
            description: t.description.into(),
            image: t.image.into(),
            http_port: t.http_port,
            health_check_path: t.health_check_path.into(),
            gpus_per_worker: t.gpus_per_worker,
            params: t
                .params
                .iter()
                .map(|p| TemplateParamView {
                    name: p.name.into(),
                    description: p.description.into(),
                    default: p.default.map(|d| d.replace("{template}", t.name)),
                })
                .collect(),
        })
        .collect();
    Json(TemplateList { templates })
}

#[utoipa::path(post, path = "/v1/templates/{name}/deploy", tag = "templates", params(("name" = String, Path)),
    request_body = DeployInput,
    responses((status = 201, body = EndpointView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn deploy_template(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<DeployInput>,
) -> Result<(StatusCode, Json<EndpointView>), AppError> {
    let t = templates::find(&name).ok_or_else(|| {
        let known: Vec<&str> = templates::TEMPLATES.iter().map(|t| t.name).collect();
        AppError::NotFound(format!("template {name:?} does not exist; templates: {}", known.join(", ")))
    })?;
    let mut draft = t.render(&input.set)?;
    draft.registry_auth = input.registry_auth.map(|a| sluice_core::RegistryAuth {
        server: a.server,
        username: a.username,
        password: a.password,
    });
    create(&st, &caller, draft).await
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
async fn get_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, AppError> {
    let e = load(&st, &caller, &id).await?;
    Ok(Json(view(&st, &e)))
}

#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)), request_body = EndpointInput,
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<EndpointInput>,
) -> Result<Json<EndpointView>, AppError> {
    let patch = EndpointDraft::from(input);
    // An update is "the spec as stored + the patch", written only over the version it was read
    // at; when another change landed in between, it is read again and the patch reapplied.
    let mut tries = 0;
    let e = loop {
        let mut e = load(&st, &caller, &id).await?;
        let draft = e.spec.to_draft().overlay(patch.clone());
        let spec = EndpointSpec::validate(draft, &validation(&st, &e.account).await?)?;
        served_models_free(&st, &e.account, &spec, Some(&e.id)).await?;
        let cost =
            |s: &EndpointSpec| (s.workers.active_workers * s.workers.gpus_per_worker, s.workers.gpu_type.clone());
        if cost(&e.spec) != cost(&spec) && e.status == EndpointStatus::Running {
            accounts::require_credit(&st, &e.account, &spec).await?;
        }
        let prewarm = (&e.spec.image, &e.spec.data_center) != (&spec.image, &spec.data_center);
        if e.spec.workers_differ(&spec) {
            e.generation += 1;
        }
        e.spec = spec;
        e.updated_at = now();
        match st.store.update_endpoint_spec(&e).await {
            Ok(()) => {
                e.version += 1;
                if prewarm {
                    prewarm_spec(&st, &e.account, &e.spec);
                }
                break e;
            }
            Err(sluice_store::Error::Stale(_)) if tries < 3 => tries += 1,
            Err(other) => return Err(other.into()),
        }
    };
    st.settle().await;
    // The status as it is now (a stop or the credit cut-off may have happened meanwhile).
    let e = st.store.get_endpoint(&e.id).await?.unwrap_or(e);
    Ok(Json(view(&st, &e)))
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let e = load(&st, &caller, &id).await?;
    st.store.delete_endpoint(&e.id).await?;
    tracing::info!(endpoint = %e.id, "endpoint deleted");
    st.settle().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop or start: a status change from the status read, so a change that happened meanwhile
/// (the credit cut-off, another stop or start) is seen and decided on again, never overwritten.
async fn set_status(
    st: &AppState,
    caller: &Caller,
    id: &str,
    status: EndpointStatus,
) -> Result<Json<EndpointView>, AppError> {
    for _ in 0..3 {
        let e = load(st, caller, id).await?;
        if e.status == status {
            return Ok(Json(view(st, &e)));
        }
        if status == EndpointStatus::Running {
            accounts::require_credit(st, &e.account, &e.spec).await?;
        }
        if st.store.set_endpoint_status(&e.id, e.status, status, now()).await? {
            st.settle().await;
            let e = st.store.get_endpoint(&e.id).await?.unwrap_or(e);
            return Ok(Json(view(st, &e)));
        }
    }
    Err(AppError::Conflict("the endpoint's status keeps changing; retry".into()))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/stop", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
async fn stop_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, AppError> {
    set_status(&st, &caller, &id, EndpointStatus::Stopped).await
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/start", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
async fn start_endpoint(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, AppError> {
    set_status(&st, &caller, &id, EndpointStatus::Running).await
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/workers", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = WorkerList), (status = 404, body = ErrorBody)))]
async fn list_workers(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<WorkerList>, AppError> {
    let e = load(&st, &caller, &id).await?;
    let ws = st.store.list_workers(&e.id, 100).await?;
    Ok(Json(WorkerList { workers: ws.iter().map(worker_view).collect() }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/series", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = sluice_api::LoadSeries), (status = 404, body = ErrorBody)))]
async fn endpoint_series(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<sluice_api::LoadSeries>, AppError> {
    let e = load(&st, &caller, &id).await?;
    Ok(Json(sluice_api::LoadSeries { step_ms: crate::series::STEP_MS, points: st.series.get(&e.id) }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/status", tag = "endpoints", params(("id" = String, Path)),
    responses((status = 200, body = sluice_api::EndpointStatusView), (status = 404, body = ErrorBody)))]
async fn endpoint_status(
    State(st): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<sluice_api::EndpointStatusView>, AppError> {
    let e = load(&st, &caller, &id).await?;
    let c = st.counts.load().get(&e.id).cloned().unwrap_or_default();
    let cpw = u64::from(e.spec.limits.concurrency_per_worker);
    let figures = st.plane.figures();
    let f = figures.endpoints.iter().find(|f| f.endpoint.as_ref() == Some(&e.id));
    let rejected = |limit: &str| f.map_or(0, |f| f.rejected.iter().filter(|(l, _)| *l == limit).map(|(_, n)| n).sum());
    let ms = |q: f64| f.and_then(|f| f.total.quantile(q)).map(|s| s * 1000.0);
    let llm_ms = |h: fn(&sluice_core::metrics::LlmFigures) -> &sluice_core::metrics::Histogram, q: f64| {
        f.and_then(|f| h(&f.llm).quantile(q)).map(|s| s * 1000.0)
    };
    Ok(Json(sluice_api::EndpointStatusView {
        requests_total: f.map_or(0, |f| f.codes.iter().map(|(_, n)| n).sum()),
        rate_limited_total: rejected("rate_limit"),
        concurrency_limited_total: rejected("concurrency_limit"),
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        ttft_p50_ms: llm_ms(|l| &l.ttft, 0.5),
        ttft_p99_ms: llm_ms(|l| &l.ttft, 0.99),
        itl_p50_ms: llm_ms(|l| &l.itl, 0.5),
        itl_p99_ms: llm_ms(|l| &l.itl, 0.99),
        output_tokens_total: f.map_or(0, |f| f.llm.output_tokens),
        streams_total: f.map_or(0, |f| f.llm.streams),
        id: e.id.to_string(),
        status: e.status.as_str().into(),
        current_concurrency_limit: u64::from(c.ready) * cpw,
        fully_autoscaled_concurrency_limit: u64::from(e.spec.workers.max_workers) * cpw,
        max_requests_per_minute: e.spec.limits.max_requests_per_minute,
        running_requests: c.running,
        queued_requests: c.queued,
        workers: c,
    }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice control API", description = "Serverless GPU endpoints: endpoints, workers."),
    paths(list_endpoints, create_endpoint, get_endpoint, update_endpoint, delete_endpoint, stop_endpoint, start_endpoint, list_workers, insight::list_events, insight::trace, insight::traffic, insight::replay, insight::audit, insight::shadow, list_templates, deploy_template, list_images, prewarm_image, list_gpus, endpoint_status, accounts::create_account, accounts::list_accounts, accounts::update_account, accounts::create_key, accounts::list_keys, accounts::revoke_key, accounts::usage, accounts::add_credit, accounts::account_events, logs::endpoint_logs, endpoint_series, certs::list_certificates, models::list_models),
    components(schemas(sluice_api::ModelInput, sluice_api::ModelView, sluice_api::ModelNodeView, sluice_api::ModelList, sluice_api::CertificateView, sluice_api::CertificateList, sluice_api::EndpointCertificate, sluice_api::LoadPoint, sluice_api::LoadSeries, sluice_api::LogLineView, sluice_api::LogList, sluice_api::CreditInput, sluice_api::AccountEventView, sluice_api::AccountEventList, sluice_api::UsageReport, sluice_api::UsageRowView, sluice_api::EndpointStatusView, sluice_api::AccountView, sluice_api::AccountList, sluice_api::AccountInput, sluice_api::AccountCreated, sluice_api::NewKey, sluice_api::KeyView, sluice_api::KeyList, sluice_api::KeyInput, GpuInventory, NodeView, GpuView, ImageList, ImagePullView, PrewarmInput, DeployInput, TemplateList, TemplateView, TemplateParamView, EndpointInput, EndpointView, EndpointList, WorkerView, WorkerList, sluice_api::PhaseView, WorkerCounts, NetworkVolumeDto, ErrorBody, ScalingEventView, ScalingEventList, sluice_api::ReplayView, sluice_api::AuditView, sluice_api::AuditMismatch, sluice_api::ShadowView, sluice_api::ShadowLine, sluice_api::TrafficView)),
    modifiers(&BearerAuth, &Described),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = openapi.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every response gets a description (OpenAPI requires one): the status's reason phrase where
/// the annotation gave none. Every operation documents the errors it can answer: 401 (no or a
/// bad key), 400 (a query or body that does not parse), 404 (a path naming nothing the caller
/// may see), 413/415 (a body too large, or not JSON), 422 (a body of the wrong shape, or a
/// value out of its range).
struct Described;

fn error_response() -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

impl utoipa::Modify for Described {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, path::ParameterIn};
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                // The errors every operation can answer, by what it takes.
                let params = op.parameters.as_deref().unwrap_or_default();
                let is_in =
                    |want: ParameterIn| params.iter().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == want));
                let (has_query, has_path) = (is_in(ParameterIn::Query), is_in(ParameterIn::Path));
                let has_body = op.request_body.is_some();
                let mut common = vec![("401", true), ("400", has_query || has_body), ("404", has_path)];
                common.extend([("413", has_body), ("415", has_body), ("422", has_body || has_query)]);
                for (code, applies) in common {
                    if applies && !op.responses.responses.contains_key(code) {
                        op.responses.responses.insert(code.to_owned(), RefOr::T(error_response()));
                    }
                }
                for (status, resp) in op.responses.responses.iter_mut() {
                    if let RefOr::T(r) = resp
                        && r.description.is_empty()
                    {
                        r.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|c| StatusCode::from_u16(c).ok())
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("Response")
                            .to_owned();
                    }
                }
            }
        }
    }
}

async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(ApiDoc::openapi).clone())
}
