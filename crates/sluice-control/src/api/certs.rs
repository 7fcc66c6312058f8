//! `GET /v1/certificates`: the certificates HTTPS is served with. The admin sees all of them
//! (files, the API host's, data center wildcards); an account sees the ones kept for its own
//! endpoints' hosts. Never a key.
use axum::{Extension, Json, extract::State};
use sluice_api::{CertificateList, ErrorBody};

use super::{Caller, S};
use crate::AppError;

#[utoipa::path(get, path = "/v1/certificates", tag = "certificates",
    responses((status = 200, body = CertificateList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_certificates(
    State(st): S,
    Extension(caller): Extension<Caller>,
) -> Result<Json<CertificateList>, AppError> {
    let hosts = if caller.is_admin() {
        None
    } else {
        let mine = st.store.list_endpoints(&caller.scope).await?;
        Some(
            mine.iter()
                .map(|e| sluice_core::tls::endpoint_host(e.id.as_str(), &e.spec.data_center, &st.cfg.domain))
                .collect::<Vec<_>>(),
        )
    };
    Ok(Json(CertificateList { certificates: st.certs.views(hosts.as_deref()) }))
}
