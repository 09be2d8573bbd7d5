// The lorabox dashboard: plain JS over the REST API, signed in by an HttpOnly cookie
// (POST /v1/session), so EventSource, <img> and download links authenticate too.
"use strict";

const $ = (id) => document.getElementById(id);
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
let stopView = () => {};

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  if (response.status === 401) {
    show("sign-in");
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.status === 204 ? null : response.json();
}

function show(section) {
  for (const id of ["sign-in", "queue", "job"]) $(id).hidden = id !== section;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
}

function size(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function fraction(progress) {
  return progress.total_steps ? Math.min(1, (progress.step || 0) / progress.total_steps) : 0;
}

function bar(progress) {
  const outer = el("div", null, { class: "progress" });
  const inner = el("div", null, { class: "bar" });
  inner.style.width = `${(100 * fraction(progress)).toFixed(1)}%`;
  outer.append(inner);
  return outer;
}

function statusBadge(status) {
  return el("span", status, { class: `status ${status}` });
}

// --- the queue ---------------------------------------------------------------------------

async function renderQueue() {
  const me = await api("/v1/me");
  const scope = me.is_admin ? "all" : "mine";
  const page = await api(`/v1/jobs?scope=${scope}&limit=100`);
  const rows = $("queue-rows");
  rows.replaceChildren();
  for (const job of page.items) {
    const p = job.progress || {};
    const row = el("tr", null, { "data-job": job.id });
    const link = el("a", job.name || job.id, { href: `#/jobs/${job.id}` });
    const state = statusBadge(job.status);
    if (job.queue_position) state.textContent += ` #${job.queue_position}`;
    const loss = typeof p.avg_loss === "number" ? p.avg_loss.toFixed(4) : "–";
    const cells = [link, state, bar(p), loss, FINISHED.has(job.status) ? "–" : duration(p.eta_s)];
    for (const cell of cells) {
      const td = el("td");
      td.append(cell);
      row.append(td);
    }
    rows.append(row);
  }
  $("queue-empty").hidden = page.items.length > 0;
}

function showQueue() {
  show("queue");
  let timer = null;
  const tick = () => renderQueue().catch(() => {}).finally(() => {
    timer = setTimeout(tick, 2000);
  });
  tick();
  return () => clearTimeout(timer);
}

// --- one job -----------------------------------------------------------------------------

function renderProgress(job, progress) {
  $("job-bar").style.width = `${(100 * fraction(progress)).toFixed(1)}%`;
  $("job-phase").textContent = progress.phase && !FINISHED.has(job.status) ? progress.phase : "";
  const numbers = [
    ["step", `${progress.step ?? 0} / ${progress.total_steps ?? "?"}`],
    ["epoch", `${progress.epoch ?? 0} / ${progress.total_epochs ?? "?"}`],
    ["loss", progress.loss?.toFixed?.(4) ?? "–"],
    ["average loss", progress.avg_loss?.toFixed?.(4) ?? "–"],
    ["learning rate", Object.values(progress.lr || {}).map((v) => v.toExponential(2)).join(", ") || "–"],
    ["samples/s", progress.samples_per_s?.toFixed?.(2) ?? "–"],
    ["elapsed", duration(progress.elapsed_s)],
    ["ETA", FINISHED.has(job.status) ? "–" : duration(progress.eta_s)],
  ];
  $("job-numbers").replaceChildren(...numbers.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
}

function renderJob(job) {
  $("job-title").textContent = job.name || job.id;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  $("job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  $("cancel").hidden = FINISHED.has(job.status);
  renderProgress(job, job.progress || {});
}

async function renderArtifacts(jobId) {
  const { items } = await api(`/v1/jobs/${jobId}/artifacts`);
  const rows = items.map((a) => {
    const link = el("a", a.name, { href: `/v1/jobs/${jobId}/artifacts/${encodeURI(a.name)}`, download: "" });
    const row = el("tr");
    const first = el("td");
    first.append(link);
    row.append(first, el("td", a.kind), el("td", a.epoch ?? "–"),
      el("td", size(a.size_bytes)));
    return row;
  });
  $("artifacts").replaceChildren(...rows);
  const samples = items.filter((a) => a.kind === "sample").map((a) => {
    const figure = el("figure");
    figure.append(el("img", null, { src: `/v1/jobs/${jobId}/artifacts/${encodeURI(a.name)}`, alt: a.name }),
      el("figcaption", `epoch ${a.epoch ?? "?"}, step ${a.step ?? "?"}`));
    return figure;
  });
  $("samples").replaceChildren(...samples);
  $("no-samples").hidden = samples.length > 0;
}

function refreshChart(jobId) {
  $("chart").src = `/v1/jobs/${jobId}/loss.png?t=${Date.now()}`;
}

function showJob(jobId) {
  show("job");
  let job = null;
  let lastChart = 0;
  const reload = async () => {
    job = await api(`/v1/jobs/${jobId}`);
    renderJob(job);
    await renderArtifacts(jobId);
  };
  $("cancel").onclick = async () => {
    await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
    await reload();
  };
  refreshChart(jobId);
  // The browser resends Last-Event-ID itself when the connection drops; the stream ends
  // after `finished`, so the page closes it then (or the browser would reconnect).
  const events = new EventSource(`/v1/jobs/${jobId}/events`);
  events.addEventListener("progress", (e) => {
    if (!job) return;
    job.status = job.status === "queued" ? "running" : job.status;
    renderProgress(job, JSON.parse(e.data));
    if (Date.now() - lastChart > 5000) {
      lastChart = Date.now();
      refreshChart(jobId);
    }
  });
  events.addEventListener("phase", (e) => {
    if (job && job.status === "queued") renderJob({ ...job, status: "running" });
    $("job-phase").textContent = JSON.parse(e.data).phase || "";
  });
  for (const type of ["artifact", "sample"]) {
    events.addEventListener(type, () => renderArtifacts(jobId).catch(() => {}));
  }
  events.addEventListener("finished", () => {
    events.close();
    reload().then(() => refreshChart(jobId)).catch(() => {});
  });
  reload().catch(() => {});
  return () => events.close();
}

// --- sign-in and routing -----------------------------------------------------------------

async function route() {
  stopView();
  stopView = () => {};
  try {
    const me = await api("/v1/me");
    $("who").textContent = me.name;
    $("sign-out").hidden = false;
  } catch {
    return; // api() showed the sign-in form
  }
  const match = location.hash.match(/^#\/jobs\/([0-9a-f]+)$/);
  stopView = match ? showJob(match[1]) : showQueue();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  const response = await fetch("/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  if (!response.ok) {
    $("sign-in-error").textContent = "That token is not valid.";
    return;
  }
  $("token").value = "";
  route();
});

$("sign-out").addEventListener("click", async () => {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  $("who").textContent = "";
  $("sign-out").hidden = true;
  stopView();
  show("sign-in");
});

window.addEventListener("hashchange", route);
route();
