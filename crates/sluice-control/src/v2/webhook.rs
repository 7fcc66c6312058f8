//! Outgoing notifications: a job's end to its webhook (as RunPod sends it), an account's
//! low-credit warning to the account's webhook. POSTed in the background, JSON, up to three
//! attempts 10 s apart, to `http://` or `https://` URLs (verified against the system's roots
//! and `tls_extra_ca`; a certificate that does not verify is a failure, never a retry over plain
//! HTTP). A delivery that fails is recorded where its owner looks: the job's endpoint log, or
//! the account's events.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;
use sluice_store::{JobRecord, Store};

use crate::logs::Logs;

pub struct Webhooks {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    logs: Arc<Logs>,
    store: Store,
}

/// Whether a client error is a certificate that did not verify (retrying will not change it).
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        });
        // A boxed source hides its type from `downcast_ref`; rustls's own words do not.
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
            || err.to_string().starts_with("invalid peer certificate")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The reason of a client error, down to its source (a TLS verification failure is a few
/// levels down), without the URL (it may carry a token).
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

impl Webhooks {
    pub fn new(tls: Arc<rustls::ClientConfig>, logs: Arc<Logs>, store: Store) -> Arc<Webhooks> {
        let conn = sluice_tls::client::connector(tls, Duration::from_secs(5));
        Arc::new(Webhooks { client: Client::builder(TokioExecutor::new()).build(conn), logs, store })
    }

    /// POSTs `body` to `url` in the background; `failed` gets the last error after three tries
    /// (or at once for a certificate that does not verify).
    fn post(self: &Arc<Self>, url: String, body: &impl Serialize, failed: impl FnOnce(String) + Send + 'static) {
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => Bytes::from(b),
            Err(e) => return tracing::error!(error = %e, "could not serialize a webhook body"),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let shown = sluice_core::secrets::mask_url_credentials(&url);
            let mut last = String::new();
            for attempt in 1..=3 {
                let req = hyper::Request::post(&url)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(bytes.clone()));
                let Ok(req) = req else {
                    return failed("the webhook URL is not usable".into());
                };
                let mut permanent = false;
                last = match tokio::time::timeout(Duration::from_secs(10), me.client.request(req)).await {
                    Ok(Ok(r)) if r.status().is_success() => return,
                    Ok(Ok(r)) => format!("the receiver answered {}", r.status()),
                    Ok(Err(e)) => {
                        permanent = is_certificate_error(&e);
                        reason(&e)
                    }
                    Err(_) => "no answer within 10 s".into(),
                };
                tracing::warn!(url = %shown, attempt, error = %last, "webhook delivery failed");
                if permanent {
                    return failed(format!("{last} (not retried: the certificate does not verify)"));
                }
                if attempt < 3 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
            failed(last);
        });
    }

    /// A job has ended: its webhook (if it has one) gets the status envelope with `input` and
    /// `webhook`, as RunPod sends it. A delivery that fails is a line in the endpoint's log.
    pub fn job_ended(self: &Arc<Self>, j: &JobRecord) {
        let Some(url) = &j.webhook else { return };
        if !j.state.is_final() {
            return;
        }
        let body = sluice_api::v2::JobWebhook {
            status: super::client::envelope(j, crate::now(), None),
            input: serde_json::from_str(&j.input).unwrap_or(serde_json::Value::Null),
            webhook: url.clone(),
        };
        let (logs, endpoint, job) = (self.logs.clone(), j.endpoint_id.clone(), j.id.clone());
        self.post(url.clone(), &body, move |why| {
            logs.event(&endpoint, None, format!("webhook of job {job} failed: {why}"));
        });
    }

    /// An account's low-credit warning to its webhook. A delivery that fails is an account event.
    pub fn low_credit(self: &Arc<Self>, url: &str, body: &sluice_api::LowCreditNotice) {
        let (store, account) = (self.store.clone(), body.account.clone());
        self.post(url.to_owned(), body, move |why| {
            tokio::spawn(async move {
                let msg = format!("low-credit webhook failed: {why}");
                if let Err(e) = store.add_account_event(&account, crate::now(), "webhook_failed", &msg).await {
                    tracing::warn!(%account, error = %e, "could not record a failed webhook");
                }
            });
        });
    }
}
