//! The leader's certificate manager: on every pass it works out the certificates wanted
//! (`sluice_core::tls::wanted`), forgets those no longer wanted, and issues or renews those due
//! (`sluice_core::tls::due`), one at a time, recording each outcome in the store. It is woken
//! when an endpoint is created, so the host has its certificate before anyone calls it.
use std::{collections::HashMap, sync::Arc, time::Duration};

use sluice_core::{
    Millis,
    keys::Scope,
    tls::{Due, Wanted, due, wanted},
};
use sluice_store::CertificateRecord;
use sluice_tls::{
    acme::{self, AcmeError, Challenge, Presented, Responder},
    certs::certified,
};
use tokio::sync::watch;

use super::{Certs, managed};

/// How long gateways get to take up a challenge before the CA is told to validate.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a DNS hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(180);
/// A pass with nothing due still looks again this often (clock changes, missed wake-ups).
const IDLE_PASS: Duration = Duration::from_secs(300);

impl Certs {
    /// Runs the manager until `shutdown` turns true (the leader only; nothing when ACME is off).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.cfg.acme.is_none() {
            return;
        }
        let mut account = None;
        loop {
            let next = match self.pass(&mut account).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "certificate pass failed; trying again in 30 s");
                    Millis(crate::now().0 + 30_000)
                }
            };
            let wait = Duration::from_millis(next.0.saturating_sub(crate::now().0)).min(IDLE_PASS);
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass; returns when the next is due.
    async fn pass(&self, account: &mut Option<instant_acme::Account>) -> Result<Millis, sluice_store::Error> {
        let endpoints: Vec<(String, String)> = self
            .store
            .list_endpoints(&Scope::All)
            .await?
            .into_iter()
            .map(|e| (e.id.to_string(), e.spec.data_center.clone()))
            .collect();
        let files = self.files();
        let covered =
            |h: &str| files.iter().any(|f| f.info.names.iter().any(|n| sluice_core::tls::name_covers(n, h) || n == h));
        let want = wanted(
            &endpoints,
            &self.data_centers,
            self.cfg.api_host.as_deref(),
            &self.domain,
            self.cfg.policy,
            covered,
        );
        let mut recs: HashMap<String, CertificateRecord> =
            self.store.list_certificates().await?.into_iter().map(|r| (r.host.clone(), r)).collect();
        for host in recs.keys().filter(|h| !want.iter().any(|w| &w.host == *h)).cloned().collect::<Vec<_>>() {
            tracing::info!(%host, "certificate no longer wanted; forgotten");
            self.store.delete_certificate(&host).await?;
            recs.remove(&host);
        }
        let mut next = Millis(crate::now().0 + IDLE_PASS.as_millis() as u64);
        for w in &want {
            let now = crate::now();
            let rec = match recs.remove(&w.host) {
                Some(r) => r,
                None => {
                    let r = CertificateRecord {
                        host: w.host.clone(),
                        names: w.names.clone(),
                        challenge: self.challenge_for(w).as_str().into(),
                        state: "pending".into(),
                        cert_chain: None,
                        key_pem: None,
                        issuer: None,
                        not_before: None,
                        not_after: None,
                        failures: 0,
                        last_attempt: None,
                        last_error: None,
                        updated_at: now,
                    };
                    self.store.put_certificate(&r).await?;
                    r
                }
            };
            let rec = match due(&managed(&rec), now) {
                Due::Wait(_) => rec,
                Due::Issue => {
                    // Views show the pending one while it is issued.
                    self.records.store(Arc::new(self.store.list_certificates().await?));
                    self.attempt(w, rec, account).await?
                }
            };
            if let Due::Wait(t) = due(&managed(&rec), crate::now()) {
                next = next.min(t);
            }
        }
        self.records.store(Arc::new(self.store.list_certificates().await?));
        self.publish();
        Ok(next)
    }

    fn challenge_for(&self, w: &Wanted) -> Challenge {
        if w.is_wildcard() { Challenge::Dns01 } else { self.cfg.challenge }
    }

    /// Issues (or renews) one certificate and records the outcome.
    async fn attempt(
        &self,
        w: &Wanted,
        mut rec: CertificateRecord,
        account: &mut Option<instant_acme::Account>,
    ) -> Result<CertificateRecord, sluice_store::Error> {
        let challenge = self.challenge_for(w);
        let started = crate::now();
        tracing::info!(host = %w.host, challenge = challenge.as_str(), "issuing a certificate");
        let outcome = match self.account(account).await {
            Ok(acct) => acme::issue(&acct, &w.names, challenge, self).await,
            Err(e) => Err(e),
        }
        .and_then(|pem| {
            certified(&pem, &format!("the certificate issued for {}", w.host), crate::now())
                .map(|(_, info)| (pem, info))
                .map_err(|e| AcmeError(e.to_string()))
        });
        rec.last_attempt = Some(started);
        rec.updated_at = crate::now();
        rec.challenge = challenge.as_str().into();
        rec.names = w.names.clone();
        match outcome {
            Ok((pem, info)) => {
                tracing::info!(host = %w.host, issuer = %info.issuer, "certificate issued");
                rec.state = "valid".into();
                rec.cert_chain = Some(pem.cert_chain);
                rec.key_pem = Some(pem.key);
                rec.issuer = Some(info.issuer);
                rec.not_before = Some(info.not_before);
                rec.not_after = Some(info.not_after);
                rec.failures = 0;
                rec.last_error = None;
            }
            Err(e) => {
                rec.failures = rec.failures.saturating_add(1);
                rec.state = "failed".into();
                rec.last_error = Some(e.0.clone());
                tracing::warn!(host = %w.host, failures = rec.failures, error = %e, "certificate not issued; will retry with back-off");
                // The account may be what failed (a CA that forgot it): make it again next time.
                *account = None;
            }
        }
        self.store.put_certificate(&rec).await?;
        Ok(rec)
    }

    /// The ACME account: restored from the store, or created (and kept) the first time.
    async fn account(&self, cached: &mut Option<instant_acme::Account>) -> Result<instant_acme::Account, AcmeError> {
        if let Some(a) = cached {
            return Ok(a.clone());
        }
        let Some(settings) = &self.cfg.acme else { return Err(AcmeError("ACME is not configured".into())) };
        let stored = self.store.acme_account(&settings.directory).await.map_err(|e| AcmeError(e.to_string()))?;
        let (acct, fresh) = acme::account(settings, stored.as_deref()).await?;
        if let Some(creds) = fresh {
            self.store
                .put_acme_account(&settings.directory, &creds, crate::now())
                .await
                .map_err(|e| AcmeError(e.to_string()))?;
            tracing::info!(directory = %settings.directory, "ACME account created");
        }
        *cached = Some(acct.clone());
        Ok(acct)
    }

    /// Publishes the pending challenges and waits until the gateways serve them.
    async fn challenges_changed(&self) {
        let version = self.publish();
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        while !self.plane.tls_applied(version) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(version, "not every gateway took up the challenge in time; validating anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the DNS hook: `HOOK present|cleanup FQDN VALUE` (as lego's and certbot's exec hooks).
    async fn dns_hook(&self, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
        let Some(hook) = &self.cfg.dns_hook else {
            return Err("a DNS-01 challenge needs acme_dns_hook (a command that sets TXT records)".into());
        };
        let run = tokio::process::Command::new(hook)
            .args([action, fqdn, value])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(HOOK_TIMEOUT, run).await {
            Err(_) => Err(format!("acme_dns_hook {action} did not finish within {} s", HOOK_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(format!("acme_dns_hook could not be run: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
                Err(format!("acme_dns_hook {action} exited with {}: {tail}", out.status))
            }
        }
    }
}

impl Responder for Certs {
    async fn present(&self, p: &Presented) -> Result<(), String> {
        match p {
            Presented::Http01 { token, key_authorization } => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .http01
                    .insert(token.clone(), key_authorization.clone());
                self.challenges_changed().await;
                Ok(())
            }
            Presented::TlsAlpn01 { host, cert } => {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).tls_alpn01.insert(host.clone(), cert.clone());
                self.challenges_changed().await;
                Ok(())
            }
            Presented::Dns01 { fqdn, value } => self.dns_hook("present", fqdn, value).await,
        }
    }

    async fn cleanup(&self, p: &Presented) {
        match p {
            Presented::Http01 { token, .. } => {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).http01.remove(token);
                self.publish();
            }
            Presented::TlsAlpn01 { host, .. } => {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).tls_alpn01.remove(host);
                self.publish();
            }
            Presented::Dns01 { fqdn, value } => {
                if let Err(e) = self.dns_hook("cleanup", fqdn, value).await {
                    tracing::warn!(%fqdn, error = %e, "DNS-01 record not cleared");
                }
            }
        }
    }
}
