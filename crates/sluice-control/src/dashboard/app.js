// Sluice's status page: plain JavaScript over the /v1 API, with the API key kept for the tab.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
let key = sessionStorage.getItem("sluice-key");
let timer = null, logAbort = null;
const prev = {}; // endpoint id -> [requests_total, time] for requests per second

async function api(path, signOutOn401 = true) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + key } });
  if (r.status === 401) {
    if (signOutOn401) signOut();
    throw new Error("the key was refused");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body?.error?.message || r.statusText);
  return body;
}

function signOut() { key = null; sessionStorage.removeItem("sluice-key"); location.hash = "#/login"; }
function status(text) { $("#status").textContent = text; }
function every(ms, f) { f(); timer = setInterval(f, ms); }
const today = () => new Date().toISOString().slice(0, 10);
const usd = (x) => "$" + (x ?? 0).toFixed(4);
function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
}

function route() {
  clearInterval(timer); timer = null;
  if (logAbort) { logAbort.abort(); logAbort = null; }
  const h = location.hash || "#/";
  $("#nav").hidden = !key;
  if (!key || h === "#/login") return login();
  const m = h.match(/^#\/e\/([a-z0-9]+)/);
  if (m) return endpoint(m[1]);
  if (h === "#/account") return account();
  return endpoints();
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
    try { await api("/v1/endpoints", false); sessionStorage.setItem("sluice-key", key); location.hash = "#/"; route(); }
    catch (e) { key = null; $("#login-error").textContent = "Sign-in failed: " + e.message; }
  });
}

async function endpoints() {
  $("#main").innerHTML = `<h1>Endpoints</h1><div class="scroll"><table id="endpoints"><thead><tr>
    <th>Name</th><th>State</th><th class="num">Workers ready / desired</th><th class="num">Requests/s</th>
    <th class="num">Cost today</th></tr></thead><tbody></tbody></table></div>`;
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
        return `<tr><td><a href="#/e/${esc(e.id)}">${esc(e.name)}</a> <span class="hide-narrow">${esc(e.id)}</span></td>
          <td class="state-${esc(e.status)}">${esc(e.status)}</td>
          <td class="num">${e.workers.ready} / ${e.workers.desired}</td><td class="num">${rps.toFixed(1)}</td>
          <td class="num">${usd(cost[e.id])}</td></tr>`;
      }));
      $("#endpoints tbody").innerHTML = rows.join("") || `<tr><td colspan="5">No endpoints yet.</td></tr>`;
      status("Updated " + new Date().toLocaleTimeString());
    } catch (e) { status("Error: " + e.message); }
  });
}

function graph(points) {
  const W = 600, H = 160, pad = 24;
  const t1 = Date.now(), t0 = t1 - 3600 * 1000;
  const max = Math.max(1, ...points.map((p) => p.running));
  const xy = points.map((p) => [pad + ((p.t - t0) / (t1 - t0)) * (W - 2 * pad), H - pad - (p.running / max) * (H - 2 * pad)]);
  const last = points.length ? points[points.length - 1].running : 0;
  return `<svg class="graph" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="graph-title">
    <title id="graph-title">Running requests over the last hour: ${last} now, at most ${max}</title>
    <line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#d0d0d0"/>
    <text x="${pad}" y="${H - 6}">1 h ago</text><text x="${W - pad - 24}" y="${H - 6}">now</text>
    <text x="2" y="${pad}">${max}</text>
    <polyline id="running-line" data-max="${max}" data-last="${last}" points="${xy.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ")}"/>
  </svg>`;
}

async function endpoint(id) {
  $("#main").innerHTML = `<p><a href="#/">← Endpoints</a></p><h1 id="title">Endpoint ${esc(id)}</h1>
    <dl class="figures" id="figures"></dl>
    <h2>Running requests</h2><div id="graph"></div>
    <h2>Workers</h2><div class="scroll"><table id="workers"><thead><tr><th>Worker</th><th>State</th>
      <th class="num">Age</th><th>Last start</th><th>Reason</th></tr></thead><tbody></tbody></table></div>
    <h2>Scaling decisions</h2><div class="scroll"><table id="events"><thead><tr><th>When</th><th class="num">From → to</th>
      <th>Reason</th></tr></thead><tbody></tbody></table></div>
    <h2>Usage</h2><div class="scroll"><table id="usage"><thead><tr><th>Day</th><th class="num">GPU-seconds</th>
      <th class="num">Cost</th></tr></thead><tbody></tbody></table></div>
    <h2>Logs</h2><form id="log-search" class="inline"><div><label for="log-q">Search logs</label>
      <input id="log-q" type="search" placeholder="text, * matches anything"></div><button type="submit">Search</button></form>
    <div id="log" class="log" role="log" aria-live="polite" aria-label="Worker output and platform events"></div>`;
  const follow = (q) => followLogs(id, q);
  $("#log-search").addEventListener("submit", (ev) => { ev.preventDefault(); follow($("#log-q").value); });
  follow("");
  every(2000, async () => {
    try {
      const [e, s, series, ws, evs, usage] = await Promise.all([
        api(`/v1/endpoints/${id}`), api(`/v1/endpoints/${id}/status`), api(`/v1/endpoints/${id}/series`),
        api(`/v1/endpoints/${id}/workers`), api(`/v1/endpoints/${id}/events?limit=10`), api(`/v1/usage?endpoint=${id}`)]);
      $("#title").textContent = `${e.name} (${e.status})`;
      const fig = [["Current concurrency limit", s.current_concurrency_limit],
        ["Fully autoscaled concurrency limit", s.fully_autoscaled_concurrency_limit],
        ["Max requests per minute", s.max_requests_per_minute ?? "unlimited"],
        ["Running requests", s.running_requests], ["Queued requests", s.queued_requests],
        ["Workers ready / desired", `${s.workers.ready} / ${s.workers.desired}`],
        ["Workers asleep", e.max_sleeping ? `${e.workers.sleeping} of up to ${e.max_sleeping}` : "sleep off"],
        ["Latency p50 / p99", s.latency_p50_ms == null ? "–" : `${s.latency_p50_ms} / ${s.latency_p99_ms} ms`],
        ["429s (rate / concurrency)", `${s.rate_limited_total} / ${s.concurrency_limited_total}`],
        ["Time to first token p50 / p99", s.ttft_p50_ms == null ? "–" : `${s.ttft_p50_ms} / ${s.ttft_p99_ms} ms`],
        ["Between tokens p50 / p99", s.itl_p50_ms == null ? "–" : `${s.itl_p50_ms} / ${s.itl_p99_ms} ms`],
        ["Tokens streamed", `${s.output_tokens_total} in ${s.streams_total} streams`],
        ["Requests", s.requests_total], ["Cost", usd(usage.total_cost_usd)]];
      $("#figures").innerHTML = fig.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
      $("#graph").innerHTML = graph(series.points);
      $("#workers tbody").innerHTML = ws.workers.filter((w) => !["stopped", "failed"].includes(w.state) || Date.now() - Date.parse(w.created_at) < 600000)
        .map((w) => `<tr><td>${esc(w.id)}</td><td class="state-${esc(w.state)}">${esc(w.state)}</td>
          <td class="num">${age(w.launched_at || w.created_at)}</td><td>${esc(w.start)}</td><td>${esc(w.reason)}</td></tr>`).join("");
      $("#events tbody").innerHTML = evs.events.map((x) => `<tr><td>${esc(x.at)}</td><td class="num">${x.from} → ${x.to}</td>
          <td>${esc(x.reason)}</td></tr>`).join("");
      $("#usage tbody").innerHTML = usage.rows.map((r) => `<tr><td>${esc(r.day)}</td><td class="num">${r.gpu_seconds}</td>
          <td class="num">${usd(r.cost_usd)}</td></tr>`).join("");
      status("Updated " + new Date().toLocaleTimeString());
    } catch (err) { status("Error: " + err.message); }
  });
}

// Follows the endpoint's log as server-sent events (fetch, so the key travels as a header).
async function followLogs(id, q) {
  if (logAbort) logAbort.abort();
  logAbort = new AbortController();
  const box = $("#log");
  box.textContent = "";
  const add = (l) => {
    const div = document.createElement("div");
    div.className = l.stream;
    div.textContent = `${l.time.slice(11, 23)} ${l.worker || "-"} ${l.line}`;
    box.appendChild(div);
    while (box.childNodes.length > 500) box.removeChild(box.firstChild);
    box.scrollTop = box.scrollHeight;
  };
  try {
    const r = await fetch(`/v1/endpoints/${id}/logs?follow=true&limit=200&q=${encodeURIComponent(q)}`,
      { headers: { Authorization: "Bearer " + key }, signal: logAbort.signal });
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        const data = ev.split("\n").filter((x) => x.startsWith("data:")).map((x) => x.slice(5).trim()).join("\n");
        if (data) add(JSON.parse(data));
      }
    }
  } catch (e) { if (e.name !== "AbortError") status("Log stream: " + e.message); }
}

async function account() {
  $("#main").innerHTML = `<h1>Account</h1><h2>Balance</h2><div class="scroll"><table id="accounts"><thead><tr>
    <th>Account</th><th class="num">Balance</th><th>Low credit</th></tr></thead><tbody></tbody></table></div>
    <h2>Usage</h2><p id="usage-total"></p><h2>API keys</h2><div class="scroll"><table id="keys"><thead><tr><th>Prefix</th>
    <th>Role</th><th>Label</th><th>Created</th><th>Revoked</th></tr></thead><tbody></tbody></table></div>`;
  try {
    const [accounts, keys, usage] = await Promise.all([api("/v1/accounts"), api("/v1/keys"), api("/v1/usage")]);
    $("#accounts tbody").innerHTML = accounts.accounts.map((a) => `<tr><td>${esc(a.name)}</td>
      <td class="num">${a.balance_usd == null ? "unlimited" : usd(a.balance_usd)}</td><td>${a.low_credit_warning ? "yes" : "no"}</td></tr>`).join("");
    $("#usage-total").textContent = `${usage.total_gpu_seconds} GPU-seconds, ${usd(usage.total_cost_usd)} in all.`;
    $("#keys tbody").innerHTML = keys.keys.map((k) => `<tr><td>${esc(k.prefix)}…</td><td>${esc(k.role)}</td><td>${esc(k.label)}</td>
      <td>${esc(k.created_at)}</td><td>${esc(k.revoked_at || "")}</td></tr>`).join("");
  } catch (e) { status("Error: " + e.message); }
}

$("#logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
