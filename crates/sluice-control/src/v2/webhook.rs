//! Outgoing notifications: a job's end to its webhook (as RunPod sends it), an account's
//! low-credit warning to the account's webhook. POSTed in the background, JSON, up to three
//! attempts 10 s apart; failures are logged, never fatal.
use std::time::Duration;

use bytes::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;
use sluice_store::JobRecord;

/// POSTs `body` to `url` in the background.
pub fn post(url: String, body: &impl Serialize) {
    let bytes = match serde_json::to_vec(body) {
        Ok(b) => Bytes::from(b),
        Err(e) => return tracing::error!(error = %e, "could not serialize a webhook body"),
    };
    tokio::spawn(async move {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(5)));
        let client: Client<HttpConnector, http_body_util::Full<Bytes>> = Client::builder(TokioExecutor::new()).build(c);
        for attempt in 1..=3 {
            let req = hyper::Request::post(&url)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes.clone()));
            let Ok(req) = req else {
                tracing::warn!(%url, "webhook URL is not usable");
                return;
            };
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(r)) if r.status().is_success() => return,
                Ok(Ok(r)) => tracing::warn!(%url, status = %r.status(), attempt, "webhook refused"),
                Ok(Err(e)) => tracing::warn!(%url, error = %e, attempt, "webhook failed"),
                Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
}

/// A job has ended: its webhook (if it has one) gets the status envelope with `input` and
/// `webhook`, as RunPod sends it.
pub fn job_ended(j: &JobRecord) {
    let Some(url) = &j.webhook else { return };
    if !j.state.is_final() {
        return;
    }
    let body = sluice_api::v2::JobWebhook {
        status: super::client::envelope(j, crate::now()),
        input: serde_json::from_str(&j.input).unwrap_or(serde_json::Value::Null),
        webhook: url.clone(),
    };
    post(url.clone(), &body);
}
