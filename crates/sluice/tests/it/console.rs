//! The console in a real headless Chromium (see `dashboard.rs`): create an endpoint from a
//! template and from scratch with the API's field errors shown next to their fields, edit it,
//! stop and start it, read the workers chart with a shadow policy's line and the decision log,
//! run a replay, create and revoke a key, delete an endpoint through the confirmation, and read
//! it all on a phone-sized screen. Screenshots go to `target/test-artifacts/`.
use std::time::Duration;

use fantoccini::{Client, Locator};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    dashboard::{browser, screenshot, text_until},
    support::*,
};

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

async fn click(c: &Client, css: &str) {
    c.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Replaces the text of an input.
async fn fill(c: &Client, css: &str, value: &str) {
    let el = c.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// The endpoint id of the page shown (`#/e/ID`), once the page is one.
async fn shown_endpoint(c: &Client) -> String {
    eventually("an endpoint's page", Duration::from_secs(30), async || {
        let url = c.current_url().await.ok()?;
        let id = url.fragment()?.strip_prefix("/e/")?.to_owned();
        (!id.is_empty() && !id.contains('/')).then_some(id)
    })
    .await
}

/// An input's error: its text next to the field, the field marked invalid and described by it.
async fn field_error(c: &Client, id: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let msg = text_until(c, &format!("#{id}-error"), what, ok).await;
    assert_eq!(attr(c, &format!("#{id}"), "aria-invalid").await.as_deref(), Some("true"), "{id}");
    let described = attr(c, &format!("#{id}"), "aria-describedby").await.unwrap_or_default();
    assert!(described.split(' ').any(|d| d == format!("{id}-error")), "{id}: {described}");
    msg
}

/// Nothing overflows sideways (tables scroll inside their own containers) and every input,
/// select and text area has a label.
async fn fits_and_labelled(c: &Client, what: &str) {
    let overflow = js(c, "return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
    if overflow.as_i64().unwrap() > 0 {
        // Name the elements that stick out, for the failure message.
        let wide = js(
            c,
            "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')]\
             .filter(e => e.getBoundingClientRect().right + scrollX > w + 1 && (!e.parentElement.closest('.scroll')\
             || ['absolute', 'fixed'].includes(getComputedStyle(e).position)))\
             .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 12)",
        )
        .await;
        panic!("{what}: horizontal overflow {overflow}: {wide}");
    }
    let unlabeled = js(
        c,
        "return [...document.querySelectorAll('input, select, textarea')].filter(i => i.labels.length === 0)\
         .map(i => i.id || i.name)",
    )
    .await;
    assert_eq!(unlabeled, json!([]), "{what}: inputs without a label");
}

/// A screenshot of the whole page: the window is made as tall as the page for it.
async fn page_screenshot(c: &Client, name: &str) {
    let (w, h) = c.get_window_size().await.unwrap();
    let inner = js(c, "window.scrollTo(0, 0); return window.innerHeight").await.as_u64().unwrap();
    let page = js(c, "return document.documentElement.scrollHeight").await.as_u64().unwrap();
    let tall = (page + h.saturating_sub(inner)).clamp(h, 8000);
    c.set_window_size(w as u32, tall as u32).await.unwrap();
    eventually("the tall window", Duration::from_secs(10), async || {
        (js(c, "return window.innerHeight").await.as_u64()? > inner || tall == h).then_some(())
    })
    .await;
    screenshot(c, name).await;
    c.set_window_size(w as u32, h as u32).await.unwrap();
}

async fn endpoint_json(p: &Platform, id: &str) -> Value {
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_edits_charts_replays_and_deletes_endpoints_and_manages_keys() {
    let p = Platform::start().await;
    // An endpoint with a knative shadow, woken by one request: both lines rise to one worker.
    let shadowed = p
        .create_demo(
            "shadowed",
            json!({"shadow_policies": ["knative"], "active_workers": 0, "max_workers": 2, "idle_timeout_secs": 1}),
        )
        .await;
    assert_eq!(p.get(&shadowed, "/sleep?ms=50").await.status, StatusCode::OK);
    // The template that runs here: `custom` takes a start command, which the process runtime runs.
    let templates = p.api_call(Method::GET, "/v1/templates", None).await.json();
    let custom = templates["templates"].as_array().unwrap().iter().find(|t| t["name"] == "custom").expect("custom");
    assert!(custom["params"].as_array().unwrap().iter().any(|x| x["name"] == "start_command"), "{custom}");

    let b = browser().await;
    let c = &b.client;
    c.goto(&format!("{}/", p.api)).await.unwrap();
    fill(c, "#key", &format!("{}{ENTER}", p.key)).await;
    text_until(c, "#endpoints tbody", "the endpoints list", |t| t.contains("shadowed")).await;

    // From a template: the required answer missing is named next to its field, then it deploys.
    click(c, "#new-endpoint").await;
    c.wait().for_element(Locator::Css("#tpl-select option[value=custom]")).await.unwrap();
    c.find(Locator::Css("#tpl-select")).await.unwrap().select_by_value("custom").await.unwrap();
    let desc = text_until(c, "#tpl-desc", "the template's description", |t| t.contains("Any image")).await;
    assert!(!desc.is_empty());
    click(c, "#tpl-form button[type=submit]").await;
    field_error(c, "tpl-set-image", "the missing image", |t| t.contains("needs image")).await;
    let summary = text_until(c, "#tpl-form .error-summary", "the summary", |t| !t.is_empty()).await;
    assert!(summary.contains("image"), "{summary}");
    fits_and_labelled(c, "new endpoint").await;
    fill(c, "#tpl-set-image", "demo/worker:1").await;
    fill(c, "#tpl-set-start_command", &demo_cmd()).await;
    fill(c, "#tpl-set-name", "from-template").await;
    fill(c, "#tpl-set-active_workers", "1").await;
    click(c, "#tpl-form button[type=submit]").await;
    let from_template = shown_endpoint(c).await;
    text_until(c, "#title", "the deployed endpoint", |t| t.contains("from-template")).await;
    text_until(c, "#flash", "the confirmation", |t| t.contains("Created from-template")).await;
    let e = endpoint_json(&p, &from_template).await;
    assert_eq!((e["image"].as_str(), e["active_workers"].as_u64()), (Some("demo/worker:1"), Some(1)), "{e}");
    text_until(c, "#workers tbody", "its worker ready", |t| t.contains("ready")).await;

    // From scratch: an invalid value is shown next to its field (and focused), then another
    // field's error replaces it, then it is created.
    c.goto(&format!("{}/#/new", p.api)).await.unwrap();
    fill(c, "#scratch-name", "scratch").await;
    fill(c, "#scratch-start_command", &demo_cmd()).await;
    fill(c, "#scratch-max_workers", "-1").await;
    fill(c, "#scratch-shadow_policies", "knative, nope").await;
    click(c, "#scratch-form button[type=submit]").await;
    field_error(c, "scratch-max_workers", "the max_workers error", |t| t.contains("must be at least")).await;
    let focused = js(c, "return document.activeElement.id").await;
    assert_eq!(focused, json!("scratch-max_workers"));
    let summary = text_until(c, "#scratch-form .error-summary", "the summary", |t| !t.is_empty()).await;
    assert!(summary.contains("Max workers"), "{summary}");
    fill(c, "#scratch-max_workers", "2").await;
    click(c, "#scratch-form button[type=submit]").await;
    let msg =
        field_error(c, "scratch-shadow_policies", "the unknown shadow policy", |t| t.contains("unknown policy")).await;
    assert!(msg.starts_with("item 2:"), "names the item: {msg}");
    assert_eq!(attr(c, "#scratch-max_workers", "aria-invalid").await, None, "the fixed field is no longer invalid");
    page_screenshot(c, "console-new-error.png").await;
    fill(c, "#scratch-shadow_policies", "knative").await;
    click(c, "#scratch-form button[type=submit]").await;
    let scratch = shown_endpoint(c).await;
    assert_ne!(scratch, from_template);
    text_until(c, "#title", "the new endpoint", |t| t.contains("scratch")).await;
    let e = endpoint_json(&p, &scratch).await;
    assert_eq!((&e["max_workers"], &e["shadow_policies"]), (&json!(2), &json!(["knative"])), "{e}");

    // A replay with no recorded traffic says so.
    click(c, "#replay-form button[type=submit]").await;
    text_until(c, "#replay-error", "the replay's refusal", |t| t.contains("no recorded requests in this window")).await;

    // Edit: an invalid value, then a valid one; only the change is sent.
    click(c, "#edit").await;
    text_until(c, "#edit-title", "the settings page", |t| t.contains("scratch")).await;
    fill(c, "#edit-max_workers", "-5").await;
    click(c, "#edit-form button[type=submit]").await;
    field_error(c, "edit-max_workers", "the edit's error", |t| t.contains("must be at least")).await;
    fits_and_labelled(c, "settings").await;
    fill(c, "#edit-max_workers", "3").await;
    click(c, "#edit-form button[type=submit]").await;
    text_until(c, "#flash", "saved", |t| t.contains("Saved max_workers of scratch")).await;
    let e = endpoint_json(&p, &scratch).await;
    assert_eq!((&e["max_workers"], &e["shadow_policies"]), (&json!(3), &json!(["knative"])), "{e}");

    // Stop and start.
    let stop = text_until(c, "#stop-start", "the stop button", |t| t == "Stop").await;
    assert_eq!(stop, "Stop");
    click(c, "#stop-start").await;
    text_until(c, "#title", "stopped", |t| t.contains("(stopped)")).await;
    assert_eq!(endpoint_json(&p, &scratch).await["status"], "stopped");
    text_until(c, "#stop-start", "the start button", |t| t == "Start").await;
    click(c, "#stop-start").await;
    text_until(c, "#title", "running again", |t| t.contains("(running)")).await;

    // Delete, through the confirmation: Escape keeps it, the named button deletes it.
    click(c, "#delete").await;
    let yes = text_until(c, "#confirm-yes", "the confirmation", |t| t.starts_with("Delete endpoint")).await;
    assert_eq!(yes, "Delete endpoint scratch");
    assert_eq!(js(c, "return document.activeElement.id").await, json!("confirm-no"), "focus on the safe choice");
    c.active_element().await.unwrap().send_keys(ESCAPE).await.unwrap();
    eventually("the dialog closed", Duration::from_secs(10), async || {
        (js(c, "return document.getElementById('confirm').open").await == json!(false)).then_some(())
    })
    .await;
    assert_eq!(endpoint_json(&p, &scratch).await["name"], "scratch");
    click(c, "#delete").await;
    click(c, "#confirm-yes").await;
    text_until(c, "#endpoints tbody", "the list without it", |t| t.contains("shadowed") && !t.contains("scratch"))
        .await;
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{scratch}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());

    // The shadowed endpoint: the knative line beside the desired count, with its GPU-seconds.
    c.goto(&format!("{}/#/e/{shadowed}", p.api)).await.unwrap();
    let gpu_s = eventually("the knative line", Duration::from_secs(30), async || {
        let s: f64 = attr(c, "polyline[data-policy=knative]", "data-gpu-seconds").await?.parse().ok()?;
        (s > 0.0).then_some(s)
    })
    .await;
    let legend =
        text_until(c, "#workers-chart li[data-policy=knative]", "the legend", |t| t.contains("GPU-seconds")).await;
    assert!(legend.contains("knative (shadow)") && legend.contains(&format!("{gpu_s:.1} GPU-seconds")), "{legend}");
    let points = attr(c, "polyline[data-policy=knative]", "points").await.unwrap();
    assert!(points.split(' ').count() >= 3, "a step up: {points}");
    assert!(attr(c, "polyline[data-policy=actual]", "points").await.is_some());
    // The decision log beside it: a decision's inputs one click away.
    let up = "//ol[@id='decisions']//details[contains(summary, '0 → 1')]";
    let decision = eventually("the scale-up decision", Duration::from_secs(30), async || {
        c.find(Locator::XPath(&format!("{up}/summary"))).await.ok()?.text().await.ok()
    })
    .await;
    assert!(decision.contains("scale up"), "{decision}");
    let pre = format!("{up}/pre");
    assert_eq!(c.find(Locator::XPath(&pre)).await.unwrap().text().await.unwrap(), "", "closed at first");
    // By keyboard: Enter on the focused summary opens it.
    c.find(Locator::XPath(&format!("{up}/summary"))).await.unwrap().send_keys(ENTER).await.unwrap();
    let inputs = eventually("the decision's inputs", Duration::from_secs(30), async || {
        let t = c.find(Locator::XPath(&pre)).await.ok()?.text().await.ok()?;
        t.contains("in_flight").then_some(t)
    })
    .await;
    assert!(inputs.contains("\"preset\""), "{inputs}");
    // A shorter window: the recorded request and its start in the traffic charts.
    c.find(Locator::Css("#window")).await.unwrap().select_by_value("15m").await.unwrap();
    eventually("the 15 min window", Duration::from_secs(30), async || {
        let t = c.find(Locator::Css("#rps-chart title")).await.ok()?.prop("textContent").await.ok()??;
        t.contains("last 15m").then_some(())
    })
    .await;
    text_until(c, "#starts-summary", "the start", |t| t.contains("1 start ")).await;
    let rps = eventually("a request in the rps chart", Duration::from_secs(30), async || {
        let pts = attr(c, "polyline[data-series=rps]", "points").await?;
        (pts.split(' ').count() >= 2).then_some(pts)
    })
    .await;
    assert!(!rps.is_empty());
    // Queue wait and refusals over the same window, and the end-to-end latency line.
    // ...and the workers that ran, over the whole window (recorded lifetimes, not the live hour).
    for css in [
        "polyline[data-series=queue-mean]",
        "polyline[data-series='429']",
        "polyline[data-series=latency-p99]",
        "polyline[data-series=workers]",
        "polyline[data-series=running-mean]",
        "polyline[data-series=waiting-mean]",
    ] {
        eventually(css, Duration::from_secs(30), async || attr(c, css, "points").await).await;
    }
    // The same buckets through the API: one request, its start.
    let t =
        p.api_call(Method::GET, &format!("/v1/endpoints/{shadowed}/traffic?since=15m&buckets=5"), None).await.json();
    let slices = t["buckets"].as_array().unwrap();
    assert_eq!(slices.len(), 5, "{t}");
    assert_eq!(slices.iter().map(|x| x["requests"].as_u64().unwrap()).sum::<u64>(), 1, "{t}");
    assert_eq!(slices.iter().map(|x| x["start_waits"].as_u64().unwrap()).sum::<u64>(), 1, "{t}");
    let most = |k: &str| slices.iter().map(|x| x[k].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(most("workers") > 0.0 && most("workers") <= 1.0, "its one worker, in the slices it ran in: {t}");
    // The request waited for the start, then ran at the worker.
    assert!(most("waiting") > 0.0 && most("running") > 0.0, "{t}");
    let r = p.api_call(Method::GET, &format!("/v1/endpoints/{shadowed}/traffic?buckets=0"), None).await;
    assert_eq!(r.json()["error"]["field"], "buckets", "{}", r.text());
    // The replay: default and knative on the recorded traffic, then what happened.
    for name in ["seed-atlas", "hpa"] {
        let cb = c.find(Locator::Css(&format!("#replay-policies input[value={name}]"))).await.unwrap();
        assert!(!cb.is_selected().await.unwrap(), "{name} is not checked by default");
    }
    assert!(c.find(Locator::Css("#replay-policies input[value=knative]")).await.unwrap().is_selected().await.unwrap());
    assert!(c.find(Locator::Css("#replay-policies input[value=slo]")).await.is_err(), "slo needs a target");
    click(c, "#replay-form button[type=submit]").await;
    let table = text_until(c, "#replay-table tbody", "the replay", |t| t.contains("actual")).await;
    assert!(table.contains("default") && table.contains("knative"), "{table}");
    let rows =
        js(c, "return [...document.querySelectorAll('#replay-table tbody tr')].map(r => r.dataset.policy)").await;
    assert_eq!(rows, json!(["default", "knative", "actual"]));
    page_screenshot(c, "console-endpoint.png").await;
    c.set_window_size(390, 844).await.unwrap();
    eventually("the phone layout", Duration::from_secs(10), async || {
        (js(c, "return document.documentElement.clientWidth").await.as_i64()? <= 390).then_some(())
    })
    .await;
    fits_and_labelled(c, "endpoint on a phone").await;
    page_screenshot(c, "console-endpoint-phone.png").await;
    c.goto(&format!("{}/#/new", p.api)).await.unwrap();
    text_until(c, "#tpl-desc", "the form", |t| !t.is_empty()).await;
    fits_and_labelled(c, "new endpoint on a phone").await;
    page_screenshot(c, "console-new-phone.png").await;

    // Keys: the secret shown once, the key works until it is revoked.
    c.goto(&format!("{}/#/account", p.api)).await.unwrap();
    text_until(c, "#keys tbody", "the keys", |t| t.contains("admin")).await;
    fill(c, "#key-label", "ci deploys").await;
    click(c, "#key-form button[type=submit]").await;
    let secret = text_until(c, "#new-key-secret", "the new key", |t| t.starts_with("sk_")).await;
    assert_eq!(p.api_as(&secret, Method::GET, "/v1/endpoints", None).await.status, StatusCode::OK);
    let keys = text_until(c, "#keys tbody", "the key listed", |t| t.contains("ci deploys")).await;
    assert!(!keys.contains(&secret), "the list shows prefixes only");
    fits_and_labelled(c, "account on a phone").await;
    page_screenshot(c, "console-account-phone.png").await;
    click(c, "#keys button[data-revoke]").await;
    text_until(c, "#confirm-yes", "the revoke confirmation", |t| t.starts_with("Revoke key sk_")).await;
    click(c, "#confirm-yes").await;
    eventually("the key revoked", Duration::from_secs(30), async || {
        let r = p.api_as(&secret, Method::GET, "/v1/endpoints", None).await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    eventually("no revoke button left", Duration::from_secs(30), async || {
        c.find(Locator::Css("#keys button[data-revoke]")).await.is_err().then_some(())
    })
    .await;
    // Shown once: the account page read again has no secret on it.
    c.set_window_size(1280, 900).await.unwrap();
    c.refresh().await.unwrap();
    text_until(c, "#keys tbody", "the keys again", |t| t.contains("ci deploys")).await;
    let html = js(c, "return document.body.innerHTML").await;
    assert!(!html.as_str().unwrap().contains(&secret), "the secret is gone");
    page_screenshot(c, "console-account.png").await;
    b.client.clone().close().await.unwrap();
    p.stop();
}
