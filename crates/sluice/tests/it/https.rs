//! HTTPS (R1.9, issue 16) against a real ACME CA on loopback (Debian's Pebble, see `pebble`):
//! certificates issued for new endpoints by HTTP-01 and TLS-ALPN-01 before anyone calls them,
//! a wildcard by DNS-01 through a hook script, a renewal, a failed challenge reported with its
//! reason; real clients over TLS (curl with HTTP/1.1 and HTTP/2, RunPod's SDK, Chromium, a
//! WebSocket client, a server-sent-events stream, webhooks to trusted and untrusted receivers).
//! The names are real (`*.sluice.test`); only name resolution is the tests' (everything is
//! 127.0.0.1: Pebble's challenge server answers so, and the clients are told so).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{pebble::*, support::*};

const DOMAIN: &str = "sluice.test";
const API_HOST: &str = "api.sluice.test";

/// A platform issuing certificates from `pebble`; the gateway's HTTPS port is `gw` (and `http`
/// its plain one when given).
async fn acme_platform(
    dir: tempfile::TempDir,
    pebble: &Pebble,
    gw: u16,
    http: Option<u16>,
    extra: &[&str],
) -> Platform {
    let ca = pebble.listener_ca.display().to_string();
    let gw_addr = format!("127.0.0.1:{gw}");
    let mut args = vec![
        "--no-demo",
        "--domain",
        DOMAIN,
        "--acme-email",
        "ops@sluice.test",
        "--acme-directory",
        &pebble.directory,
        "--tls-extra-ca",
        &ca,
        "--gateway-addr",
        &gw_addr,
    ];
    let http_addr = http.map(|h| format!("127.0.0.1:{h}"));
    if let Some(h) = &http_addr {
        args.extend(["--gateway-http-addr", h.as_str()]);
    }
    args.extend(extra);
    Platform::start_in(dir, &args).await
}

async fn certificates(p: &Platform) -> Vec<Value> {
    let r = p.api_call(Method::GET, "/v1/certificates", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["certificates"].as_array().cloned().unwrap_or_default()
}

/// Waits until the certificate kept for `host` satisfies `ok`; returns it.
async fn certificate_until(p: &Platform, host: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let all = certificates(p).await;
        if let Some(c) = all.iter().find(|c| c["host"] == host && ok(c)) {
            return c.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            let log = p.stderr();
            let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
            panic!("timed out waiting for {what}; certificates: {all:#?}\nplatform warnings:\n{}", warnings.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn host_of(id: &str) -> String {
    format!("{id}.local.{DOMAIN}")
}

/// curl, the real one: `--resolve` stands in for DNS; returns (exit ok, stdout, stderr).
fn curl(args: &[&str], host: &str, port: u16, root: &Path) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_certificates_by_http01_before_anyone_calls_and_a_failed_challenge_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, http) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http, gw, None).await;
    let p = acme_platform(dir, &pebble, gw, Some(http), &["--hsts-max-age-secs", "600"]).await;
    assert!(p.gateway.starts_with("https://"), "{}", p.gateway);

    // The API host gets its certificate at startup.
    let api = certificate_until(&p, API_HOST, "the API host's certificate", |c| c["state"] == "valid").await;
    assert_eq!((api["source"].as_str(), api["challenge"].as_str()), (Some("acme"), Some("http-01")));
    assert!(api["issuer"].as_str().unwrap().contains("Pebble"), "{api}");

    // A new endpoint's host gets one as it is created: nobody has called it yet.
    let created = tokio::time::Instant::now();
    let ep = p.create(json!({"name": "tls", "start_command": demo_cmd(), "active_workers": 1})).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    assert_eq!(ep["url"], format!("https://{}:{gw}/", host_of(&id)));
    let cert = certificate_until(&p, &host_of(&id), "the endpoint's certificate", |c| c["state"] == "valid").await;
    println!("certificate issued {:?} after the endpoint was created", created.elapsed());
    assert!(cert["expires_at"].is_string() && cert["renew_at"].is_string(), "{cert}");
    let view = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!(view["certificate"]["state"], "valid", "{view}");
    p.wait_ready(&id, 1).await;

    // curl over HTTP/1.1 and HTTP/2, trusting Pebble's root; the worker sees https.
    let host = host_of(&id);
    let url = format!("https://{host}:{gw}/hello?x=1");
    let (ok, out, err) = curl(&["--http1.1", "-D", "-", &url], &host, gw, &pebble.root);
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("strict-transport-security: max-age=600"), "{out}");
    assert!(out.contains(r#""x-forwarded-proto":"https""#), "{out}");
    let (ok, out, err) =
        curl(&["--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", &url], &host, gw, &pebble.root);
    assert!(ok, "{err}");
    assert_eq!(out, "2 200");
    // A client that does not trust Pebble's root refuses the certificate.
    let (ok, _, err) = curl(&["-o", "/dev/null", &url], &host, gw, &pebble.listener_ca);
    assert!(!ok && err.contains("certificate"), "{err}");

    // The plain listener: everything but challenges goes to https, path and query kept.
    let r = get_with_host(&format!("http://127.0.0.1:{http}/a/b?c=1&d"), &host).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers["location"], format!("https://{host}:{gw}/a/b?c=1&d"));
    let r = get_with_host(&format!("http://127.0.0.1:{http}/.well-known/acme-challenge/nope"), &host).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The CA cannot reach the next host (its name now resolves to 127.0.0.2, where nothing
    // listens): the challenge fails, and the endpoint's view, the list and `sluice certs` say why.
    pebble.set_default_ipv4("127.0.0.2").await;
    let ep2 = p.create(json!({"name": "unreachable", "start_command": demo_cmd(), "active_workers": 0})).await;
    let id2 = ep2["id"].as_str().unwrap().to_owned();
    let failed = certificate_until(&p, &host_of(&id2), "a failed challenge", |c| c["state"] == "failed").await;
    let why = failed["last_error"].as_str().unwrap().to_owned();
    assert!(why.contains("http-01") && why.to_lowercase().contains("connection refused"), "{why}");
    assert!(failed["failures"].as_u64() >= Some(1) && failed["next_attempt"].is_string(), "{failed}");
    let view = p.api_call(Method::GET, &format!("/v1/endpoints/{id2}"), None).await.json();
    assert_eq!(view["certificate"]["state"], "failed");
    assert!(view["certificate"]["last_error"].as_str().unwrap().contains("refused"), "{view}");
    let (ok, out, err) = cli(&p, &["certs"]);
    assert!(ok, "{err}");
    assert!(out.contains(&host_of(&id2)) && out.contains("failed") && out.to_lowercase().contains("refused"), "{out}");
    // A TLS client asking for that host meanwhile gets a TLS error, not another host's certificate.
    let Err(e) = tls_connect(gw, &host_of(&id2), &[&pebble.root], &[b"http/1.1"]).await else {
        panic!("no certificate yet")
    };
    assert!(e.to_lowercase().contains("alert") || e.contains("handshake"), "{e}");
    // Reachable again: the retry after the back-off issues it.
    pebble.set_default_ipv4("127.0.0.1").await;
    certificate_until(&p, &host_of(&id2), "the certificate after the back-off", |c| c["state"] == "valid").await;
    let (ok, out, err) = cli(&p, &["certs", "--json"]);
    assert!(ok, "{err}");
    assert!(!out.contains("PRIVATE KEY") && !out.contains("key_pem"), "no key in the CLI");
    assert!(!p.stderr().contains("PRIVATE KEY"), "no key in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_and_a_short_lived_certificate_is_renewed_at_two_thirds() {
    let dir = tempfile::tempdir().unwrap();
    let gw = free_port();
    // Certificates valid for 24 s: renewed 16 s after they start.
    let pebble = Pebble::start(dir.path(), free_port(), gw, Some(24)).await;
    let p = acme_platform(dir, &pebble, gw, None, &["--acme-challenge", "tls-alpn-01"]).await;
    let ep = p.create(json!({"name": "alpn", "start_command": demo_cmd(), "active_workers": 1})).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let host = host_of(&id);
    let first = certificate_until(&p, &host, "the TLS-ALPN-01 certificate", |c| c["state"] == "valid").await;
    assert_eq!(first["challenge"], "tls-alpn-01");
    let served = presented(gw, &host, &[&pebble.root]).await.unwrap();
    assert_eq!(served.names, std::slice::from_ref(&host));
    p.wait_ready(&id, 1).await;
    let r = https(Method::GET, &format!("https://{host}:{gw}/x"), &[&pebble.root], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // Renewed at two thirds of its life, and served without a restart.
    let renewed = certificate_until(&p, &host, "the renewal", |c| {
        c["state"] == "valid" && c["expires_at"] != first["expires_at"]
    })
    .await;
    assert!(renewed["failures"] == 0 && renewed["last_error"].is_null(), "{renewed}");
    let again = eventually("the renewed certificate served", Duration::from_secs(30), async || {
        let s = presented(gw, &host, &[&pebble.root]).await.ok()?;
        (s.serial != served.serial).then_some(s)
    })
    .await;
    assert!(again.not_after > served.not_after);
    let r = https(Method::GET, &format!("https://{host}:{gw}/x"), &[&pebble.root], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_per_data_center_by_dns01_through_a_hook_covers_new_endpoints_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = free_port();
    let pebble = Pebble::start(dir.path(), free_port(), gw, None).await;
    let hook = dns_hook(dir.path(), &pebble.challtestsrv);
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "acme_wildcards = true\nacme_dns_hook = {:?}\nacme_challenge = \"tls-alpn-01\"\n",
            hook.display().to_string()
        ),
    )
    .unwrap();
    let hook_log = dir.path().join("dns-hook.log");
    let p = acme_platform(dir, &pebble, gw, None, &["--config", config.to_str().unwrap()]).await;
    let wild =
        certificate_until(&p, "*.local.sluice.test", "the data center's wildcard", |c| c["state"] == "valid").await;
    assert_eq!(wild["challenge"], "dns-01");
    let api = certificate_until(&p, API_HOST, "the API host's certificate", |c| c["state"] == "valid").await;
    assert_eq!(api["challenge"], "tls-alpn-01");
    let log = read(&hook_log);
    assert!(
        log.contains("present _acme-challenge.local.sluice.test.")
            && log.contains("cleanup _acme-challenge.local.sluice.test."),
        "{log}"
    );

    // A new endpoint needs nothing issued: the wildcard serves it at once.
    let ep = p.create(json!({"name": "wild", "start_command": demo_cmd(), "active_workers": 1})).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let served = presented(gw, &host_of(&id), &[&pebble.root]).await.unwrap();
    assert_eq!(served.names, ["*.local.sluice.test"]);
    let view = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await.json();
    assert_eq!(
        (view["certificate"]["host"].as_str(), view["certificate"]["state"].as_str()),
        (Some("*.local.sluice.test"), Some("valid"))
    );
    assert!(certificates(&p).await.iter().all(|c| c["host"] != host_of(&id)), "no per-host certificate");
    p.wait_ready(&id, 1).await;
    let (ok, out, err) = curl(
        &["-o", "/dev/null", "-w", "%{http_code}", &format!("https://{}:{gw}/", host_of(&id))],
        &host_of(&id),
        gw,
        &pebble.root,
    );
    assert!(ok && out == "200", "{out} {err}");
}

/// An HTTPS webhook receiver (hyper, HTTP/1.1 and HTTP/2 by ALPN) with a certificate from `ca`
/// for 127.0.0.1: the bodies it got.
async fn https_receiver(ca: &TestCa) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::BodyExt as _;
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let certs = sluice_tls::CertStore::new();
    let (k, info) =
        sluice_tls::certs::certified(&sluice_tls::Pem { cert_chain: cert, key }, "receiver", sluice_control::now())
            .unwrap();
    certs.set(sluice_tls::Source::Files, vec![sluice_tls::Served { info, key: k }]);
    let acceptor = sluice_tls::server::acceptor(certs);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/hook", l.local_addr().unwrap().port());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, g) = (acceptor.clone(), g.clone());
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        g.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (url, got)
}

/// Chromium trusting `root` (through its NSS database in `home`), every name on 127.0.0.1.
async fn trusting_browser(home: &Path, root: &Path) -> crate::dashboard::Browser {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    let ok = |c: &mut Command| c.status().expect("certutil (scripts/pebble.sh installs libnss3-tools)").success();
    assert!(ok(Command::new("certutil").args(["-N", "-d", &sql, "--empty-password"])));
    assert!(ok(Command::new("certutil").args(["-A", "-d", &sql, "-n", "pebble", "-t", "C,,", "-i"]).arg(root)));
    crate::dashboard::browser_with(&["--host-resolver-rules=MAP *.sluice.test 127.0.0.1".to_owned()], Some(home)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_over_tls_sdk_browser_websocket_events_timeout_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, http) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http, gw, None).await;
    let home = dir.path().join("home");
    let p = acme_platform(tempfile::tempdir().unwrap(), &pebble, gw, Some(http), &[]).await;
    let root: &Path = &pebble.root;
    let ep = p
        .create(json!({"name": "web", "start_command": demo_cmd(), "active_workers": 1, "execution_timeout_secs": 1}))
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let host = host_of(&id);
    certificate_until(&p, &host, "the endpoint's certificate", |c| c["state"] == "valid").await;
    certificate_until(&p, API_HOST, "the API host's certificate", |c| c["state"] == "valid").await;
    p.wait_ready(&id, 1).await;

    // Server-sent events arrive one by one, over TLS as over plain HTTP.
    let client = https_client(&[root]);
    let req = http::Request::get(format!("https://{host}:{gw}/stream?n=4&interval_ms=300"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    use http_body_util::BodyExt as _;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data()
            && !d.is_empty()
        {
            arrivals.push(start.elapsed());
        }
    }
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    assert!(
        arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(600),
        "streamed, not buffered: {arrivals:?}"
    );

    // The execution timeout holds over TLS.
    let r = https(Method::GET, &format!("https://{host}:{gw}/sleep?ms=3000"), &[root], None).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());

    // A WebSocket over TLS (wss://).
    {
        use futures_util::{SinkExt as _, StreamExt as _};
        let tls = tls_connect(gw, &host, &[root], &[b"http/1.1"]).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{host}:{gw}/ws"), tls).await.unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text("over tls")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "over tls");
    }

    // RunPod's SDK over https://, through the API's host (its /v2), trusting Pebble's root.
    let q = p
        .create(json!({"name": "q", "type": "queue", "delivery": "push", "job_path": "/_demo/job",
                       "start_command": demo_cmd(), "active_workers": 1}))
        .await;
    let qid = q["id"].as_str().unwrap().to_owned();
    let out = Command::new(python())
        .arg(py_script("https_client.py"))
        .args([&format!("https://{API_HOST}:{gw}"), &p.key, &qid])
        .env("SSL_CERT_FILE", root)
        .env("REQUESTS_CA_BUNDLE", root)
        .env("SLUICE_TEST_DOMAIN", DOMAIN)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all ok"), "{text}");

    // A queue endpoint whose worker takes jobs with RunPod's worker protocol (pull): with the
    // gateway on TLS, workers reach the platform over its loopback worker listener.
    let pull =
        p.create(json!({"name": "pull", "type": "queue", "start_command": demo_cmd(), "active_workers": 1})).await;
    assert_eq!(pull["delivery"], "pull");
    let pid = pull["id"].as_str().unwrap().to_owned();
    let body = json!({"input": {"sleep_ms": 1}}).to_string();
    let run = format!("https://{API_HOST}:{gw}/v2/{pid}/runsync");
    let r = https_as(Method::POST, &run, &[root], Some(&p.key), Some(&body)).await.unwrap();
    assert_eq!(r.json()["status"], "COMPLETED", "{}", r.text());

    // Webhooks: to an https:// receiver the platform trusts (tls_extra_ca), and one it does not
    // (its failure is in the endpoint's log, and nothing went out in plain HTTP).
    let (good_url, good) = https_receiver(&pebble.ca).await;
    let (bad_url, bad) = https_receiver(&TestCa::new("Nobody trusts me")).await;
    for (url, n) in [(&good_url, 1), (&bad_url, 2)] {
        let body = json!({"input": {"n": n}, "webhook": url}).to_string();
        let run = format!("https://{API_HOST}:{gw}/v2/{qid}/runsync");
        let r = https_as(Method::POST, &run, &[root], Some(&p.key), Some(&body)).await.unwrap();
        assert_eq!(r.json()["status"], "COMPLETED", "{}", r.text());
    }
    eventually("the trusted receiver's webhook", Duration::from_secs(30), async || {
        good.lock().unwrap().iter().any(|b| b.contains(r#""n":1"#)).then_some(())
    })
    .await;
    let logs = eventually("the untrusted webhook's failure", Duration::from_secs(60), async || {
        let r = p.api_call(Method::GET, &format!("/v1/endpoints/{qid}/logs?q=webhook"), None).await;
        let t = r.text();
        t.contains("certificate").then_some(t)
    })
    .await;
    assert!(logs.contains("UnknownIssuer") && logs.contains("not retried"), "{logs}");
    assert_eq!(logs.matches("webhook of job").count(), 1, "only the untrusted one failed: {logs}");
    assert!(bad.lock().unwrap().iter().all(|b| !b.contains(r#""n":2"#)), "the untrusted receiver got nothing readable");

    // The status page over https:// in Chromium, which trusts Pebble's root.
    let b = trusting_browser(&home, root).await;
    let c = &b.client;
    c.goto(&format!("https://{API_HOST}:{gw}/")).await.unwrap();
    c.wait().for_element(fantoccini::Locator::Css("#key")).await.unwrap().send_keys(&p.key).await.unwrap();
    c.find(fantoccini::Locator::Css("#login button[type=submit]")).await.unwrap().click().await.unwrap();
    c.wait().for_element(fantoccini::Locator::Css(&format!("a[href='#/e/{id}']"))).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().starts_with("https://api.sluice.test"));
    crate::dashboard::screenshot(c, "https-status-page.png").await;
}

/// A platform serving certificates from files of a test CA (no ACME).
struct Files {
    p: Platform,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    test_ca: TestCa,
}

async fn files_platform() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let test_ca = TestCa::new("Sluice files CA");
    let ca = test_ca.write_ca(dir.path(), "ca.pem");
    let (cert, key) = write_pair(dir.path(), "site", &test_ca.issue(&["*.local.sluice.test", API_HOST, "127.0.0.1"]));
    let (c, k) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
    let p = Platform::start_in(dir, &["--no-demo", "--domain", DOMAIN, "--tls-cert", &c, "--tls-key", &k, "--api-tls"])
        .await;
    Files { p, ca, cert, key, test_ca }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_reload_without_dropping_connections_and_bad_clients_hold_nothing() {
    let Files { p, ca, cert, key, test_ca } = files_platform().await;
    assert!(p.api.starts_with("https://") && p.gateway.starts_with("https://"), "{} {}", p.api, p.gateway);
    let gw = p.gateway_port();
    let api = p.api.clone();
    // The CLI over https://: with the CA, and refusing without it.
    let cli_https = |args: &[&str], with_ca: bool| {
        let mut c = Command::new(BIN);
        c.args(args).env("SLUICE_API", &api).env("SLUICE_API_KEY", &p.key).env_remove("SLUICE_DATA_DIR");
        if with_ca {
            c.env("SLUICE_CA_CERT", &ca);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli_https(
        &[
            "endpoint",
            "create",
            "--name",
            "files",
            "--start-command",
            &demo_cmd(),
            "--active-workers",
            "1",
            "--public",
            "true",
        ],
        true,
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli_https(&["endpoint", "list"], false);
    assert!(!ok && err.to_lowercase().contains("certificate"), "{err}");
    let (ok, out, err) = cli_https(&["certs"], true);
    assert!(ok && out.contains("*.local.sluice.test") && out.contains("file"), "{out} {err}");
    let list: Value = serde_json::from_str(&cli_https(&["endpoint", "list", "--json"], true).1).unwrap();
    let id = list["endpoints"][0]["id"].as_str().unwrap().to_owned();
    let host = host_of(&id);
    let r = https(Method::GET, &format!("{api}/v1/endpoints/{id}"), &[&ca], None).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the API over TLS still wants a key");
    // Ready, through the gateway.
    let url = format!("https://{host}:{gw}/ok");
    eventually("the endpoint over https", Duration::from_secs(60), async || {
        let r = https(Method::GET, &url, &[&ca], None).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;

    // Garbage instead of a TLS hello: the connection is closed; the gateway goes on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed, not held")
            .unwrap_or(0);
        assert!(n == 0 || buf[0] == 0x15, "an alert or nothing: {:?}", &buf[..n]);
    }
    // A hello for a name no certificate covers: a TLS error, not another host's certificate.
    let Err(e) = tls_connect(gw, "unknown.other.test", &[&ca], &[b"http/1.1"]).await else { panic!("refused") };
    assert!(e.to_lowercase().contains("alert") || e.contains("handshake"), "{e}");

    // Slow handshakes (connections that send nothing, or half a hello) hold neither the accept
    // loop nor the worker: a real client is served at once beside 300 of them.
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw)).await.unwrap();
        if i % 3 == 0 {
            use tokio::io::AsyncWriteExt;
            s.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        stalled.push(s);
    }
    let t = tokio::time::Instant::now();
    let r = https(Method::GET, &url, &[&ca], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(3), "served beside stalled handshakes in {:?}", t.elapsed());

    // A keep-alive connection opened before the certificate file changes...
    let tls = tls_connect(gw, &host, &[&ca], &[b"http/1.1"]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get =
        |h: &str| http::Request::get("/ok").header("host", h).body(http_body_util::Full::new(Bytes::new())).unwrap();
    assert_eq!(sender.send_request(get(&host)).await.unwrap().status(), StatusCode::OK);
    let before = presented(gw, &host, &[&ca]).await.unwrap();
    // ...then the files change (a renewal by another tool) and SIGHUP says so.
    write_pair(cert.parent().unwrap(), "site", &test_ca.issue(&["*.local.sluice.test", API_HOST, "127.0.0.1"]));
    assert_eq!(
        (cert.file_name().unwrap(), key.file_name().unwrap()),
        (std::ffi::OsStr::new("site.pem"), std::ffi::OsStr::new("site.key"))
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let after = eventually("the new certificate served", Duration::from_secs(10), async || {
        let s = presented(gw, &host, &[&ca]).await.ok()?;
        (s.serial != before.serial).then_some(s)
    })
    .await;
    assert_ne!(after.serial, before.serial);
    // The connection made before is still served.
    let r = sender.send_request(get(&host)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A file that changes into garbage is refused; the certificate held keeps serving.
    let refusals = || p.stderr().matches("cannot be used; keeping the previous certificate").count();
    let before_refusals = refusals();
    std::fs::write(&cert, "not a certificate").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually("the refusal logged", Duration::from_secs(10), async || (refusals() > before_refusals).then_some(()))
        .await;
    assert_eq!(presented(gw, &host, &[&ca]).await.unwrap().serial, after.serial);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_stop_the_start_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new("Sluice bad files CA");
    let (good_c, good_k) = write_pair(d, "good", &ca.issue(&["a.sluice.test"]));
    let (_, other_k) = write_pair(d, "other", &ca.issue(&["b.sluice.test"]));
    let (old_c, old_k) = write_pair(d, "expired", &ca.issue_valid(&["a.sluice.test"], 2000, 2001));
    let (new_c, new_k) = write_pair(d, "future", &ca.issue_valid(&["a.sluice.test"], 2090, 2091));
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let missing = d.join("missing.pem");
    let p = |x: &PathBuf| x.to_str().unwrap().to_owned();
    for (cert, key, needles) in [
        (p(&missing), p(&good_k), vec!["missing.pem", "No such file"]),
        (p(&good_c), p(&other_k), vec!["good.pem", "does not belong to the certificate"]),
        (p(&old_c), p(&old_k), vec!["expired.pem", "expired at 2001-01-01"]),
        (p(&new_c), p(&new_k), vec!["future.pem", "not valid before 2090-01-01"]),
        (p(&garbage), p(&good_k), vec!["garbage.pem", "no PEM certificate"]),
        (p(&good_c), p(&garbage), vec!["garbage.pem", "no PEM private key"]),
    ] {
        let out = Command::new(BIN)
            .args(["up", "--no-demo", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--data-dir"])
            .arg(d.join("data"))
            .args(["--tls-cert", &cert, "--tls-key", &key])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert}: started");
        for n in needles {
            assert!(err.contains(n), "{cert} / {key}: {n:?} not in {err}");
        }
        assert!(!err.contains("PRIVATE KEY") && !err.contains("BEGIN"), "no key material: {err}");
    }
    let out = Command::new(BIN)
        .args(["up", "--no-demo", "--data-dir"])
        .arg(d.join("data"))
        .args(["--tls-extra-ca", &p(&garbage)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tls_extra_ca") && err.contains("garbage.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_its_control_plane_over_tls_and_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let test_ca = TestCa::new("Sluice split CA");
    let ca = test_ca.write_ca(dir.path(), "ca.pem");
    let (cert, key) = write_pair(dir.path(), "site", &test_ca.issue(&["*.local.sluice.test", API_HOST, "127.0.0.1"]));
    let api_port = free_port();
    let api = format!("https://127.0.0.1:{api_port}");
    let data = dir.path().join("data");
    let log = |n: &str| std::fs::File::create(dir.path().join(n)).unwrap();
    let mut control = Command::new(BIN)
        .args(["control", "--no-demo", "--domain", DOMAIN, "--api-tls", "--api-addr", &format!("127.0.0.1:{api_port}")])
        .args(["--gateway-addr", "127.0.0.1:443", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(log("control.out"))
        .stderr(log("control.err"))
        .spawn()
        .unwrap();
    let admin = eventually("the admin key", Duration::from_secs(30), async || {
        std::fs::read_to_string(data.join("addresses.json")).ok()?;
        std::fs::read_to_string(data.join("admin.key")).ok().map(|k| k.trim().to_owned())
    })
    .await;
    let gw = free_port();
    let mut gateway = Command::new(BIN)
        .args(["gateway", "--control", &api, "--api-key", &admin, "--domain", DOMAIN])
        .args(["--gateway-addr", &format!("127.0.0.1:{gw}"), "--ca-cert"])
        .arg(&ca)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--api-host", API_HOST])
        .stdout(log("gateway.out"))
        .stderr(log("gateway.err"))
        .spawn()
        .unwrap();
    let auth = format!("Bearer {admin}");
    let body = json!({"name": "split", "start_command": demo_cmd(), "active_workers": 1, "public": true}).to_string();
    let client = https_client(&[&ca]);
    let req = http::Request::post(format!("{api}/v1/endpoints"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    use http_body_util::BodyExt as _;
    let created: Value =
        serde_json::from_slice(&client.request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes())
            .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["url"], format!("https://{}/", host_of(&id)), "443 is left out of the URL");
    let url = format!("https://{}:{gw}/ok", host_of(&id));
    eventually("the endpoint through the following gateway", Duration::from_secs(60), async || {
        let r = https(Method::GET, &url, &[&ca], None).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    // The API's host on the gateway reaches the control plane (forwarded over TLS).
    let r = https(Method::GET, &format!("https://{API_HOST}:{gw}/v1/endpoints"), &[&ca], None).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // Ctrl-C, not kill -9: the control plane stops its worker (a killed one would leave it
    // running for the next run to adopt, and no next run comes).
    for c in [&mut gateway, &mut control] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    }
    let status = control.wait().unwrap();
    let _ = gateway.wait();
    let left = processes_writing_into(&data);
    for pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("control.err")).unwrap());
    assert_eq!(left, Vec::<u32>::new(), "no worker left running");
}
