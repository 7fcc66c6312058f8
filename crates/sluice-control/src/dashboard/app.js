// Sluice's console: plain JavaScript over the public /v1 API, with the API key kept for the tab.
// app.js: shared helpers, the router, sign-in, the endpoints list and the account page (keys,
// usage, balance). forms.js: creating and editing endpoints. charts.js: SVG charts.
// endpoint.js: one endpoint's page (actions, charts, decisions, replay, workers, logs).
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const $$ = (s, el = document) => [...el.querySelectorAll(s)];
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
let key = sessionStorage.getItem("sluice-key");
let timer = null, logAbort = null, page = 0;
let flash = ""; // a message for the next page ("Created …", "Saved …", "Deleted …")
const prev = {}; // endpoint id -> [requests_total, time] for requests per second
const WINDOWS = [["15m", "15 minutes"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"]];

/// An answer of the API that is not a success: its status, code, message and the field it names.
class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = body?.error || {};
    super(e.message || fallback);
    this.status = status; this.code = e.code; this.field = e.field;
  }
}

/// Calls the API with the key; `body` is sent as JSON. Returns the parsed JSON (or the text when
/// `text` is set, or null for an empty answer); throws an ApiError for a 4xx/5xx.
async function api(path, { method = "GET", body, signOutOn401 = true, text = false } = {}) {
  const headers = { Authorization: "Bearer " + key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    if (signOutOn401) signOut();
    throw new ApiError(401, null, "the key was refused");
  }
  const raw = await r.text();
  if (!r.ok) {
    let b = null;
    try { b = JSON.parse(raw); } catch { /* not JSON */ }
    throw new ApiError(r.status, b, r.statusText || "HTTP " + r.status);
  }
  if (text) return raw;
  return raw ? JSON.parse(raw) : null;
}

function signOut() { key = null; sessionStorage.removeItem("sluice-key"); location.hash = "#/login"; }
function status(text) { $("#status").textContent = text; }
/// Runs `f` now and every `ms` while the page it belongs to is shown.
function every(ms, f) {
  const mine = page;
  const run = () => { if (mine === page) f(); };
  run(); timer = setInterval(run, ms);
}
/// Whether the page that started some async work is still the one shown.
const current = (mine) => mine === page;
const today = () => new Date().toISOString().slice(0, 10);
const usd = (x) => "$" + (x ?? 0).toFixed(4);
function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
}
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
function windowOptions(selected) {
  return WINDOWS.map(([v, l]) => `<option value="${v}"${v === selected ? " selected" : ""}>${l}</option>`).join("");
}
/// The message left for this page by the previous one ("Deleted …"), as a visible notice.
function takeFlash() {
  const m = flash; flash = "";
  return `<p id="flash" class="notice"${m ? "" : " hidden"}>${esc(m)}</p>`;
}
const plural = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;
/// Moves focus to the page's heading after a navigation (screen readers announce it).
function focusHeading() { const h = $("#main h1"); if (h) { h.tabIndex = -1; h.focus({ preventScroll: true }); } }

/// An in-page confirmation (a modal <dialog>): resolves true when the action button is used.
function confirmAction(title, text, action) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    const yes = $("#confirm-yes");
    yes.textContent = action;
    const done = (ok) => { d.close(); resolve(ok); };
    yes.onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
    d.oncancel = (ev) => { ev.preventDefault(); done(false); };
    d.showModal();
    $("#confirm-no").focus();
  });
}

function route() {
  clearInterval(timer); timer = null; page++;
  window.scrollTo(0, 0);
  if (logAbort) { logAbort.abort(); logAbort = null; }
  const h = location.hash || "#/";
  $("#nav").hidden = !key;
  if (!key || h === "#/login") return login();
  // Each page renders its frame at once (then loads): its heading takes focus straight away,
  // never later while someone types.
  const show = (loading) => { focusHeading(); return loading; };
  let m = h.match(/^#\/e\/([a-z0-9]+)\/edit$/);
  if (m) return show(editEndpoint(m[1]));
  m = h.match(/^#\/e\/([a-z0-9]+)/);
  if (m) return show(endpoint(m[1]));
  if (h === "#/new") return show(newEndpoint());
  if (h === "#/account") return show(account());
  return show(endpoints());
}

function login() {
  $("#main").innerHTML = `<h1>Sign in</h1>
    <form id="login" class="inline"><div><label for="key">API key</label>
    <input id="key" type="password" autocomplete="current-password" required></div>
    <button type="submit">Sign in</button></form><p id="login-error" class="error" role="alert"></p>`;
  $("#key").focus();
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    key = $("#key").value.trim();
    try { await api("/v1/endpoints", { signOutOn401: false }); sessionStorage.setItem("sluice-key", key); location.hash = "#/"; route(); }
    catch (e) { key = null; $("#login-error").textContent = "Sign-in failed: " + e.message; }
  });
}

async function endpoints() {
  $("#main").innerHTML = `<div class="head"><h1>Endpoints</h1><a class="button" href="#/new" id="new-endpoint">New endpoint</a></div>
    ${takeFlash()}
    <div class="scroll"><table id="endpoints"><caption class="sr-only">Your endpoints</caption><thead><tr>
    <th scope="col">Name</th><th scope="col">State</th><th scope="col" class="num">Workers ready / desired</th>
    <th scope="col" class="num">Requests/s</th><th scope="col" class="num">Cost today</th></tr></thead><tbody></tbody></table></div>`;
  every(2000, async () => {
    try {
      const [list, usage] = await Promise.all([api("/v1/endpoints"), api("/v1/usage?from=" + today())]);
      const cost = {};
      for (const r of usage.rows) cost[r.endpoint] = (cost[r.endpoint] || 0) + r.cost_usd;
      const rows = await Promise.all(list.endpoints.map(async (e) => {
        const s = await api(`/v1/endpoints/${e.id}/status`);
        const now = Date.now(), p = prev[e.id];
        const rps = p ? ((s.requests_total - p[0]) * 1000) / Math.max(1, now - p[1]) : 0;
        prev[e.id] = [s.requests_total, now];
        return `<tr data-id="${esc(e.id)}"><td><a href="#/e/${esc(e.id)}">${esc(e.name)}</a> <span class="hide-narrow">${esc(e.id)}</span></td>
          <td class="state-${esc(e.status)}">${esc(e.status)}</td>
          <td class="num">${e.workers.ready} / ${e.workers.desired}</td><td class="num">${rps.toFixed(1)}</td>
          <td class="num">${usd(cost[e.id])}</td></tr>`;
      }));
      const body = $("#endpoints tbody");
      if (!body) return;
      body.innerHTML = rows.join("") || `<tr><td colspan="5">No endpoints yet. <a href="#/new">Create one</a>.</td></tr>`;
      status("Updated " + new Date().toLocaleTimeString());
    } catch (e) { status("Error: " + e.message); }
  });
}

async function account() {
  const mine = page;
  $("#main").innerHTML = `<h1>Account</h1>
    <h2 id="balance-h">Balance</h2><div class="scroll"><table id="accounts" aria-labelledby="balance-h"><thead><tr>
    <th scope="col">Account</th><th scope="col" class="num">Balance</th><th scope="col">Low credit</th>
    <th scope="col" class="num">Worker quota</th></tr></thead><tbody></tbody></table></div>
    <h2 id="usage-h">Usage</h2><form id="usage-form" class="inline">
      <div><label for="usage-from">From (UTC day)</label><input id="usage-from" type="date"></div>
      <div><label for="usage-to">To (UTC day, included)</label><input id="usage-to" type="date"></div>
      <button type="submit">Show usage</button></form>
    <p id="usage-total" aria-live="polite"></p>
    <div class="scroll"><table id="usage-rows" aria-labelledby="usage-h"><thead><tr><th scope="col">Day</th>
    <th scope="col">Endpoint</th><th scope="col" class="num">GPU-seconds</th><th scope="col" class="num">Cost</th></tr></thead>
    <tbody></tbody></table></div>
    <h2 id="keys-h">API keys</h2>
    <form id="key-form" class="inline"><div><label for="key-label">Label of a new key</label>
      <input id="key-label" type="text" maxlength="200" placeholder="e.g. CI deploys"></div>
      <button type="submit">Create key</button></form>
    <p id="key-error" class="error" role="alert"></p>
    <section id="new-key" class="notice" hidden aria-labelledby="new-key-h">
      <h3 id="new-key-h" tabindex="-1">Your new key</h3>
      <p>Copy it now: it is shown only this once and cannot be read again.</p>
      <p class="secret-row"><code id="new-key-secret"></code>
      <button type="button" id="copy-key">Copy</button> <button type="button" id="hide-key" class="secondary">Done</button></p>
    </section>
    <div class="scroll"><table id="keys" aria-labelledby="keys-h"><thead><tr><th scope="col">Prefix</th><th scope="col">Role</th>
    <th scope="col">Label</th><th scope="col">Created</th><th scope="col">Revoked</th><th scope="col"><span class="sr-only">Actions</span></th>
    </tr></thead><tbody></tbody></table></div>`;
  $("#usage-from").value = today().slice(0, 8) + "01";
  $("#usage-to").value = today();
  const showUsage = async () => {
    const q = new URLSearchParams();
    if ($("#usage-from").value) q.set("from", $("#usage-from").value);
    // The API's `to` is exclusive: the day after the one chosen.
    const to = $("#usage-to").valueAsDate;
    if (to) q.set("to", new Date(to.getTime() + 86400e3).toISOString().slice(0, 10));
    try {
      const [u, list] = await Promise.all([api("/v1/usage?" + q), api("/v1/endpoints")]);
      if (!current(mine)) return;
      const names = Object.fromEntries(list.endpoints.map((e) => [e.id, e.name]));
      $("#usage-total").textContent = `${u.from.slice(0, 10)} up to ${u.to.slice(0, 16).replace("T", " ")} UTC: ${u.total_gpu_seconds} GPU-seconds, ${usd(u.total_cost_usd)} in all.`;
      $("#usage-rows tbody").innerHTML = u.rows.map((r) => `<tr><td>${esc(r.day)}</td><td>${names[r.endpoint] ? `<a href="#/e/${esc(r.endpoint)}">${esc(names[r.endpoint])}</a>` : esc(r.endpoint)}</td>
        <td class="num">${r.gpu_seconds}</td><td class="num">${usd(r.cost_usd)}</td></tr>`).join("")
        || `<tr><td colspan="4">No usage in this period.</td></tr>`;
    } catch (e) { $("#usage-total").textContent = "Usage: " + e.message; }
  };
  const showKeys = async () => {
    const keys = await api("/v1/keys");
    if (!current(mine)) return;
    $("#keys tbody").innerHTML = keys.keys.map((k) => {
      const self = key.startsWith(k.prefix);
      const act = k.revoked_at ? "" : self ? `<span class="muted">this session's key</span>`
        : `<button type="button" class="secondary" data-revoke="${esc(k.id)}" aria-label="Revoke key ${esc(k.prefix)}">Revoke</button>`;
      return `<tr data-key="${esc(k.id)}"><td><code>${esc(k.prefix)}…</code></td><td>${esc(k.role)}</td><td>${esc(k.label)}</td>
        <td>${esc(when(k.created_at))}</td><td>${esc(when(k.revoked_at))}</td><td>${act}</td></tr>`;
    }).join("");
  };
  $("#usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); showUsage(); });
  $("#key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#key-error").textContent = "";
    const label = $("#key-label").value.trim();
    try {
      const k = await api("/v1/keys", { method: "POST", body: label ? { label } : {} });
      $("#new-key-secret").textContent = k.key;
      $("#new-key").hidden = false;
      $("#new-key-h").focus();
      $("#key-label").value = "";
      status(`Key ${k.prefix}… created`);
      await showKeys();
    } catch (e) { $("#key-error").textContent = "Could not create the key: " + e.message; }
  });
  $("#copy-key").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("#new-key-secret").textContent); status("Key copied"); }
    catch { status("Copying failed: select the key and copy it"); }
  });
  $("#hide-key").addEventListener("click", () => { $("#new-key-secret").textContent = ""; $("#new-key").hidden = true; $("#key-label").focus(); });
  $("#keys").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-revoke]");
    if (!b) return;
    const prefix = b.closest("tr").querySelector("code").textContent;
    if (!(await confirmAction("Revoke this key?", `Programs using ${prefix} stop working at once. This cannot be undone.`, `Revoke key ${prefix}`))) return b.focus();
    try { await api(`/v1/keys/${b.dataset.revoke}`, { method: "DELETE" }); status(`Key ${prefix} revoked`); await showKeys(); $("#key-label").focus(); }
    catch (e) { $("#key-error").textContent = "Could not revoke the key: " + e.message; }
  });
  try {
    const accounts = await api("/v1/accounts");
    if (!current(mine)) return;
    $("#accounts tbody").innerHTML = accounts.accounts.map((a) => `<tr><td>${esc(a.name)}</td>
      <td class="num">${a.balance_usd == null ? "unlimited" : usd(a.balance_usd)}</td><td>${a.low_credit_warning ? "yes" : "no"}</td>
      <td class="num">${a.max_workers_quota}</td></tr>`).join("");
    await Promise.all([showUsage(), showKeys()]);
  } catch (e) { status("Error: " + e.message); }
}

$("#logout").addEventListener("click", signOut);
// The skip link moves focus without changing the route.
$(".skip").addEventListener("click", (ev) => { ev.preventDefault(); $("#main").focus(); });
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
