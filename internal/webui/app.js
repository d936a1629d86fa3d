// execgw's web page: plain JavaScript, no framework, no build step. Every
// request goes to the gateway that served this page; the token, when one
// is needed, lives in sessionStorage and travels only in the Authorization
// header, never in a URL.
"use strict";

const TOKEN_KEY = "execgw.token";
const JOB_STATES = ["queued", "running"]; // states a job leaves
const JOBS_REFRESH_MS = 2000;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- token and requests -------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

// ApiError carries the gateway's own status and message.
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorFrom(resp) {
  let code = "", message = resp.statusText || "HTTP " + resp.status;
  try {
    const body = await resp.json();
    if (body && body.error) { code = body.error.code; message = body.error.message; }
  } catch (_) { /* not JSON: keep the status text */ }
  if (resp.status === 401) {
    showTokenForm();
    message = (token() ? "Wrong token" : "A token is needed") + " (401): " + message;
  }
  return new ApiError(resp.status, code, message);
}

async function api(path, opts) {
  opts = opts || {};
  const resp = await fetch(path, Object.assign({}, opts, {
    headers: headers(Object.assign({ "Accept": "application/json" }, opts.headers)),
    credentials: "omit",
  }));
  if (!resp.ok) throw await errorFrom(resp);
  return resp.status === 204 ? null : resp.json();
}

function notice(message) {
  const n = $("notice");
  n.textContent = message || "";
  n.hidden = !message;
}

function showTokenForm() {
  $("token-form").hidden = false;
}

function setupToken() {
  const form = $("token-form");
  if (token()) form.hidden = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("token").placeholder = v ? "token set" : "";
    notice("");
    loadCommands();
    refreshJobs();
    route();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("token").placeholder = "";
    loadCommands();
    refreshJobs();
  });
  if (token()) $("token").placeholder = "token set";
}

// ---- Server-Sent Events over fetch --------------------------------------

// readEvents parses an SSE response body and calls onEvent(name, data)
// for each event until the stream ends or the signal aborts it.
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", name = "", data = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = ""; data = [];
      } else if (line.startsWith(":")) {
        // comment: keep-alive
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") name = v;
        else if (field === "data") data.push(v);
      }
    }
  }
}

function appendLine(log, stream, text) {
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(stream === "stderr" ? el("span", { class: "stderr", text: text + "\n" }) : text + "\n");
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function describeEnd(rec) {
  let s = "Ended " + rec.state;
  if (rec.cancel_reason) s += " (" + rec.cancel_reason + ")";
  if (rec.exit_code !== null && rec.exit_code !== undefined) s += ", exit code " + rec.exit_code;
  if (rec.signal) s += ", signal " + rec.signal;
  return s;
}

// ---- commands -----------------------------------------------------------

let commands = [];

async function loadCommands() {
  const box = $("commands");
  try {
    const body = await api("/v1/commands");
    commands = body.commands;
    box.replaceChildren(...commands.map(commandForm));
    if (!commands.length) box.replaceChildren(el("p", { class: "muted", text: "No command this token may run." }));
    const filter = $("filter-command"), chosen = filter.value;
    filter.replaceChildren(el("option", { value: "", text: "any" }),
      ...commands.map((c) => el("option", { value: c.name, text: c.name })));
    filter.value = commands.some((c) => c.name === chosen) ? chosen : "";
  } catch (e) {
    box.replaceChildren(el("p", { class: "status bad", text: e.message }));
  }
}

function paramInput(cmd, p) {
  const id = "p-" + cmd.name + "-" + p.name;
  const attrs = { id: id, name: p.name, required: p.required && p.type !== "bool" };
  let input;
  switch (p.type) {
    case "int":
      input = el("input", Object.assign(attrs, { type: "number", step: 1, min: p.min, max: p.max, inputmode: "numeric", value: p.default }));
      break;
    case "bool":
      input = el("input", Object.assign(attrs, { type: "checkbox", checked: p.default === "true" }));
      break;
    case "enum":
      input = el("select", attrs,
        ...(p.required || p.default !== undefined ? [] : [el("option", { value: "", text: "(none)" })]),
        ...p.values.map((v) => el("option", { value: v, text: v, selected: v === p.default })));
      break;
    default: {
      const a = Object.assign(attrs, { type: p.secret ? "password" : "text", value: p.default, autocomplete: "off", spellcheck: "false" });
      if (p.max_len) a.maxlength = p.max_len;
      const pattern = htmlPattern(p.pattern);
      if (pattern) { a.pattern = pattern; a.title = "must match " + p.pattern; }
      input = el("input", a);
    }
  }
  const label = el("label", { for: id }, p.name);
  if (p.required) label.append(el("span", { class: "required", "aria-hidden": "true", text: " *" }));
  const help = [];
  if (p.description) help.push(p.description);
  if (p.type === "int" && (p.min !== undefined || p.max !== undefined)) help.push("from " + (p.min ?? "…") + " to " + (p.max ?? "…"));
  if (p.pattern) help.push("pattern " + p.pattern);
  if (p.required) help.push("required");
  const helpId = id + "-help";
  if (help.length) input.setAttribute("aria-describedby", helpId);
  return el("div", { class: "field" }, label, input, help.length ? el("span", { class: "help", id: helpId, text: help.join("; ") }) : null);
}

// htmlPattern turns the gateway's pattern (Go syntax, matched anywhere in
// the value unless anchored) into an HTML pattern (matched against the
// whole value). A pattern this browser cannot compile is left to the
// gateway, which answers with its own message.
function htmlPattern(p) {
  if (!p) return "";
  const whole = "[\\s\\S]*(?:" + p + ")[\\s\\S]*";
  try {
    new RegExp("^(?:" + whole + ")$", "v");
    return whole;
  } catch (_) {
    return "";
  }
}

function commandForm(cmd) {
  const log = el("pre", { role: "log", "aria-label": cmd.name + " output", "aria-live": "polite" });
  const status = el("p", { class: "status", role: "status" });
  const run = el("button", { type: "submit", value: "run", text: "Run" });
  const bg = el("button", { type: "submit", value: "background", class: "secondary", text: "Run in background" });
  const stop = el("button", { type: "button", text: "Stop", hidden: true });
  const fields = cmd.params.map((p) => paramInput(cmd, p));
  let stdin = null;
  if (cmd.stdin === "body") {
    stdin = el("textarea", { id: "stdin-" + cmd.name, name: "", rows: 3 });
    fields.push(el("div", { class: "field" }, el("label", { for: stdin.id, text: "stdin" }), stdin));
  }
  const form = el("form", { class: "command", "aria-label": cmd.name },
    el("h3", { text: cmd.name }),
    cmd.description ? el("p", { class: "description", text: cmd.description }) : null,
    ...fields,
    el("div", { class: "actions" }, run, bg, stop),
    status, log);
  let controller = null;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (controller) return; // one run at a time per form
    const detached = ev.submitter && ev.submitter.value === "background";
    const params = formParams(cmd, form);
    status.className = "status";
    status.textContent = detached ? "Starting…" : "Running…";
    log.replaceChildren();
    controller = new AbortController();
    run.disabled = bg.disabled = true;
    stop.hidden = detached;
    try {
      if (detached) await runDetached(cmd, params, stdin);
      else await runBound(cmd, params, stdin, controller.signal, log, status);
    } catch (e) {
      status.className = "status bad";
      status.textContent = e.name === "AbortError" ? "Stopped: the gateway cancels the job and kills its processes" : e.message;
    } finally {
      controller = null;
      run.disabled = bg.disabled = false;
      stop.hidden = true;
      refreshJobs();
    }
  });
  stop.addEventListener("click", () => { if (controller) controller.abort(); });
  return form;
}

function formParams(cmd, form) {
  const params = {};
  for (const p of cmd.params) {
    const input = form.elements.namedItem(p.name);
    if (p.type === "bool") {
      // Unchecked is an answer too: a default of true must be overridable.
      params[p.name] = input.checked ? "true" : "false";
    } else if (input.value !== "") {
      params[p.name] = input.value;
    }
  }
  return params;
}

// runRequest builds the fetch of a run. Parameters go in a JSON body, so
// that a secret never ends up in a URL; a stdin command takes its
// parameters from the query string only, and its body is its input.
function runRequest(cmd, params, stdin, extraHeaders, signal) {
  let url = "/v1/commands/" + encodeURIComponent(cmd.name) + "/run";
  const h = Object.assign({}, extraHeaders);
  let body;
  if (cmd.stdin === "body") {
    const q = new URLSearchParams(params).toString();
    if (q) url += "?" + q;
    h["Content-Type"] = "application/octet-stream";
    body = stdin ? stdin.value : "";
  } else {
    h["Content-Type"] = "application/json";
    body = JSON.stringify({ params: params });
  }
  return fetch(url, { method: "POST", headers: headers(h), body: body, signal: signal, credentials: "omit" });
}

async function runBound(cmd, params, stdin, signal, log, status) {
  const resp = await runRequest(cmd, params, stdin, { "Accept": "text/event-stream" }, signal);
  if (!resp.ok) throw await errorFrom(resp);
  const id = resp.headers.get("Execgw-Job-Id");
  status.replaceChildren("Running ", el("a", { href: "#/jobs/" + id, text: id }), "…");
  let ended = null;
  await readEvents(resp, (name, data) => {
    if (name === "stdout" || name === "stderr") appendLine(log, name, data);
    else if (name === "exit") ended = JSON.parse(data);
  });
  if (!ended) throw new Error("The stream ended early; see job " + id);
  status.className = "status " + (ended.state === "succeeded" ? "ok" : "bad");
  status.replaceChildren(describeEnd(ended) + " — ", el("a", { href: "#/jobs/" + id, text: id }));
}

async function runDetached(cmd, params, stdin) {
  const resp = await runRequest(cmd, params, stdin, { "Accept": "application/json", "Prefer": "respond-async" });
  if (!resp.ok) throw await errorFrom(resp);
  const rec = await resp.json();
  location.hash = "#/jobs/" + rec.id;
}

// ---- the job list -------------------------------------------------------

let jobsTimer = 0;
let jobsGeneration = 0; // only the latest listing is shown and polls on

function fmtTime(s) {
  if (!s) return "—";
  const d = new Date(s);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function fmtDuration(rec) {
  let ms = rec.duration_ms;
  if ((ms === null || ms === undefined) && rec.started_at && !rec.ended_at) ms = Date.now() - Date.parse(rec.started_at);
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}

async function refreshJobs() {
  clearTimeout(jobsTimer);
  const generation = ++jobsGeneration;
  const q = new URLSearchParams({ limit: "50" });
  const state = $("filter-state").value, command = $("filter-command").value;
  if (state) q.set("state", state);
  if (command) q.set("command", command);
  const tbody = $("jobs").tBodies[0];
  try {
    const body = await api("/v1/jobs?" + q);
    if (generation !== jobsGeneration) return; // a newer filter or poll has answered or will
    const withNode = body.jobs.some((j) => j.node);
    for (const th of $("jobs").querySelectorAll(".node")) th.hidden = !withNode;
    tbody.replaceChildren(...body.jobs.map((j) => el("tr", { "data-state": j.state, "data-command": j.command },
      el("td", { class: "id" }, el("a", { href: "#/jobs/" + j.id, text: j.id })),
      el("td", { class: "state state-" + j.state, text: j.state + (j.cancel_reason ? " (" + j.cancel_reason + ")" : "") }),
      el("td", { text: j.command }),
      withNode ? el("td", { class: "node", text: j.node || "" }) : null,
      el("td", { text: fmtTime(j.started_at) }),
      el("td", { text: fmtDuration(j) }))));
    $("jobs-empty").hidden = body.jobs.length > 0;
  } catch (e) {
    if (generation !== jobsGeneration) return;
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "status bad", text: e.message })));
  }
  // Live while the page is open; a hidden tab polls no one.
  if (!document.hidden) jobsTimer = setTimeout(refreshJobs, JOBS_REFRESH_MS);
}

// ---- one job's view -----------------------------------------------------

let jobView = null; // { id, controller }

function renderRecord(rec) {
  const dl = $("job-record");
  const rows = [["id", rec.id], ["command", rec.command], ["state", rec.state + (rec.cancel_reason ? " (" + rec.cancel_reason + ")" : "")],
    ["exit code", rec.exit_code ?? "—"], ["signal", rec.signal || "—"], ["params", JSON.stringify(rec.params || {})],
    ["node", rec.node], ["pid", rec.pid ?? "—"], ["created", fmtTime(rec.created_at)], ["started", fmtTime(rec.started_at)],
    ["ended", fmtTime(rec.ended_at)], ["duration", fmtDuration(rec)],
    ["output", rec.stdout_bytes + " B stdout" + (rec.stdout_truncated ? " (truncated)" : "") + ", " + rec.stderr_bytes + " B stderr" + (rec.stderr_truncated ? " (truncated)" : "")]];
  dl.replaceChildren(...rows.filter((r) => r[1] !== undefined && r[1] !== null)
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { class: k === "state" ? "state state-" + rec.state : "", text: String(v) })]));
  $("job-title").textContent = "Job " + rec.id;
  $("job-cancel").hidden = !JOB_STATES.includes(rec.state);
}

async function openJob(id) {
  closeJob();
  const controller = new AbortController();
  jobView = { id: id, controller: controller };
  const log = $("job-log");
  log.replaceChildren();
  $("job-record").replaceChildren();
  $("job-title").textContent = "Job " + id;
  $("job-cancel").hidden = true;
  try {
    renderRecord(await api("/v1/jobs/" + encodeURIComponent(id), { signal: controller.signal }));
    // Replayed, then live until the job ends. Leaving the view aborts this
    // read only: a detached job does not depend on anyone watching it.
    const resp = await fetch("/v1/jobs/" + encodeURIComponent(id) + "/events", {
      headers: headers({ "Accept": "text/event-stream" }), signal: controller.signal, credentials: "omit",
    });
    if (!resp.ok) throw await errorFrom(resp);
    await readEvents(resp, (name, data) => {
      if (name === "stdout" || name === "stderr") appendLine(log, name, data);
      else if (name === "exit") renderRecord(JSON.parse(data));
    });
  } catch (e) {
    if (e.name !== "AbortError") notice(e.message);
  }
}

function closeJob() {
  if (jobView) jobView.controller.abort();
  jobView = null;
}

async function cancelJob() {
  if (!jobView) return;
  const button = $("job-cancel");
  button.disabled = true;
  try {
    renderRecord(await api("/v1/jobs/" + encodeURIComponent(jobView.id) + "/cancel", { method: "POST" }));
  } catch (e) {
    notice(e.message);
  } finally {
    button.disabled = false;
  }
}

// ---- routing: #/ (commands and jobs), #/jobs, #/jobs/{id} ----------------

function route() {
  const hash = location.hash || "#/";
  const m = /^#\/jobs\/([0-9A-Za-z]+)$/.exec(hash);
  notice("");
  // The command forms stay in the document while hidden, so a bound run
  // goes on while its operator looks at a job.
  $("view-commands").hidden = !!m || hash === "#/jobs";
  $("view-jobs").hidden = !!m;
  $("view-job").hidden = !m;
  if (m) {
    if (!jobView || jobView.id !== m[1]) openJob(m[1]);
    $("job-title").focus();
  } else {
    closeJob();
  }
}

function main() {
  setupToken();
  $("job-title").tabIndex = -1;
  $("job-cancel").addEventListener("click", cancelJob);
  $("job-filter").addEventListener("change", refreshJobs);
  $("job-filter").addEventListener("submit", (ev) => { ev.preventDefault(); refreshJobs(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshJobs(); });
  window.addEventListener("hashchange", route);
  loadCommands();
  refreshJobs();
  route();
}

main();
