// One endpoint's page: stop, start, edit, delete; its figures; charts over a chosen window with
// the decision log beside them; the replay; workers, usage and logs.
"use strict";
const BUCKETS = 30;
let chartWindow = sessionStorage.getItem("sluice-window") || "1h";
const windowMs = (w) => ({ "15m": 900e3, "1h": 3600e3, "6h": 21600e3, "24h": 86400e3 })[w] || 3600e3;

async function endpoint(id) {
  const mine = page;
  $("#main").innerHTML = `<p><a href="#/">← Endpoints</a></p>
    <div class="head"><h1 id="title">Endpoint ${esc(id)}</h1>
    <div class="actions" role="group" aria-label="Endpoint actions">
      <button type="button" id="stop-start" class="secondary" disabled>Stop</button>
      <a class="button secondary" id="edit" href="#/e/${esc(id)}/edit">Edit settings</a>
      <button type="button" id="delete" class="danger">Delete…</button></div></div>
    ${takeFlash()}
    <p id="action-error" class="error" role="alert"></p>
    <dl class="figures" id="figures"></dl>
    <div class="head"><h2 id="charts-h">Over time</h2>
      <form id="window-form" class="inline"><div><label for="window">Window</label>
      <select id="window">${windowOptions(chartWindow)}</select></div></form></div>
    <div class="split">
      <div class="charts" aria-labelledby="charts-h">
        <h3>Workers</h3><div id="chart-workers"></div>
        <h3>Requests per second</h3><div id="chart-rps"></div>
        <h3>Requests at a worker and waiting (mean per slice)</h3><div id="chart-load"></div>
        <h3>Latency (service at the worker p50, p99; end to end p99)</h3><div id="chart-latency"></div>
        <h3>Queue wait (mean, max)</h3><div id="chart-queue"></div>
        <h3>Refused requests (429, 503)</h3><div id="chart-rejected"></div>
        <h3>Start durations</h3><div id="chart-starts"></div><p id="starts-summary"></p>
        <h3>Running and queued requests now (live, the last hour at most)</h3><div id="graph"></div>
      </div>
      <section class="decisions" aria-labelledby="decisions-h"><h2 id="decisions-h">Scaling decisions</h2>
        <p class="hint">Newest first; open one for the figures it was based on.</p><ol id="decisions" class="decision-log"></ol></section>
    </div>
    <section aria-labelledby="replay-h"><h2 id="replay-h">Replay</h2>
      <p class="hint">The recorded traffic of a window run through other policies, beside what really happened.</p>
      <form id="replay-form"><fieldset><legend>Policies</legend><div id="replay-policies" class="checks"></div></fieldset>
      <div class="inline"><div><label for="replay-window">Window</label><select id="replay-window">${windowOptions(chartWindow)}</select></div>
      <button type="submit">Run replay</button></div></form>
      <p id="replay-error" class="error" role="alert"></p><p id="replay-summary" aria-live="polite"></p>
      <div class="scroll"><table id="replay-table" hidden aria-labelledby="replay-h"><thead><tr><th scope="col">Policy</th>
      <th scope="col" class="num">Requests</th><th scope="col" class="num">Completed</th><th scope="col" class="num">Rejected</th>
      <th scope="col" class="num">p50 s</th><th scope="col" class="num">p95 s</th><th scope="col" class="num">p99 s</th>
      <th scope="col" class="num">Cold-start hits</th><th scope="col" class="num">GPU-seconds</th><th scope="col" class="num">Cost</th>
      <th scope="col" class="num">Scale events</th></tr></thead><tbody></tbody></table></div></section>
    <h2 id="workers-h">Workers</h2><div class="scroll"><table id="workers" aria-labelledby="workers-h"><thead><tr><th scope="col">Worker</th>
      <th scope="col">State</th><th scope="col" class="num">Age</th><th scope="col">Last start</th><th scope="col">Reason</th></tr></thead><tbody></tbody></table></div>
    <h2 id="usage-h">Usage</h2><div class="scroll"><table id="usage" aria-labelledby="usage-h"><thead><tr><th scope="col">Day</th>
      <th scope="col" class="num">GPU-seconds</th><th scope="col" class="num">Cost</th></tr></thead><tbody></tbody></table></div>
    <h2>Logs</h2><form id="log-search" class="inline"><div><label for="log-q">Search logs</label>
      <input id="log-q" type="search" placeholder="text, * matches anything"></div><button type="submit">Search</button></form>
    <div id="log" class="log" role="log" aria-live="polite" aria-label="Worker output and platform events" tabindex="0"></div>`;
  let e = null; // the endpoint as last read
  let acted = 0; // actions taken: a refresh begun before one does not overwrite its answer
  const follow = (q) => followLogs(id, q);
  $("#log-search").addEventListener("submit", (ev) => { ev.preventDefault(); follow($("#log-q").value); });
  $("#window").addEventListener("change", () => {
    chartWindow = $("#window").value;
    sessionStorage.setItem("sluice-window", chartWindow);
    $("#replay-window").value = chartWindow;
    charts(true).catch((err) => status("Error: " + err.message));
  });
  $("#stop-start").addEventListener("click", async () => {
    if (!e) return;
    const stop = e.status === "running";
    $("#action-error").textContent = "";
    try {
      acted++;
      e = await api(`/v1/endpoints/${id}/${stop ? "stop" : "start"}`, { method: "POST" });
      acted++;
      status(`${e.name} ${stop ? "stopped" : "started"}`);
      showState();
    } catch (err) { $("#action-error").textContent = `Could not ${stop ? "stop" : "start"} it: ${err.message}`; }
  });
  $("#delete").addEventListener("click", async () => {
    if (!e) return;
    const ok = await confirmAction(`Delete ${e.name}?`, `Its workers stop, its recorded traffic and decisions go, and its URL stops answering. This cannot be undone.`, `Delete endpoint ${e.name}`);
    if (!ok) return $("#delete").focus();
    try {
      await api(`/v1/endpoints/${id}`, { method: "DELETE" });
      flash = `Deleted ${e.name}.`;
      status(flash);
      location.hash = "#/";
    } catch (err) { $("#action-error").textContent = "Could not delete it: " + err.message; }
  });
  $("#replay-form").addEventListener("submit", (ev) => { ev.preventDefault(); replay(id); });
  const showState = () => {
    $("#title").textContent = `${e.name} (${e.status})`;
    const b = $("#stop-start");
    b.disabled = false;
    b.textContent = e.status === "running" ? "Stop" : "Start";
    b.setAttribute("aria-label", `${b.textContent} ${e.name}`);
  };

  // The replay's policies: the endpoint's own and its shadows checked; slo with a target.
  const policyBoxes = () => {
    const names = [...POLICIES, ...(e.slo_p99_secs ? ["slo"] : [])];
    const on = new Set(["default", e.scaling_policy, ...e.shadow_policies]);
    $("#replay-policies").innerHTML = names.map((n) => `<label class="check"><input type="checkbox" name="policy" value="${n}"${on.has(n) ? " checked" : ""}> ${n}</label>`).join("");
  };

  // Charts over the window: the shadow lines and the live series every refresh, the recorded
  // traffic (one read, in buckets) every fifth.
  let tick = 0, lastEvent = null, traffic = null;
  const open = new Set();
  async function charts(all) {
    const w = chartWindow, t1 = Date.now(), t0 = t1 - windowMs(w);
    const [shadow, series] = await Promise.all([api(`/v1/endpoints/${id}/shadow?since=${w}`), api(`/v1/endpoints/${id}/series`)]);
    if (!current(mine) || w !== chartWindow) return;
    if (all || !traffic || traffic.w !== w) {
      const b = await buckets(id, t0, t1, BUCKETS);
      if (!current(mine) || w !== chartWindow) return;
      traffic = { w, t0, t1, b };
    }
    const b = traffic.b, at = (f) => b.map((x) => [x.t, f(x)]);
    const opts = { t0: traffic.t0, t1: traffic.t1 };
    // Desired and the shadows over the whole window; running (recorded worker lifetimes, the mean
    // of each slice) over the whole window too; ready (the live series) over its last hour.
    const lines = shadow.lines.map((l) => ({ label: l.policy === "actual" ? "desired (autoscaler)" : `${l.policy} (shadow)`,
      points: l.points, attrs: { "data-policy": l.policy, "data-gpu-seconds": l.gpu_seconds.toFixed(1) }, note: `${l.gpu_seconds.toFixed(1)} GPU-seconds` }));
    lines.splice(1, 0, { label: "running (mean per slice)", points: at((x) => x.workers), attrs: { "data-series": "workers" } },
      { label: "ready (live, last hour)", points: series.points.map((p) => [p.t, p.ready]), attrs: { "data-series": "ready" } });
    $("#chart-workers").innerHTML = chart({ id: "workers-chart", title: `Workers over the last ${w}: running, ready, desired, and each shadow policy's count`, t0, t1, lines });
    const running = series.points.map((p) => [p.t, p.running]);
    const peak = Math.max(0, ...series.points.map((p) => p.running));
    const last = series.points.length ? series.points[series.points.length - 1].running : 0;
    $("#graph").innerHTML = chart({ id: "running-chart", title: `Running requests: ${last} now, at most ${peak}; and queued requests`, t0: Math.max(t0, t1 - 3600e3), t1, step: false,
      lines: [{ label: "running", points: running, attrs: { id: "running-line", "data-max": peak } },
        { label: "queued", points: series.points.map((p) => [p.t, p.queued]), attrs: { "data-series": "queued" } }] });
    $("#chart-rps").innerHTML = chart({ ...opts, id: "rps-chart", title: `Requests per second over the last ${w}`, lines: [{ label: "requests/s", points: at((x) => x.rps), attrs: { "data-series": "rps" } }] });
    $("#chart-load").innerHTML = chart({ ...opts, id: "load-chart", title: `Requests at a worker and waiting (queue, start or wake) over the last ${w}, mean per slice`,
      lines: [{ label: "at a worker", points: at((x) => x.running), attrs: { "data-series": "running-mean" } },
        { label: "waiting", points: at((x) => x.waiting), attrs: { "data-series": "waiting-mean" } }] });
    $("#chart-latency").innerHTML = chart({ ...opts, id: "latency-chart", title: `Latency over the last ${w}, seconds: at the worker p50 and p99, end to end p99`, unit: " s",
      lines: [{ label: "p50", points: at((x) => x.p50), attrs: { "data-series": "p50" } }, { label: "p99", points: at((x) => x.p99), attrs: { "data-series": "p99" } },
        { label: "end to end p99", points: at((x) => x.lat99), attrs: { "data-series": "latency-p99" } }] });
    $("#chart-queue").innerHTML = chart({ ...opts, id: "queue-chart", title: `Time in the gateway's queue over the last ${w}, seconds`, unit: " s",
      lines: [{ label: "mean", points: at((x) => x.queueMean), attrs: { "data-series": "queue-mean" } }, { label: "max", points: at((x) => x.queueMax), attrs: { "data-series": "queue-max" } }] });
    $("#chart-rejected").innerHTML = chart({ ...opts, id: "rejected-chart", title: `Refused requests per bucket over the last ${w}`,
      lines: [{ label: "429", points: at((x) => x.r429), attrs: { "data-series": "429" } }, { label: "503", points: at((x) => x.r503), attrs: { "data-series": "503" } }] });
    $("#chart-starts").innerHTML = chart({ ...opts, id: "starts-chart", title: `Worker start durations over the last ${w}, seconds`, unit: " s",
      lines: [{ label: "median start", points: at((x) => quantile([...x.starts].sort((p, q) => p - q), 0.5)), attrs: { "data-series": "start-median" } },
        { label: "longest start", points: at((x) => (x.starts.length ? Math.max(...x.starts) : null)), attrs: { "data-series": "start-max" } }] });
    const all_ = b.flatMap((x) => x.starts).sort((x, y) => x - y);
    $("#starts-summary").textContent = all_.length
      ? `${plural(all_.length, "start")} in the window: median ${short(quantile(all_, 0.5))} s, longest ${short(all_[all_.length - 1])} s.`
      : "No worker started in this window.";
  }

  function decisions(evs) {
    const list = $("#decisions");
    const newest = evs.events[0]?.id ?? null;
    if (newest === lastEvent && list.children.length) return;
    lastEvent = newest;
    for (const d of $$("details[open]", list)) open.add(d.dataset.id);
    list.innerHTML = evs.events.map((x) => `<li class="kind-${esc(x.kind)}"><details data-id="${x.id}"${open.has(String(x.id)) ? " open" : ""}>
      <summary><time datetime="${esc(x.at)}">${esc(new Date(x.at).toLocaleTimeString())}</time>
      <span class="num">${x.from} → ${x.to}</span> ${x.kind === "retune" ? "<strong>re-tune</strong> " : ""}${esc(x.reason)}</summary>
      <p class="muted">${esc(when(x.at))}</p><pre class="inputs" aria-label="Inputs of this decision">${esc(JSON.stringify(x.inputs, null, 2))}</pre></details></li>`).join("")
      || "<li>No decisions yet.</li>";
  }

  let busy = false; // a refresh still running (the traffic reads may take longer than 2 s)
  every(2000, async () => {
    if (busy) return;
    busy = true;
    const seen = acted;
    try {
      const [ep, s, ws, evs, usage] = await Promise.all([
        api(`/v1/endpoints/${id}`), api(`/v1/endpoints/${id}/status`), api(`/v1/endpoints/${id}/workers`),
        api(`/v1/endpoints/${id}/events?limit=50`), api(`/v1/usage?endpoint=${id}`)]);
      if (!current(mine)) return;
      const first = !e;
      if (seen === acted) { e = ep; showState(); }
      if (first) policyBoxes();
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
        ["Requests", s.requests_total], ["Cost", usd(usage.total_cost_usd)],
        ["Scaling policy", e.scaling_policy + (e.shadow_policies.length ? `; shadows ${e.shadow_policies.join(", ")}` : "")]];
      $("#figures").innerHTML = fig.map(([k, v]) => `<div><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
      $("#workers tbody").innerHTML = ws.workers.filter((w) => !["stopped", "failed"].includes(w.state) || Date.now() - Date.parse(w.created_at) < 600000)
        .map((w) => `<tr><td>${esc(w.id)}</td><td class="state-${esc(w.state)}">${esc(w.state)}</td>
          <td class="num">${age(w.launched_at || w.created_at)}</td><td>${esc(w.start)}</td><td>${esc(w.reason)}</td></tr>`).join("")
        || `<tr><td colspan="5">No workers now.</td></tr>`;
      decisions(evs);
      $("#usage tbody").innerHTML = usage.rows.map((r) => `<tr><td>${esc(r.day)}</td><td class="num">${r.gpu_seconds}</td>
          <td class="num">${usd(r.cost_usd)}</td></tr>`).join("") || `<tr><td colspan="3">No usage yet.</td></tr>`;
      await charts(tick++ % 5 === 0);
      if (current(mine)) status("Updated " + new Date().toLocaleTimeString());
    } catch (err) { if (current(mine)) status("Error: " + err.message); } finally { busy = false; }
  });
  follow("");
}

async function replay(id) {
  const mine = page;
  const policies = $$("#replay-policies input:checked").map((i) => i.value);
  const w = $("#replay-window").value;
  $("#replay-error").textContent = "";
  if (!policies.length) { $("#replay-error").textContent = "Pick at least one policy."; return; }
  $("#replay-summary").textContent = "Replaying…";
  try {
    const r = await api(`/v1/endpoints/${id}/replay?since=${w}&policy=${policies.join(",")}`);
    if (!current(mine)) return;
    $("#replay-summary").textContent = `${plural(r.requests, "request")} and ${plural(r.cold_starts, "recorded start")} from ${when(r.since)} to ${when(r.until)}; the last row is what really happened.`;
    $("#replay-table tbody").innerHTML = r.results.map((x) => `<tr data-policy="${esc(x.policy)}"${x.policy === "actual" ? ' class="actual"' : ""}>
      <th scope="row">${esc(x.policy)}</th><td class="num">${x.requests}</td><td class="num">${x.completed}</td><td class="num">${x.rejected}</td>
      <td class="num">${x.p50_s.toFixed(3)}</td><td class="num">${x.p95_s.toFixed(3)}</td><td class="num">${x.p99_s.toFixed(3)}</td>
      <td class="num">${x.cold_start_hits}</td><td class="num">${x.gpu_seconds.toFixed(1)}</td><td class="num">${usd(x.cost_usd)}</td>
      <td class="num">${x.scale_events}</td></tr>`).join("");
    $("#replay-table").hidden = false;
  } catch (err) {
    if (!current(mine)) return;
    $("#replay-summary").textContent = "";
    $("#replay-table").hidden = true;
    $("#replay-error").textContent = `Replay failed: ${err.message}${err.field ? ` (${err.field})` : ""}`;
  }
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
