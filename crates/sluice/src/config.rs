//! Platform configuration: a TOML file (`--config`) with flags on top. Unknown keys are
//! rejected; every field has a default so `sluice up` needs no file.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use sluice_core::{
    RuntimeKind,
    placement::{Gpu, Node},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where state (SQLite), logs, volumes, the admin key and addresses.json live.
    pub data_dir: PathBuf,
    /// The store: unset for SQLite in `data_dir/sluice.db`, or a `postgres://user@host:port/db`
    /// URL that several control processes (and their leader election) share.
    pub database: Option<String>,
    /// Where other control processes reach this one's API (they forward to the leader), e.g.
    /// `http://10.0.0.5:8081`; default `http://{api_addr}`.
    pub advertise_url: Option<String>,
    /// Control API listen address (port 0 picks a free port).
    pub api_addr: SocketAddr,
    /// Gateway listen address (port 0 picks a free port).
    pub gateway_addr: SocketAddr,
    /// Domain of host-form endpoint URLs: `{id}.{data_center}.{domain}`.
    pub domain: String,
    /// Create (or refresh) the demo endpoint at startup.
    pub demo: bool,
    /// GPU types endpoints may request; the first is the default.
    pub gpu_types: Vec<String>,
    /// Cap on an endpoint's max_workers.
    pub max_workers_quota: u32,
    /// Declared GPU inventory.
    pub nodes: Vec<NodeConfig>,
    /// Largest control API request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds open gateway connections get to finish at shutdown.
    pub shutdown_grace_secs: u64,
    /// `pretty` or `json`.
    pub log_format: String,
    /// What runs workers: `process` (local processes) or `docker` (containers through the
    /// Docker Engine API at `DOCKER_HOST`, default the local socket).
    pub runtime: RuntimeKind,
    /// With `runtime = "kubernetes"`: where and how worker Pods are placed.
    pub kubernetes: KubernetesConfig,
    /// Look for real NVIDIA GPUs through NVML (builds with the `nvml` feature) and use them
    /// instead of the first node's declared GPUs; without a driver, the declared inventory stays.
    pub gpu_discovery: bool,
    /// Prices per GPU type (R5.2): baseline USD per hour, autoscaled USD per second. Defaults:
    /// seed 001's table plus the simulated type. A type without a price is metered at $0.
    pub gpu_prices: Vec<PriceConfig>,
    /// How often running workers' usage is written to the ledger, seconds (1-60).
    pub metering_interval_secs: u64,
    /// The platform's address as RunPod-protocol (pull) workers reach it, e.g.
    /// `http://10.0.0.5:8080`; default: the gateway's own address. With the Docker runtime and
    /// a loopback address, pull workers' containers share the host's network to reach it.
    pub worker_api_url: Option<String>,
    /// `RUNPOD_PING_INTERVAL` given to pull workers, ms (500-60000); a worker silent for three
    /// intervals is presumed dead and replaced, and its jobs go back to the queue.
    pub worker_ping_interval_ms: u64,
    /// Worker output and platform events are kept this long, hours (1-8760).
    pub log_retention_hours: u64,
    /// ... and at most this much text per endpoint, MiB (oldest lines go first; 1-102400).
    pub log_retention_mb: u64,
    /// HTTPS from files: PEM certificate chains (a path or a list), paired by position with
    /// `tls_key`. Wildcards (`*.local.example.com`) cover one label. Read again when changed.
    #[serde(deserialize_with = "one_or_many")]
    pub tls_cert: Vec<PathBuf>,
    /// The private keys (PEM: PKCS#8, PKCS#1 or SEC1) of `tls_cert`, in the same order.
    #[serde(deserialize_with = "one_or_many")]
    pub tls_key: Vec<PathBuf>,
    /// A PEM bundle of CAs trusted, beside the system's roots, by every outbound TLS connection
    /// (the ACME directory, webhooks, the control URL gateways follow): a private CA.
    pub tls_extra_ca: Option<PathBuf>,
    /// Issue certificates over ACME (RFC 8555); setting the contact e-mail turns it on.
    pub acme_email: Option<String>,
    /// The CA's directory URL [default: Let's Encrypt].
    pub acme_directory: String,
    /// External account binding (CAs such as ZeroSSL, Google, a company's step-ca): key id ...
    pub acme_eab_kid: Option<String>,
    /// ... and HMAC key (base64url, as the CA gives it).
    pub acme_eab_hmac_key: Option<String>,
    /// `http-01` (answered on `gateway_http_addr`, port 80) or `tls-alpn-01` (on the gateway's
    /// TLS port, 443).
    pub acme_challenge: String,
    /// One wildcard per data center (`*.{dc}.{domain}`, DNS-01 through `acme_dns_hook`) instead
    /// of a certificate per endpoint host: for public CAs' rate limits (Let's Encrypt: 50
    /// certificates per registered domain a week).
    pub acme_wildcards: bool,
    /// The command that sets and clears DNS-01 TXT records: run as `HOOK present FQDN VALUE` and
    /// `HOOK cleanup FQDN VALUE` (lego's exec provider, certbot's hooks); it returns once the
    /// record is visible.
    pub acme_dns_hook: Option<String>,
    /// The API's host name: served by the gateway under its own certificate (`/e/…` and
    /// `/v2/…` there still reach endpoints) [default with HTTPS: api.{domain}].
    pub api_host: Option<String>,
    /// With HTTPS: the plain-HTTP listener beside the gateway. It answers ACME HTTP-01
    /// challenges and redirects everything else to https:// (308, path and query kept).
    pub gateway_http_addr: Option<SocketAddr>,
    /// Send `Strict-Transport-Security: max-age=N` on HTTPS answers.
    pub hsts_max_age_secs: Option<u64>,
    /// Serve the control API's own address over TLS too [default: with HTTPS, unless that
    /// address is loopback, where local tools keep plain HTTP].
    pub api_tls: Option<bool>,
    /// Where models endpoints list are staged (Hugging Face cache layout, mounted read-only into
    /// workers) [default: `{data_dir}/models`].
    pub model_cache_dir: Option<PathBuf>,
    /// The Hugging Face Hub, or a mirror of it [default: `$HF_ENDPOINT`, else
    /// https://huggingface.co].
    pub hf_endpoint: Option<String>,
    /// Least-recently-used models are evicted to keep the cache under this many GB (10^9 bytes);
    /// a model some endpoint lists is never evicted. 0: no limit.
    pub model_cache_max_gb: f64,
}

/// A TOML value that is one path or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// The namespace worker Pods are created in (the control plane's service account needs
    /// pods and pods/log there; see deploy/kubernetes/rbac.yaml).
    pub namespace: String,
    /// Node label naming a node's GPU type, matched against the endpoint's `gpu_type`
    /// (empty: not used).
    pub gpu_type_label: String,
    /// Node label naming a node's data center, matched against the endpoint's `data_center`
    /// (empty: not used).
    pub data_center_label: String,
    /// The extended resource GPUs are requested as.
    pub gpu_resource: String,
    /// An image with the `sluice` binary (deploy/Dockerfile): each worker Pod stages its
    /// endpoint's models with it in an init container (`sluice models fetch`).
    pub models_image: String,
    /// The model cache's folder on every GPU node (a hostPath volume, read-only in workers).
    pub models_host_path: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: "sluice".into(),
            gpu_type_label: "nvidia.com/gpu.product".into(),
            data_center_label: "topology.kubernetes.io/zone".into(),
            gpu_resource: "nvidia.com/gpu".into(),
            models_image: "registry.example.com/sluice:latest".into(),
            models_host_path: "/var/lib/sluice/models".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    #[serde(rename = "type")]
    pub gpu_type: String,
    pub per_hour: f64,
    pub per_second: f64,
    /// A sleeping worker's GPU-second [default: a tenth of `per_second`].
    #[serde(default)]
    pub sleeping_per_second: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub data_center: String,
    pub gpus: Vec<GpuGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuGroup {
    #[serde(rename = "type")]
    pub gpu_type: String,
    pub count: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".sluice"),
            database: None,
            advertise_url: None,
            api_addr: "127.0.0.1:8081".parse().expect("static"),
            gateway_addr: "127.0.0.1:8080".parse().expect("static"),
            domain: "localhost".into(),
            demo: true,
            gpu_types: ["SIM", "L40", "A40", "A100", "H100"].map(String::from).to_vec(),
            max_workers_quota: 10,
            nodes: vec![NodeConfig {
                name: "local".into(),
                data_center: "local".into(),
                gpus: vec![GpuGroup { gpu_type: "SIM".into(), count: 8 }],
            }],
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 30,
            log_format: "pretty".into(),
            runtime: RuntimeKind::Process,
            kubernetes: KubernetesConfig::default(),
            gpu_discovery: true,
            gpu_prices: sluice_core::catalog::DEFAULT_PRICES
                .iter()
                .map(|(t, h, s)| PriceConfig {
                    gpu_type: (*t).into(),
                    per_hour: *h,
                    per_second: *s,
                    sleeping_per_second: None,
                })
                .collect(),
            metering_interval_secs: 60,
            worker_api_url: None,
            worker_ping_interval_ms: sluice_core::pull::DEFAULT_PING_MS,
            log_retention_hours: 168,
            log_retention_mb: 64,
            tls_cert: Vec::new(),
            tls_key: Vec::new(),
            tls_extra_ca: None,
            acme_email: None,
            acme_directory: sluice_tls::acme::LETS_ENCRYPT.into(),
            acme_eab_kid: None,
            acme_eab_hmac_key: None,
            acme_challenge: "http-01".into(),
            acme_wildcards: false,
            acme_dns_hook: None,
            api_host: None,
            gateway_http_addr: None,
            hsts_max_age_secs: None,
            api_tls: None,
            model_cache_dir: None,
            hf_endpoint: None,
            model_cache_max_gb: 0.0,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    /// Whether the gateway serves HTTPS (certificate files, or ACME).
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty() || self.acme_email.is_some()
    }

    /// The API's host name on the gateway (with HTTPS).
    pub fn api_host(&self) -> Option<String> {
        if !self.tls_enabled() {
            return self.api_host.clone();
        }
        Some(self.api_host.clone().unwrap_or_else(|| format!("api.{}", self.domain)))
    }

    /// Whether the API's own address serves TLS.
    pub fn api_tls(&self) -> bool {
        self.tls_enabled() && self.api_tls.unwrap_or(!self.api_addr.ip().is_loopback())
    }

    /// The hub models come from.
    pub fn hf_endpoint(&self) -> String {
        self.hf_endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| sluice_models::hub::DEFAULT_ENDPOINT.into())
    }

    /// The TLS rules (see [`Config::check`]).
    fn check_tls(&self) -> anyhow::Result<()> {
        if self.tls_cert.len() != self.tls_key.len() {
            bail!(
                "tls_cert and tls_key must come in pairs: {} certificate file(s), {} key file(s)",
                self.tls_cert.len(),
                self.tls_key.len()
            );
        }
        if !matches!(self.acme_challenge.as_str(), "http-01" | "tls-alpn-01") {
            bail!("acme_challenge: must be \"http-01\" or \"tls-alpn-01\", got {:?}", self.acme_challenge);
        }
        if let Some(h) = &self.api_host
            && !sluice_core::ids::is_dns_name(h)
        {
            bail!("api_host: {h:?} is not a DNS name");
        }
        if self.api_tls == Some(true) && !self.tls_enabled() {
            bail!("api_tls: needs a certificate (tls_cert and tls_key, or acme_email)");
        }
        let Some(email) = &self.acme_email else {
            if self.gateway_http_addr.is_some() && self.tls_cert.is_empty() {
                bail!("gateway_http_addr: only used with HTTPS (tls_cert and tls_key, or acme_email)");
            }
            return Ok(());
        };
        if !email.contains('@') || email.contains(char::is_whitespace) || email.len() > 254 {
            bail!("acme_email: {email:?} is not an e-mail address");
        }
        if !self.acme_directory.starts_with("https://") || self.acme_directory.parse::<http::Uri>().is_err() {
            bail!("acme_directory: must be an https:// URL, got {:?}", self.acme_directory);
        }
        if self.acme_eab_kid.is_some() != self.acme_eab_hmac_key.is_some() {
            bail!("acme_eab_kid and acme_eab_hmac_key go together (external account binding)");
        }
        if self.acme_challenge == "http-01" && self.gateway_http_addr.is_none() {
            bail!(
                "acme_challenge \"http-01\" needs gateway_http_addr (the plain listener on port 80 that answers it), \
                 or use acme_challenge = \"tls-alpn-01\""
            );
        }
        if self.acme_wildcards && self.acme_dns_hook.is_none() {
            bail!("acme_wildcards: wildcards are issued by DNS-01, which needs acme_dns_hook");
        }
        Ok(())
    }

    /// Rules serde cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        self.check_tls()?;
        if !(self.model_cache_max_gb.is_finite() && self.model_cache_max_gb >= 0.0) {
            bail!("model_cache_max_gb: must be 0 (no limit) or a positive number of GB");
        }
        if let Some(e) = &self.hf_endpoint
            && !(e.starts_with("https://") || e.starts_with("http://"))
        {
            bail!("hf_endpoint: must be an http(s):// URL, got {e:?}");
        }
        if self.nodes.is_empty() {
            bail!("nodes: at least one node must be declared");
        }
        if self.gpu_types.is_empty() {
            bail!("gpu_types: the catalog must list at least one GPU type");
        }
        if self.domain.is_empty() || self.domain.contains(['/', ':', ' ']) {
            bail!("domain: {:?} is not a DNS name", self.domain);
        }
        if !(1..=60).contains(&self.metering_interval_secs) {
            bail!("metering_interval_secs: must be between 1 and 60, got {}", self.metering_interval_secs);
        }
        for p in &self.gpu_prices {
            let sleeping_ok = p.sleeping_per_second.is_none_or(|s| s.is_finite() && s >= 0.0);
            if !(p.per_hour.is_finite()
                && p.per_hour >= 0.0
                && p.per_second.is_finite()
                && p.per_second >= 0.0
                && sleeping_ok)
            {
                bail!("gpu_prices.{}: prices must be finite and not negative", p.gpu_type);
            }
        }
        if !(1..=8760).contains(&self.log_retention_hours) {
            bail!("log_retention_hours: must be between 1 and 8760, got {}", self.log_retention_hours);
        }
        if !(1..=102_400).contains(&self.log_retention_mb) {
            bail!("log_retention_mb: must be between 1 and 102400, got {}", self.log_retention_mb);
        }
        if !(500..=60_000).contains(&self.worker_ping_interval_ms) {
            bail!("worker_ping_interval_ms: must be between 500 and 60000, got {}", self.worker_ping_interval_ms);
        }
        if let Some(u) = &self.worker_api_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("worker_api_url: must be an http:// or https:// URL, got {u:?}");
        }
        if let Some(d) = &self.database
            && !(d.starts_with("postgres://") || d.starts_with("postgresql://"))
        {
            bail!("database: must be a postgres:// URL (leave it unset for SQLite in data_dir), got {d:?}");
        }
        if let Some(u) = &self.advertise_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("advertise_url: must be an http:// or https:// URL, got {u:?}");
        }
        if !matches!(self.log_format.as_str(), "pretty" | "json") {
            bail!("log_format: must be \"pretty\" or \"json\", got {:?}", self.log_format);
        }
        let mut names = std::collections::HashSet::new();
        for n in &self.nodes {
            if !names.insert(&n.name) {
                bail!("nodes: node name {:?} is declared twice", n.name);
            }
            if !sluice_core::ids::is_id_label(&n.data_center) {
                bail!(
                    "nodes.{}.data_center: {:?} must be a DNS label (lowercase letters, digits, '-')",
                    n.name,
                    n.data_center
                );
            }
            for g in &n.gpus {
                if !self.gpu_types.contains(&g.gpu_type) {
                    bail!("nodes.{}.gpus: GPU type {:?} is not in gpu_types", n.name, g.gpu_type);
                }
            }
        }
        Ok(())
    }

    /// The inventory as placement sees it: GPU indices numbered per node in declaration order.
    pub fn inventory(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .map(|n| {
                let mut gpus = Vec::new();
                for g in &n.gpus {
                    for _ in 0..g.count {
                        gpus.push(Gpu { index: gpus.len() as u32, gpu_type: g.gpu_type.clone() });
                    }
                }
                Node { name: n.name.clone(), data_center: n.data_center.clone(), gpus }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.inventory()[0].gpus.len(), 8);
        let c = Config::from_toml(
            r#"
            domain = "gpu.example.com"
            api_addr = "127.0.0.1:0"
            [[nodes]]
            name = "box1"
            data_center = "eu-1"
            gpus = [{ type = "A100", count = 2 }, { type = "SIM", count = 1 }]
            "#,
        )
        .unwrap();
        let inv = c.inventory();
        assert_eq!(inv[0].gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(inv[0].gpus[2].gpu_type, "SIM");
        assert_eq!(c.api_addr.port(), 0);
        assert!(!c.tls_enabled() && c.api_host().is_none());
        let c = Config::from_toml(
            "domain = \"gpu.example.com\"\nacme_email = \"ops@example.com\"\ngateway_http_addr = \"0.0.0.0:80\"",
        )
        .unwrap();
        assert!(c.tls_enabled() && !c.api_tls(), "loopback API stays plain");
        assert_eq!(c.api_host().as_deref(), Some("api.gpu.example.com"));
        let c = Config::from_toml("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\napi_addr = \"0.0.0.0:8443\"").unwrap();
        assert_eq!(c.tls_cert, [PathBuf::from("c.pem")]);
        assert!(c.api_tls());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        for (text, needle) in [
            ("bogus = 1", "unknown field `bogus`"),
            ("api_addr = \"nope\"", "api_addr"),
            ("nodes = []", "at least one node"),
            ("gpu_types = []", "at least one GPU type"),
            ("log_format = \"xml\"", "log_format"),
            ("[[nodes]]\nname = \"a\"\ndata_center = \"Bad DC\"\ngpus = []", "DNS label"),
            (
                "[[nodes]]\nname = \"a\"\ndata_center = \"x\"\ngpus = [{ type = \"TPU\", count = 1 }]",
                "not in gpu_types",
            ),
            (
                "[[nodes]]\nname = \"a\"\ndata_center = \"x\"\ngpus = []\n[[nodes]]\nname = \"a\"\ndata_center = \"x\"\ngpus = []",
                "twice",
            ),
            ("tls_cert = \"a.pem\"", "must come in pairs: 1 certificate file(s), 0 key file(s)"),
            ("tls_cert = [\"a.pem\", \"b.pem\"]\ntls_key = \"a.key\"", "2 certificate file(s), 1 key file(s)"),
            ("acme_email = \"me@example.com\"", "needs gateway_http_addr"),
            ("acme_email = \"me\"\nacme_challenge = \"tls-alpn-01\"", "not an e-mail address"),
            ("acme_email = \"a@b.c\"\nacme_challenge = \"dns-01\"", "acme_challenge"),
            ("acme_email = \"a@b.c\"\nacme_challenge = \"tls-alpn-01\"\nacme_directory = \"http://ca\"", "https://"),
            ("acme_email = \"a@b.c\"\nacme_challenge = \"tls-alpn-01\"\nacme_wildcards = true", "acme_dns_hook"),
            ("acme_email = \"a@b.c\"\nacme_challenge = \"tls-alpn-01\"\nacme_eab_kid = \"k\"", "go together"),
            ("gateway_http_addr = \"127.0.0.1:80\"", "only used with HTTPS"),
            ("api_tls = true", "needs a certificate"),
        ] {
            let e = format!("{:#}", Config::from_toml(text).unwrap_err());
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
