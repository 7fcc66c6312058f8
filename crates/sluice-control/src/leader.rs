//! Several `sluice control` processes on one PostgreSQL (R8.3): the holder of the `control` lease
//! (a row in the store, expiring by the database's clock) leads: it runs the reconciler,
//! autoscaler, metering and job dispatch, and serves the API. The others stand by: they serve
//! the same API address by forwarding each request to the leader, as an active/standby pair
//! does, and ask for the lease every few hundred ms. A leader that cannot renew in time exits at once
//! without touching its workers, which its successor adopts as after a restart.
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sluice_core::lease::{RENEW_EVERY_MS, TTL_MS, must_step_down, standby_wait};
use sluice_store::Store;
use tower::ServiceExt;

pub const LEASE: &str = "control";

/// What answers on the API address: the leader's router once this process leads, else a
/// forwarder to whoever leads.
pub struct Front {
    router: RwLock<Option<axum::Router>>,
    store: Store,
    me: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Front {
    /// `me`: this process's advertised URL (`http://` or `https://`); `tls`: what the leader's
    /// `https://` address is verified with.
    pub fn new(store: Store, me: String, tls: Arc<rustls::ClientConfig>) -> Arc<Front> {
        let conn = sluice_tls::client::connector(tls, Duration::from_secs(2));
        Arc::new(Front {
            router: RwLock::new(None),
            store,
            me,
            client: Client::builder(TokioExecutor::new()).build(conn),
        })
    }

    /// This process leads: its own router answers from now on.
    pub fn lead(&self, router: axum::Router) {
        *self.router.write().unwrap_or_else(|e| e.into_inner()) = Some(router);
    }

    /// This process no longer leads (a clean stop): forward again.
    pub fn stand_by(&self) {
        *self.router.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The router that serves the API address.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let front = self.clone();
        axum::Router::new().fallback(move |req: Request| {
            let front = front.clone();
            async move { front.handle(req).await }
        })
    }

    async fn handle(&self, req: Request) -> Response {
        let own = self.router.read().unwrap_or_else(|e| e.into_inner()).clone();
        // This process is up whether or not it leads (a standby serves by forwarding).
        let v2 = req.uri().path().starts_with("/v2/");
        if own.is_none() && req.uri().path() == "/healthz" {
            return Response::new(Body::from("ok (standing by)"));
        }
        if let Some(router) = own {
            return match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        match self.store.lease_holder(LEASE).await {
            Ok(Some(l)) if l.address != self.me => self.forward(&l.address, req).await,
            Ok(_) => unavailable(v2, "no control process leads yet (one is being elected); retry"),
            Err(e) => unavailable(v2, &format!("the store is unreachable: {e}")),
        }
    }

    async fn forward(&self, leader: &str, req: Request) -> Response {
        let v2 = req.uri().path().starts_with("/v2/");
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("{}{pq}", leader.trim_end_matches('/')).parse() else {
            return unavailable(v2, &format!("the leader's address {leader:?} is not a URL"));
        };
        parts.uri = uri;
        parts.headers.remove(header::HOST);
        parts.headers.insert(
            "x-sluice-forwarded-by",
            http::HeaderValue::from_str(&self.me).unwrap_or(http::HeaderValue::from_static("standby")),
        );
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => resp.map(|b| Body::new(b.map_err(axum::Error::new))),
            // The leader died or is stepping down: a standby takes over within the lease's TTL.
            // 503 with Retry-After, so clients (RunPod's SDK retries 5xx) try again.
            Err(e) => unavailable(
                v2,
                &format!("the leading control process at {leader} is unreachable ({e}); a new leader is being elected"),
            ),
        }
    }
}

/// 503 with `Retry-After`, in the error shape of the API asked: RunPod's for `/v2`, Sluice's for
/// the rest.
fn unavailable(v2: bool, message: &str) -> Response {
    let body = if v2 {
        serde_json::to_vec(&sluice_api::v2::V2Error { error: message.to_owned() })
    } else {
        serde_json::to_vec(&sluice_api::ErrorBody::new("unavailable", message, None))
    };
    let mut r = Response::new(Body::from(body.unwrap_or_default()));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    r
}

/// Waits until this process holds the lease (asking every renewal period, sooner when the
/// holder's lease is about to run out). Returns the local time of the successful request.
pub async fn acquire(store: &Store, holder: &str, address: &str) -> tokio::time::Instant {
    let mut said = false;
    loop {
        let started = tokio::time::Instant::now();
        match store.acquire_lease(LEASE, holder, address, TTL_MS).await {
            Ok(true) => return started,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "asking for the leader lease failed"),
        }
        let current = store.lease_holder(LEASE).await.ok().flatten();
        if !said && let Some(l) = &current {
            tracing::info!(leader = %l.address, "standing by: another control process leads");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(standby_wait(current.map(|l| l.left_ms)))).await;
    }
}

/// Renews the lease every [`RENEW_EVERY_MS`] for as long as the process runs. If a renewal is refused, or
/// none succeeds in time to be sure the lease is still ours, the process exits at once: another
/// may be leading by then, and two leaders would start workers twice. Its workers keep running
/// and the successor adopts them. Dropping the returned [`Keeper`] stops renewing (a clean stop,
/// before the lease is released).
pub fn keep(store: Store, holder: String, address: String, renewed: tokio::time::Instant) -> Keeper {
    // Local monotonic ms since `renewed`, the clock `must_step_down` compares.
    let ms = move |t: tokio::time::Instant| t.saturating_duration_since(renewed).as_millis() as u64;
    // Watchdog: independent of how long a renewal request hangs.
    let last = Arc::new(std::sync::Mutex::new(renewed));
    let watch = last.clone();
    let watchdog = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (started, now) =
                (ms(*watch.lock().unwrap_or_else(|e| e.into_inner())), ms(tokio::time::Instant::now()));
            if must_step_down(started, now, TTL_MS) {
                step_down(&format!("the lease was not renewed for {} ms", now - started));
            }
        }
    });
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(RENEW_EVERY_MS)).await;
            let started = tokio::time::Instant::now();
            match store.acquire_lease(LEASE, &holder, &address, TTL_MS).await {
                Ok(true) => *last.lock().unwrap_or_else(|e| e.into_inner()) = started,
                Ok(false) => step_down("another control process holds the lease"),
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed; retrying"),
            }
        }
    });
    Keeper([watchdog.abort_handle(), renew.abort_handle()])
}

/// The renewal of a held lease; dropping it stops renewing.
pub struct Keeper([tokio::task::AbortHandle; 2]);

impl Drop for Keeper {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn step_down(why: &str) -> ! {
    tracing::error!("leadership lost ({why}); exiting so that exactly one control process leads");
    eprintln!("sluice control: leadership lost ({why}); exiting, workers stay for the next leader");
    std::process::exit(3)
}

/// A name for this process in the lease: host, pid and a random part.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let rand: String = crate::new_id().iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{rand}", host.trim(), std::process::id())
}
