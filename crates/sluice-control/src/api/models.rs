//! `GET /v1/models`: the models the caller's endpoints list, each with its source, the commit it
//! resolved to, the endpoints that list it, and per node its staging state and progress. An
//! account sees only the models (and the endpoints) of its own endpoints.
use axum::{Extension, Json, extract::State};
use sluice_api::{ErrorBody, ModelList, ModelNodeView, ModelView};
use sluice_core::{models::ModelSpec, rfc3339};
use sluice_store::EndpointRecord;

use super::{Caller, S};
use crate::{
    AppError, AppState,
    models::{ModelStatus, StageState},
};

/// The views of the models `endpoints` list: one per model (and token: stagings with different
/// tokens are apart), naming each endpoint that lists it.
pub(super) fn views(st: &AppState, endpoints: &[&EndpointRecord]) -> Vec<ModelView> {
    let mut merged: Vec<(ModelSpec, String, ModelStatus, Vec<String>, String)> = Vec::new();
    for e in endpoints {
        let access = sluice_models::fingerprint(e.spec.env.get("HF_TOKEN").map(String::as_str));
        for s in st.models.status(&e.spec) {
            match merged.iter_mut().find(|(m, a, ..)| *m == s.spec && *a == access) {
                Some((.., eps, _)) => eps.push(e.id.to_string()),
                None => {
                    merged.push((s.spec.clone(), access.clone(), s, vec![e.id.to_string()], e.spec.data_center.clone()))
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(spec, _, s, endpoints, dc)| ModelView {
            source: spec.source.display(),
            include: spec.include.clone(),
            exclude: spec.exclude.clone(),
            revision: crate::models::revision(&spec.source),
            commit: s.commit.clone(),
            endpoints,
            nodes: st
                .models
                .nodes_of(&dc)
                .into_iter()
                .map(|(node, data_center)| ModelNodeView {
                    node,
                    data_center,
                    state: s.state.name().into(),
                    bytes_done: s.bytes_done,
                    bytes_total: s.bytes_total,
                    rate_bytes_per_sec: s.rate as u64,
                    ready_at: s.ready_at.map(rfc3339),
                    error: match &s.state {
                        StageState::Failed(e) => Some(e.clone()),
                        _ => None,
                    },
                })
                .collect(),
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_models(
    State(st): S,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ModelList>, AppError> {
    let mine = st.store.list_endpoints(&caller.scope).await?;
    let refs: Vec<&EndpointRecord> = mine.iter().collect();
    Ok(Json(ModelList { models: views(&st, &refs) }))
}
