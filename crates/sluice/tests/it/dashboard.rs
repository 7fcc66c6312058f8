//! The status page (R7.1, R7.4) in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/browser.sh`), driven over WebDriver: sign in, open
//! an endpoint, watch the graph move under load and a log line arrive, search the log, and check
//! it on a phone-sized screen. Screenshots go to `target/test-artifacts/`.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http::Method;
use serde_json::json;

use crate::support::*;

pub(crate) struct Browser {
    driver: Child,
    pub(crate) client: Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed never closed its session: its Chromium outlives the driver. Its
        // processes are the ones started with this browser's own profile directory.
        let mine = format!("--user-data-dir={}", self._profile.path().display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmd.split(|b| *b == 0).any(|arg| arg == mine.as_bytes()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

pub(crate) async fn browser() -> Browser {
    browser_with(&[], None).await
}

/// A headless Chromium with `args` added; `home`: its HOME (where its NSS certificate database
/// is, for a test root it should trust).
pub(crate) async fn browser_with(args: &[String], home: Option<&std::path::Path>) -> Browser {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut driver = Command::new("chromedriver");
    if let Some(h) = home {
        driver.env("HOME", h);
    }
    let driver = driver
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/browser.sh installs Debian's chromium-driver)");
    eventually("chromedriver listening", Duration::from_secs(20), async || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let mut chrome_args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    chrome_args.extend(args.iter().cloned());
    let caps = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": chrome_args}});
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Browser { driver, client, _profile: profile }
}

pub(crate) fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub(crate) async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(artifact(name), png).unwrap();
}

/// Waits until the element's text satisfies `ok`; returns the text.
pub(crate) async fn text_until(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(what, Duration::from_secs(30), async || {
        let t = c.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
        ok(&t).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_signs_in_shows_an_endpoint_live_and_reads_on_a_phone() {
    let p = Platform::start().await;
    let cmd = format!("(i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done) & {}", demo_cmd());
    let id = p
        .create_demo(
            "chatty",
            json!({"public": false, "start_command": cmd, "max_workers": 1, "concurrency_per_worker": 8}),
        )
        .await;
    p.wait_ready(&id, 1).await;
    let b = browser().await;
    let c = &b.client;

    // A wrong key is refused on the page; the admin key signs in.
    c.goto(&format!("{}/", p.api)).await.unwrap();
    c.wait().for_element(Locator::Css("#key")).await.unwrap().send_keys("sk_wrong").await.unwrap();
    c.find(Locator::Css("#login button[type=submit]")).await.unwrap().click().await.unwrap();
    text_until(c, "#login-error", "the refusal", |t| t.contains("Sign-in failed")).await;
    // By keyboard: type the key, press Enter (the form submits).
    let key = c.find(Locator::Css("#key")).await.unwrap();
    key.clear().await.unwrap();
    key.send_keys(&format!("{}\u{E007}", p.key)).await.unwrap();

    // The endpoints list: state, workers ready/desired, requests per second, cost today.
    let list = text_until(c, "#endpoints tbody", "the endpoint listed", |t| t.contains("chatty")).await;
    assert!(list.contains("running") && list.contains("1 / 1"), "{list}");
    screenshot(c, "dashboard-endpoints.png").await;

    // The endpoint's page, with seed 002's figures.
    c.find(Locator::Css(&format!("a[href='#/e/{id}']"))).await.unwrap().click().await.unwrap();
    let figures = text_until(c, "#figures", "the figures", |t| t.contains("Fully autoscaled concurrency limit")).await;
    assert!(figures.contains("Current concurrency limit") && figures.contains("Max requests per minute"), "{figures}");

    // Load: 6 requests held 4 s each; the graph of running requests rises.
    let url = format!("{}/e/{id}/sleep?ms=4000", p.gateway);
    let load: Vec<_> = (0..6)
        .map(|_| {
            let (url, key) = (url.clone(), p.key.clone());
            tokio::spawn(
                async move { send(Method::GET, &url, &[("authorization".into(), key)], Bytes::new()).await.status },
            )
        })
        .collect();
    let peak = eventually("the graph to show the load", Duration::from_secs(30), async || {
        let line = c.find(Locator::Css("#running-line")).await.ok()?;
        let max: u64 = line.attr("data-max").await.ok()??.parse().ok()?;
        (max >= 3).then_some(max)
    })
    .await;
    assert!(peak <= 6, "{peak}");
    let points = c.find(Locator::Css("#running-line")).await.unwrap().attr("points").await.unwrap().unwrap();
    assert!(points.split(' ').count() >= 2, "{points}");
    let figures = text_until(c, "#figures", "running requests shown", |t| t.contains("Running requests")).await;
    assert!(figures.contains("Workers ready / desired"), "{figures}");
    for l in load {
        assert!(l.await.unwrap().is_success());
    }

    // The worker's output arrives in the log panel; a search narrows it.
    text_until(c, "#log", "a log line in the panel", |t| t.contains("tick")).await;
    let workers = text_until(c, "#workers tbody", "the worker listed", |t| t.contains("ready")).await;
    assert!(!workers.is_empty());
    screenshot(c, "dashboard-endpoint.png").await;
    c.find(Locator::Css("#log-q")).await.unwrap().send_keys("launched").await.unwrap();
    c.find(Locator::Css("#log-search button")).await.unwrap().click().await.unwrap();
    let log = text_until(c, "#log", "the search result", |t| t.contains("worker launched")).await;
    assert!(!log.contains("tick"), "only matching lines: {log}");

    // Accessible: every input has a label, the graph has a title; on a phone nothing overflows.
    let unlabeled = c
        .execute("return [...document.querySelectorAll('input')].filter(i => i.labels.length === 0).length", vec![])
        .await
        .unwrap();
    assert_eq!(unlabeled, json!(0));
    assert!(c.find(Locator::Css("svg.graph title")).await.is_ok());
    c.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let overflow = c
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap() <= 0, "horizontal overflow on a phone: {overflow}");
    screenshot(c, "dashboard-endpoint-phone.png").await;

    // The account page: balance, usage and keys.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{}/#/account", p.api)).await.unwrap();
    let accounts = text_until(c, "#accounts tbody", "the account", |t| t.contains("admin")).await;
    assert!(accounts.contains("unlimited"), "{accounts}");
    text_until(c, "#keys tbody", "the keys", |t| t.contains("admin")).await;
    screenshot(c, "dashboard-account.png").await;
    b.client.clone().close().await.unwrap();
    p.stop();
}
