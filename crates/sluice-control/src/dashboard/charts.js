// SVG charts of the console: time on x, one or more lines on y, a legend below, a title and a
// description for screen readers. Lines are told apart by colour and by dash pattern.
"use strict";

/// The x-axis label of an instant `t` in a window ending at `t1`.
function ago(t, t1) {
  const s = Math.round((t1 - t) / 1000);
  if (s <= 0) return "now";
  return s < 3600 ? Math.round(s / 60) + " min ago" : +(s / 3600).toFixed(1) + " h ago";
}

/// A number for an axis or a legend: few digits.
function short(v) {
  if (v == null || Number.isNaN(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 100 ? String(Math.round(v)) : a >= 10 ? v.toFixed(1).replace(/\.0$/, "") : +v.toPrecision(2) + "";
}

/// The points of a line as SVG coordinates, in runs broken where a value is missing (null).
/// `step`: a value holds until the next point (the last one until t1); otherwise points are
/// joined straight.
function runs(points, { t0, t1, max, W, H, pad, left, step }) {
  const x = (t) => left + ((Math.min(Math.max(t, t0), t1) - t0) / Math.max(1, t1 - t0)) * (W - left - pad);
  const y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const out = [];
  let cur = null;
  for (const [t, v] of points.filter((p) => p[0] <= t1)) {
    if (v == null) {
      if (cur && step) cur.push([x(t), cur[cur.length - 1][1]]);
      cur = null;
      continue;
    }
    if (!cur) out.push((cur = []));
    else if (step) cur.push([x(t), cur[cur.length - 1][1]]);
    cur.push([x(t), y(v)]);
  }
  if (step && cur) cur.push([x(t1), cur[cur.length - 1][1]]);
  return out.map((run) => run.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)));
}

/// A chart. `id`: prefix of its element ids; `title`: what it shows; `lines`: [{key, label,
/// points: [[unix_ms, value], ...], step, attrs: {data-…: …}, note}]; `unit` follows values.
function chart({ id, title, t0, t1, lines, unit = "", step = true, empty = "No data in this window." }) {
  const W = 600, H = 180, pad = 22, left = 46;
  const values = lines.flatMap((l) => l.points.map((p) => p[1])).filter((v) => v != null);
  const max = niceMax(Math.max(0, ...values));
  const last = (l) => l.points.findLast((p) => p[1] != null)?.[1] ?? null;
  const summary = lines.map((l) => `${l.label}: ${short(last(l))}${unit} now, at most ${short(Math.max(0, ...l.points.map((p) => p[1] ?? 0)))}${unit}`).join("; ");
  const grid = [0, 0.5, 1].map((f) => {
    const yy = H - pad - f * (H - 2 * pad);
    return `<line class="grid" x1="${left}" y1="${yy}" x2="${W - pad}" y2="${yy}"/><text x="${left - 4}" y="${yy + 4}" text-anchor="end">${short(max * f)}</text>`;
  }).join("");
  const xl = [0, 0.5, 1].map((f) => {
    const t = t0 + f * (t1 - t0);
    const xx = left + f * (W - left - pad);
    return `<text x="${xx}" y="${H - 5}" text-anchor="${f === 0 ? "start" : f === 1 ? "end" : "middle"}">${ago(t, t1)}</text>`;
  }).join("");
  const polys = lines.map((l, i) => {
    const attrs = Object.entries(l.attrs || {}).map(([k, v]) => ` ${k}="${esc(v)}"`).join("");
    const s = l.step ?? step;
    const r = runs(l.points, { t0, t1, max, W, H, pad, left, step: s });
    const head = `class="s${i % 8}"${attrs} data-last="${esc(last(l) ?? "")}"`;
    return r.length > 1 ? `<path ${head} d="${r.map((run) => "M" + run.join(" L")).join(" ")}"><title>${esc(l.label)}</title></path>`
      : `<polyline ${head} points="${(r[0] || []).join(" ")}"><title>${esc(l.label)}</title></polyline>`;
  }).join("");
  const legend = lines.map((l, i) => `<li${l.attrs?.["data-policy"] ? ` data-policy="${esc(l.attrs["data-policy"])}"` : ""}>
    <svg class="swatch" viewBox="0 0 24 8" aria-hidden="true"><line class="s${i % 8}" x1="0" y1="4" x2="24" y2="4"/></svg>
    ${esc(l.label)}: <span class="num">${short(last(l))}${esc(unit)}</span>${l.note ? ` <span class="muted">(${esc(l.note)})</span>` : ""}</li>`).join("");
  const none = values.length ? "" : `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="empty">${esc(empty)}</text>`;
  return `<figure class="chart" id="${id}">
    <svg class="graph" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="${id}-title ${id}-desc" data-max="${short(max)}">
    <title id="${id}-title">${esc(title)}</title><desc id="${id}-desc">${esc(summary || empty)}</desc>
    ${grid}${xl}${none}${polys}</svg>
    <figcaption><ul class="legend">${legend}</ul></figcaption></figure>`;
}

/// A round upper bound for a y axis.
function niceMax(v) {
  if (v <= 0) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * e) return m * e;
  return 10 * e;
}

/// The value of quantile `q` of sorted numbers.
function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/// The recorded traffic of a window in `n` buckets (`GET /v1/endpoints/{id}/traffic`): each
/// bucket's requests per second, service time and end-to-end latency (p50, p99, seconds), queue
/// wait (mean, max, seconds), the starts that ended in it (seconds), and the 429s and 503s.
async function buckets(id, t0, t1, n) {
  const r = await api(`/v1/endpoints/${id}/traffic?since=${Math.round(t0)}&until=${Math.round(t1)}&buckets=${n}`);
  const s = (ms) => (ms == null ? null : ms / 1000);
  return r.buckets.map((b) => ({ t: b.at, rps: b.rps, requests: b.requests, p50: s(b.service_p50_ms), p99: s(b.service_p99_ms),
    lat99: s(b.latency_p99_ms), queueMean: b.queue_mean_ms / 1000, queueMax: b.queue_max_ms / 1000,
    starts: b.starts_ms.map((x) => x / 1000), r429: b.rejected_429, r503: b.rejected_503, workers: b.workers, running: b.running, waiting: b.waiting }));
}
