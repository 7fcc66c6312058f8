// Creating an endpoint (from a template or from scratch) and editing its settings. The API is
// the validator: its error names a field, and the message is shown next to that field.
"use strict";
const POLICIES = ["default", "seed-atlas", "seed-damped", "seed-hf", "fixed-keepalive", "knative", "hpa", "ray-serve", "beta9"];
// kind: text (default), num, bool, list (comma-separated), env (NAME=value lines); options: a
// select; more: under "More settings".
const FIELDS = [
  { name: "name", label: "Name", hint: "1–128 characters, unique in your account." },
  { name: "image", label: "Image", hint: "Container image, e.g. ghcr.io/me/app:1 (the docker and kubernetes runtimes need one)." },
  { name: "start_command", label: "Start command", hint: "Run as sh -c; the process runtime needs one." },
  { name: "public", label: "Public: the gateway serves it without a key", kind: "bool" },
  { name: "active_workers", label: "Active workers", kind: "num", hint: "Always running; 0 scales to zero." },
  { name: "max_workers", label: "Max workers", kind: "num", hint: "At least max(1, active workers), at most your quota." },
  { name: "gpus_per_worker", label: "GPUs per worker", kind: "num", hint: "1 to 8." },
  { name: "gpu_type", label: "GPU type", list: "gpu-types", hint: "Default: the platform's first type." },
  { name: "concurrency_per_worker", label: "Concurrency per worker", kind: "num", hint: "Requests one worker serves at once." },
  { name: "idle_timeout_secs", label: "Idle timeout (seconds)", kind: "num", hint: "How long an autoscaled worker may stay idle, 1 to 3600." },
  { name: "scaling_policy", label: "Scaling policy", options: ["", ...POLICIES, "slo"] },
  { name: "shadow_policies", label: "Shadow policies", kind: "list", hint: "Comma-separated, e.g. knative, hpa: evaluated beside the real policy, never acting." },
  { name: "slo_p99_secs", label: "SLO target: p99 seconds", kind: "num", hint: "End to end, queueing and starts included; 0 clears it. The slo policy needs it." },
  { name: "slo_mode", label: "SLO mode", options: ["", "apply", "advise"], hint: "apply: the slo policy sets what it finds; advise: it only records it." },
  { name: "max_requests_per_minute", label: "Max requests per minute", kind: "num", hint: "Beyond it, 429; 0 or empty: unlimited.", more: true },
  { name: "env", label: "Environment variables", kind: "env", hint: "One NAME=value per line; replaces them all. Secret-looking values are shown masked: retype them when you change this.", more: true },
  { name: "type", label: "Type", options: ["", "http", "queue"], hint: "http: requests are proxied; queue: RunPod-style jobs under /v2.", more: true },
  { name: "http_port", label: "HTTP port", kind: "num", more: true },
  { name: "health_check_path", label: "Health check path", more: true },
  { name: "startup_timeout_secs", label: "Startup timeout (seconds)", kind: "num", more: true },
  { name: "execution_timeout_secs", label: "Execution timeout (seconds)", kind: "num", more: true },
  { name: "scale_down_delay_secs", label: "Scale-down delay (seconds)", kind: "num", more: true },
  { name: "queue_capacity", label: "Queue capacity", kind: "num", more: true },
  { name: "queue_timeout_secs", label: "Queue timeout (seconds)", kind: "num", more: true },
];
// Fields whose empty value means "clear" on an update (sent as 0).
const ZERO_CLEARS = ["slo_p99_secs", "max_requests_per_minute"];

const fieldId = (prefix, name) => `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;

/// The HTML of one field: label, control, hint and a place for its error, tied together.
function fieldHtml(prefix, f, value) {
  const id = fieldId(prefix, f.name);
  const desc = `${id}-error${f.hint ? " " + id + "-hint" : ""}`;
  const common = `id="${id}" name="${esc(f.name)}" aria-describedby="${desc}"${f.required ? ' aria-required="true"' : ""}`;
  const hint = f.hint ? `<p class="hint" id="${id}-hint">${esc(f.hint)}</p>` : "";
  const err = `<p class="field-error" id="${id}-error"></p>`;
  const label = `<label for="${id}">${esc(f.label)}${f.required ? ' <span class="muted">(required)</span>' : ""}</label>`;
  let control;
  if (f.kind === "bool") {
    return `<div class="field check" data-field="${esc(f.name)}"><input type="checkbox" ${common}${value ? " checked" : ""}>${label}${err}${hint}</div>`;
  } else if (f.options) {
    control = `<select ${common}>${f.options.map((o) => `<option value="${esc(o)}"${o === (value ?? "") ? " selected" : ""}>${esc(o || "(default)")}</option>`).join("")}</select>`;
  } else if (f.kind === "env") {
    control = `<textarea ${common} rows="3" spellcheck="false">${esc(value)}</textarea>`;
  } else {
    const extra = f.kind === "num" ? ' inputmode="decimal"' : f.list ? ` list="${f.list}"` : "";
    control = `<input type="text" ${common}${extra} value="${esc(value)}" autocomplete="off" spellcheck="false">`;
  }
  return `<div class="field" data-field="${esc(f.name)}">${label}${control}${err}${hint}</div>`;
}

/// Fields in a grid, the `more` ones under a disclosure.
function fieldsHtml(prefix, fields, values = {}) {
  const main = fields.filter((f) => !f.more).map((f) => fieldHtml(prefix, f, values[f.name])).join("");
  const more = fields.filter((f) => f.more).map((f) => fieldHtml(prefix, f, values[f.name])).join("");
  return `<div class="fields">${main}</div>${more ? `<details class="more"><summary>More settings</summary><div class="fields">${more}</div></details>` : ""}`;
}

/// A field's value for the API: numbers as numbers (anything else as typed, for the API to
/// name), lists split on commas, environment lines as an object.
function fieldValue(f, el) {
  if (f.kind === "bool") return el.checked;
  const v = el.value.trim();
  if (f.kind === "num") return /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  if (f.kind === "list") return v.split(",").map((s) => s.trim()).filter(Boolean);
  if (f.kind === "env") {
    const env = {};
    for (const line of el.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf("=");
      if (i <= 0) throw new ApiError(422, { error: { message: "each line must be NAME=value", field: f.name } });
      env[line.slice(0, i)] = line.slice(i + 1);
    }
    return env;
  }
  return v;
}

/// Clears a form's errors.
function clearErrors(form) {
  for (const el of $$("[aria-invalid]", form)) el.removeAttribute("aria-invalid");
  for (const p of $$(".field-error", form)) p.textContent = "";
  const s = $(".error-summary", form);
  s.hidden = true; s.innerHTML = "";
}

/// Shows an API error: next to the field it names (marked invalid, its message in the field's
/// description, focused), and in the summary at the top of the form.
function showError(form, err, what) {
  clearErrors(form);
  const name = err.field || "";
  let box = null;
  for (const t of [name, name.replace(/\[\d+\]$/, ""), name.split(/[.[]/)[0]]) {
    if (t && (box = form.querySelector(`.field[data-field="${CSS.escape(t)}"]`))) break;
  }
  const s = $(".error-summary", form);
  // `shadow_policies[1]`: the second item of the list.
  const item = name.match(/\[(\d+)\]$/);
  const message = item ? `item ${+item[1] + 1}: ${err.message}` : err.message;
  let line = esc(message);
  if (box) {
    const control = $("input, select, textarea", box);
    const details = box.closest("details");
    if (details) details.open = true;
    control.setAttribute("aria-invalid", "true");
    $(".field-error", box).textContent = message;
    const label = $("label", box).firstChild.textContent.trim();
    line = `<a href="#${control.id}" data-focus="${control.id}">${esc(label)}</a>: ${esc(message)}`;
  } else if (name) {
    line = `${esc(name)}: ${esc(message)}`;
  }
  s.innerHTML = `<h3>${esc(what)}</h3><p>${line}</p>`;
  s.hidden = false;
  if (box) $("input, select, textarea", box).focus(); else { s.tabIndex = -1; s.focus(); }
}

/// Links of an error summary move focus to their field (without changing the route).
function summaryLinks(form) {
  form.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-focus]");
    if (a) { ev.preventDefault(); document.getElementById(a.dataset.focus).focus(); }
  });
}

async function gpuTypes() {
  try {
    const inv = await api("/v1/gpus");
    const types = [...new Set(inv.nodes.flatMap((n) => n.gpus.map((g) => g.type)))];
    return `<datalist id="gpu-types">${types.map((t) => `<option value="${esc(t)}">`).join("")}</datalist>`;
  } catch { return ""; }
}

async function newEndpoint() {
  const mine = page;
  $("#main").innerHTML = `<p><a href="#/">← Endpoints</a></p><h1>New endpoint</h1>
    <section aria-labelledby="tpl-h"><h2 id="tpl-h">From a template</h2>
      <form id="tpl-form" novalidate><div class="error-summary" role="alert" hidden></div>
        <div class="field"><label for="tpl-select">Template</label><select id="tpl-select" aria-describedby="tpl-desc"></select>
        <p class="hint" id="tpl-desc" aria-live="polite"></p></div>
        <div id="tpl-params"></div><button type="submit">Deploy template</button></form></section>
    <section aria-labelledby="scratch-h"><h2 id="scratch-h">From scratch</h2>
      <form id="scratch-form" novalidate><div class="error-summary" role="alert" hidden></div>
        ${fieldsHtml("scratch", FIELDS.map((f) => (f.name === "name" ? { ...f, required: true } : f)))}
        <button type="submit">Create endpoint</button></form></section>`;
  const [list, datalist] = await Promise.all([api("/v1/templates").catch((e) => { status("Templates: " + e.message); return { templates: [] }; }), gpuTypes()]);
  if (!current(mine)) return;
  $("#main").insertAdjacentHTML("beforeend", datalist);
  const templates = list.templates;
  const tf = $("#tpl-form"), sf = $("#scratch-form");
  summaryLinks(tf); summaryLinks(sf);
  $("#tpl-select").innerHTML = templates.map((t) => `<option value="${esc(t.name)}">${esc(t.title)} (${esc(t.name)})</option>`).join("");
  const params = (t) => t.params.map((p) => ({ name: "set." + p.name, param: p.name, label: p.name.replace(/_/g, " "),
    hint: p.description, required: p.default == null, dflt: (p.default ?? "").replace("{template}", t.name) }));
  const showTemplate = () => {
    const t = templates.find((x) => x.name === $("#tpl-select").value);
    if (!t) return;
    clearErrors(tf);
    $("#tpl-desc").textContent = `${t.description} Image ${t.image}, ${t.gpus_per_worker} GPU per worker.`;
    const ps = params(t);
    $("#tpl-params").innerHTML = `<div class="fields">${ps.map((p) => fieldHtml("tpl", p, p.dflt)).join("")}</div>`;
  };
  $("#tpl-select").addEventListener("change", showTemplate);
  showTemplate();
  tf.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = templates.find((x) => x.name === $("#tpl-select").value);
    if (!t) return;
    const set = {};
    for (const p of params(t)) {
      const v = document.getElementById(fieldId("tpl", p.name)).value.trim();
      if (v !== p.dflt) set[p.param] = v;
    }
    try {
      const e = await api(`/v1/templates/${encodeURIComponent(t.name)}/deploy`, { method: "POST", body: { set } });
      created(e);
    } catch (err) { if (err.status === 401) return; showError(tf, err, `Could not deploy ${t.name}`); }
  });
  sf.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    try {
      for (const f of FIELDS) {
        const el = document.getElementById(fieldId("scratch", f.name));
        const v = fieldValue(f, el);
        if (f.kind === "bool" ? v : f.kind === "list" ? v.length : f.kind === "env" ? Object.keys(v).length : v !== "") body[f.name] = v;
      }
      created(await api("/v1/endpoints", { method: "POST", body }));
    } catch (err) { if (err.status === 401) return; showError(sf, err, "Could not create the endpoint"); }
  });
}

function created(e) {
  flash = `Created ${e.name}.`;
  status(flash);
  location.hash = `#/e/${e.id}`;
}

/// The form's view of an endpoint's settings (strings, as the fields show them).
function settingsOf(e) {
  const v = {};
  for (const f of FIELDS) {
    const x = e[f.name];
    v[f.name] = f.kind === "bool" ? !!x : f.kind === "list" ? (x || []).join(", ")
      : f.kind === "env" ? Object.entries(x || {}).map(([k, val]) => `${k}=${val}`).join("\n") : x == null ? "" : String(x);
  }
  return v;
}

async function editEndpoint(id) {
  const mine = page;
  $("#main").innerHTML = `<p><a href="#/e/${esc(id)}">← Endpoint</a></p><h1 id="edit-title">Settings</h1><p id="edit-loading">Loading…</p>`;
  let e, datalist;
  try { [e, datalist] = await Promise.all([api(`/v1/endpoints/${id}`), gpuTypes()]); }
  catch (err) { $("#edit-loading").textContent = "Could not load the endpoint: " + err.message; return; }
  if (!current(mine)) return;
  const initial = settingsOf(e);
  $("#main").innerHTML = `<p><a href="#/e/${esc(id)}">← ${esc(e.name)}</a></p><h1 id="edit-title">Settings of ${esc(e.name)}</h1>
    <p class="muted">Only what you change is sent. Changing the image, command or environment rolls the workers over.</p>
    <form id="edit-form" novalidate><div class="error-summary" role="alert" hidden></div>
    ${fieldsHtml("edit", FIELDS, initial)}
    <div class="actions"><button type="submit">Save changes</button> <a href="#/e/${esc(id)}">Cancel</a></div></form>${datalist}`;
  if (document.activeElement === document.body) focusHeading(); // the loading page's heading was replaced
  const form = $("#edit-form");
  summaryLinks(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    try {
      for (const f of FIELDS) {
        const el = document.getElementById(fieldId("edit", f.name));
        const now = f.kind === "bool" ? el.checked : el.value.trim();
        if (now === initial[f.name] || (f.kind === "env" && el.value.trim() === initial.env)) continue;
        let v = fieldValue(f, el);
        if (v === "" && f.kind === "num") { if (!ZERO_CLEARS.includes(f.name)) continue; v = 0; }
        if (v === "" && f.options) continue;
        body[f.name] = v;
      }
      if (!Object.keys(body).length) { clearErrors(form); status("Nothing changed."); return; }
      // The API shows secret-looking values masked: sending one back would store the mask.
      const masked = Object.entries(body.env || {}).find(([k, v]) => v.includes("*") && (e.env || {})[k] === v);
      if (masked) {
        showError(form, { field: "env", message: `${masked[0]} still holds its masked value: type the value again, or remove the line to delete it` }, "Could not save the settings");
        return;
      }
      const saved = await api(`/v1/endpoints/${id}`, { method: "PATCH", body });
      flash = `Saved ${Object.keys(body).join(", ")} of ${saved.name}.`;
      status(flash);
      location.hash = `#/e/${id}`;
    } catch (err) { if (err.status === 401) return; showError(form, err, "Could not save the settings"); }
  });
}
