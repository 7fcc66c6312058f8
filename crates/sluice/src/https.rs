//! HTTPS as configured (issue 16): the certificates this process serves (files, checked at
//! startup and watched; issued ones added by the control plane), what its outbound TLS trusts,
//! and the settings the gateway and the control plane take from them.
use std::sync::Arc;

use anyhow::Context;
use sluice_control::certs::TlsConfig;
use sluice_core::tls::HostPolicy;
use sluice_gateway::tls::GatewayTls;
use sluice_tls::{CertStore, Source, acme::Challenge, files::CertFiles};

use crate::config::Config;

pub struct Https {
    /// The certificates served (none: plain HTTP).
    pub serving: Option<Arc<CertStore>>,
    /// What outbound TLS trusts: the system's roots and `tls_extra_ca`.
    pub client: Arc<rustls::ClientConfig>,
    files: Option<CertFiles>,
}

/// Reads and checks everything TLS needs; an unusable file is an error naming it.
pub fn setup(cfg: &Config) -> anyhow::Result<Https> {
    let roots = sluice_tls::client::roots(cfg.tls_extra_ca.as_deref()).context("tls_extra_ca")?;
    let client = sluice_tls::client::config(roots);
    if !cfg.tls_enabled() {
        return Ok(Https { serving: None, client, files: None });
    }
    let files = CertFiles::new(cfg.tls_cert.clone(), cfg.tls_key.clone())?;
    let serving = CertStore::new();
    serving.set(Source::Files, files.load(sluice_control::now()).context("tls_cert / tls_key")?);
    Ok(Https { serving: Some(serving), client, files: (!files.is_empty()).then_some(files) })
}

impl Https {
    /// Watches the certificate files (a changed file is served without a restart).
    pub fn watch_files(&self) {
        if let (Some(files), Some(serving)) = (&self.files, &self.serving) {
            tokio::spawn(files.clone().watch(serving.clone(), sluice_control::now));
        }
    }

    /// The control plane's HTTPS settings.
    pub fn control(&self, cfg: &Config) -> TlsConfig {
        let acme = cfg.acme_email.as_ref().map(|email| sluice_tls::acme::AcmeSettings {
            directory: cfg.acme_directory.clone(),
            email: Some(email.clone()),
            eab: cfg.acme_eab_kid.clone().zip(cfg.acme_eab_hmac_key.clone()),
            tls: self.client.clone(),
        });
        TlsConfig {
            enabled: self.serving.is_some(),
            serving: self.serving.clone(),
            acme,
            api_host: cfg.api_host(),
            policy: if cfg.acme_wildcards { HostPolicy::WildcardPerDataCenter } else { HostPolicy::PerHost },
            challenge: Challenge::parse(&cfg.acme_challenge).unwrap_or(Challenge::Http01),
            dns_hook: cfg.acme_dns_hook.clone(),
            client: self.client.clone(),
        }
    }

    /// The gateway's HTTPS settings, when it serves HTTPS on `https_port`.
    pub fn gateway(&self, https_port: u16, cfg: &Config) -> Option<Arc<GatewayTls>> {
        self.serving.as_ref().map(|s| GatewayTls::new(s.clone(), https_port, cfg.hsts_max_age_secs))
    }
}
