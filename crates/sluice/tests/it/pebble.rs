//! HTTPS fixtures: a test CA (for certificate files and for Pebble's own listener), Debian's
//! Pebble with its challenge test server on free loopback ports (every name resolves to
//! 127.0.0.1 there, DNS-01 records are set through its management API), and an HTTPS client
//! that dials loopback whatever the host name, so SNI and `Host` are the real ones.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, dns::Name},
    },
    rt::TokioExecutor,
};
use rustls_pki_types::pem::PemObject as _;

use crate::support::{Resp, eventually};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A certificate authority of the tests' own.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa { issuer: rcgen::Issuer::new(params, key), pem: cert.pem() }
    }

    /// A leaf for `names` (an IP address becomes an IP SAN), valid from 2000 to 4000.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        self.issue_valid(names, 2000, 4000)
    }

    /// A leaf valid from the start of `from` to the start of `to` (years).
    pub fn issue_valid(&self, names: &[&str], from: i32, to: i32) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `CA.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).unwrap();
        p
    }
}

/// Writes a certificate and key as `{base}.pem` and `{base}.key`.
pub fn write_pair(dir: &Path, base: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join(format!("{base}.pem")), dir.join(format!("{base}.key")));
    std::fs::write(&c, &pair.0).unwrap();
    std::fs::write(&k, &pair.1).unwrap();
    (c, k)
}

/// Pebble and pebble-challtestsrv, on free loopback ports.
pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA that Pebble's own HTTPS listener's certificate is from (Sluice's `tls_extra_ca`).
    pub listener_ca: PathBuf,
    /// Pebble's root this run (it makes a new one on every start): what clients trust.
    pub root: PathBuf,
    /// The challenge test server's management API.
    pub challtestsrv: String,
    /// The CA of `listener_ca` (for other servers the platform should trust: a webhook receiver).
    pub ca: TestCa,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTPS client that trusts `roots` (PEM files) and dials 127.0.0.1 for every name.
pub fn https_client(roots: &[&Path]) -> Client<HttpsConnector<HttpConnector<Loopback>>, Full<Bytes>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        let pem = std::fs::read(r).unwrap();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            store.add(c.unwrap()).unwrap();
        }
    }
    let cfg = sluice_tls::client::config(store);
    let mut http = HttpConnector::new_with_resolver(Loopback);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*cfg).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(conn)
}

/// Resolves every name to 127.0.0.1 (the tests' DNS: the hosts are real names, the network is
/// loopback).
#[derive(Clone, Copy)]
pub struct Loopback;

impl tower::Service<Name> for Loopback {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(std::iter::once(SocketAddr::from(([127, 0, 0, 1], 0)))))
    }
}

/// One HTTPS request; `Err` carries the client's error chain (a TLS failure).
pub async fn https(method: Method, url: &str, roots: &[&Path], body: Option<&str>) -> Result<Resp, String> {
    https_as(method, url, roots, None, body).await
}

/// [`https`] with an API key.
pub async fn https_as(
    method: Method,
    url: &str,
    roots: &[&Path],
    key: Option<&str>,
    body: Option<&str>,
) -> Result<Resp, String> {
    let client = https_client(roots);
    let mut req = Request::builder().method(method).uri(url);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| chain(&e))?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status, headers, body })
}

/// An error and its sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` (the
    /// gateway's), with certificates valid for `validity_secs` when given.
    pub async fn start(dir: &Path, http_port: u16, tls_port: u16, validity_secs: Option<u64>) -> Pebble {
        Pebble::start_with(dir, http_port, tls_port, validity_secs, None).await
    }

    /// [`Pebble::start`], requiring external account binding with `eab` (key id, HMAC key in
    /// base64url) when given.
    pub async fn start_with(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        validity_secs: Option<u64>,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new("Pebble listener CA");
        let (cert, key) = write_pair(&dir, "listener", &ca.issue(&["localhost", "127.0.0.1"]));
        let listener_ca = ca.write_ca(&dir, "listener-ca.pem");
        let (acme, mgmt, dns, chall) = (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        if let Some((kid, key)) = eab {
            config["pebble"]["externalAccountBindingRequired"] = true.into();
            config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        let cfg_path = dir.join("pebble.json");
        std::fs::write(&cfg_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let chall_child = Command::new("pebble-challtestsrv")
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", "", "-defaultIPv4", "127.0.0.1"])
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{chall}")])
            .stdout(log("challtestsrv.out"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (scripts/pebble.sh installs Debian's pebble)");
        let pebble_child = Command::new("pebble")
            .args(["-config"])
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.out"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (scripts/pebble.sh installs Debian's pebble)");
        let p = Pebble {
            children: vec![chall_child, pebble_child],
            directory: format!("https://127.0.0.1:{acme}/dir"),
            listener_ca: listener_ca.clone(),
            root: dir.join("root.pem"),
            challtestsrv: format!("http://127.0.0.1:{chall}"),
            ca,
        };
        // Pebble makes a new root on every start: fetch this run's.
        let root_url = format!("https://127.0.0.1:{mgmt}/roots/0");
        let root = eventually("Pebble's root", Duration::from_secs(30), async || {
            let r = https(Method::GET, &root_url, &[&listener_ca], None).await.ok()?;
            r.status.is_success().then(|| r.body.clone())
        })
        .await;
        std::fs::write(&p.root, &root).unwrap();
        let dir_url = p.directory.clone();
        eventually("Pebble's directory", Duration::from_secs(30), async || {
            let r = https(Method::GET, &dir_url, &[&listener_ca], None).await.ok()?;
            r.status.is_success().then_some(())
        })
        .await;
        let chall_url = format!("{}/set-default-ipv4", p.challtestsrv);
        eventually("the challenge test server", Duration::from_secs(30), async || {
            let r = crate::support::send(Method::POST, &chall_url, &[], Bytes::from(r#"{"ip":"127.0.0.1"}"#)).await;
            r.status.is_success().then_some(())
        })
        .await;
        p
    }

    /// Makes every name resolve to `ip` for the CA (127.0.0.2: nothing listens there).
    pub async fn set_default_ipv4(&self, ip: &str) {
        let r = crate::support::send(
            Method::POST,
            &format!("{}/set-default-ipv4", self.challtestsrv),
            &[],
            Bytes::from(serde_json::json!({ "ip": ip }).to_string()),
        )
        .await;
        assert!(r.status.is_success(), "{}", r.text());
    }
}

/// A DNS hook script for `acme_dns_hook` that sets and clears TXT records on the challenge test
/// server (as a real one would on a DNS provider's API).
pub fn dns_hook(dir: &Path, challtestsrv: &str) -> PathBuf {
    let p = dir.join("dns-hook.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n# acme_dns_hook: $1 = present | cleanup, $2 = FQDN, $3 = value\nset -e\n\
             echo \"$1 $2\" >> '{log}'\n\
             case \"$1\" in\n  present) path=set-txt ;;\n  cleanup) path=clear-txt ;;\n  *) echo \"unknown action $1\" >&2; exit 2 ;;\nesac\n\
             curl -fsS -X POST -d \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" '{challtestsrv}'/$path\n",
            log = dir.join("dns-hook.log").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Makes a TLS connection to 127.0.0.1:`port` with SNI `host`, trusting `roots`.
pub async fn tls_connect(
    port: u16,
    host: &str,
    roots: &[&Path],
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        let pem = std::fs::read(r).unwrap();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            store.add(c.unwrap()).unwrap();
        }
    }
    let mut cfg = (*sluice_tls::client::config(store)).clone();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    tokio::time::timeout(Duration::from_secs(10), conn.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| chain(&e))
}

/// What the certificate a TLS server presents for `host` says of itself.
pub async fn presented(port: u16, host: &str, roots: &[&Path]) -> Result<sluice_tls::CertInfo, String> {
    let s = tls_connect(port, host, roots, &[b"http/1.1"]).await?;
    let certs = s.get_ref().1.peer_certificates().ok_or("no certificate")?;
    sluice_tls::certs::describe(&certs[0], host).map_err(|e| e.to_string())
}
