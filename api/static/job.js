// One job's page: its progress over the event stream (SSE), the loss chart once it trains,
// its samples with their prompts, and its files with the final LoRA first.
import {
  $, FINISHED, WAITING_BECAUSE, api, duration, el, fraction, jobLabel, show, size, when,
} from "./util.js";

// Files in the order a user looks for them: the final LoRA, then the newest checkpoint.
const KIND_ORDER = ["lora", "checkpoint", "state", "sample", "tensorboard", "log"];

function renderProgress(job, progress) {
  $("job-bar").style.width = `${(100 * fraction(progress)).toFixed(1)}%`;
  const phase = progress.phase && !FINISHED.has(job.status) && progress.phase !== job.status;
  $("job-phase").textContent = phase ? progress.phase : "";
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

function waitingText(job) {
  if (job.status !== "queued") {
    return FINISHED.has(job.status) ? "No training step was run." : "Starting: the chart follows the first step.";
  }
  const parts = ["Waiting to start"];
  if (job.queue_position) parts.push(`#${job.queue_position} in the queue`);
  if (job.blocked_reason) parts.push(WAITING_BECAUSE[job.blocked_reason]);
  if (job.estimated_start_at) parts.push(`starts about ${when(job.estimated_start_at)}`);
  return parts.join(" · ");
}

// The chart only once there is a step to draw: a waiting job shows where it stands instead.
function renderChartOrWaiting(job, progress, refresh) {
  const trained = job.status !== "queued" && (progress.step || 0) > 0;
  const wasHidden = $("chart").hidden;
  $("chart").hidden = !trained;
  $("job-waiting").hidden = trained;
  $("job-waiting").textContent = trained ? "" : waitingText(job);
  if (trained && wasHidden) refresh();
}

function renderJob(job) {
  $("job-title").textContent = jobLabel(job);
  $("job-meta").textContent =
    `${job.owner} · ${job.base_model} · submitted ${when(job.created_at)} · ${job.id}`;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  $("job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  $("cancel").hidden = FINISHED.has(job.status);
  renderProgress(job, job.progress || {});
}

function ordered(items) {
  const rank = (a) => KIND_ORDER.indexOf(a.kind);
  return [...items].sort((a, b) => rank(a) - rank(b) || (b.step ?? 0) - (a.step ?? 0)
    || a.name.localeCompare(b.name));
}

function fileRow(jobId, artifact) {
  const href = `/v1/jobs/${jobId}/artifacts/${encodeURI(artifact.name)}`;
  const final = artifact.kind === "lora";
  const row = el("tr", null, final ? { class: "final" } : {});
  const file = el("td");
  file.append(el("a", artifact.name, { href, download: "" }));
  const kind = el("td");
  kind.append(final ? el("span", "final LoRA", { class: "final-badge" }) : artifact.kind);
  row.append(file, kind, el("td", artifact.epoch ?? "–"), el("td", artifact.step ?? "–"),
    el("td", size(artifact.size_bytes)));
  return row;
}

function sampleFigure(jobId, artifact) {
  const figure = el("figure");
  const caption = el("figcaption");
  caption.append(el("span", artifact.prompt || artifact.name, { class: "prompt" }),
    el("small", `epoch ${artifact.epoch ?? "?"} · step ${artifact.step ?? "?"}`));
  figure.append(el("img", null, {
    src: `/v1/jobs/${jobId}/artifacts/${encodeURI(artifact.name)}`, alt: artifact.prompt || artifact.name,
  }), caption);
  return figure;
}

async function renderArtifacts(jobId) {
  const { items } = await api(`/v1/jobs/${jobId}/artifacts`);
  $("artifacts").replaceChildren(...ordered(items).map((a) => fileRow(jobId, a)));
  const samples = items.filter((a) => a.kind === "sample")
    .sort((a, b) => (a.step ?? 0) - (b.step ?? 0) || a.name.localeCompare(b.name));
  $("samples").replaceChildren(...samples.map((a) => sampleFigure(jobId, a)));
  $("no-samples").hidden = samples.length > 0;
}

export function showJob(jobId) {
  show("job");
  let job = null;
  let lastChart = 0;
  const refreshChart = () => {
    lastChart = Date.now();
    $("chart").src = `/v1/jobs/${jobId}/loss.png?t=${lastChart}`;
  };
  const reload = async () => {
    job = await api(`/v1/jobs/${jobId}`);
    renderJob(job);
    renderChartOrWaiting(job, job.progress || {}, refreshChart);
    await renderArtifacts(jobId);
  };
  $("cancel").onclick = async () => {
    await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
    await reload();
  };
  $("chart").hidden = true;
  // The browser resends Last-Event-ID itself when the connection drops; the stream ends
  // after `finished`, so the page closes it then (or the browser would reconnect).
  const events = new EventSource(`/v1/jobs/${jobId}/events`);
  events.addEventListener("progress", (e) => {
    if (!job) return;
    job.status = job.status === "queued" ? "running" : job.status;
    const progress = JSON.parse(e.data);
    renderProgress(job, progress);
    renderChartOrWaiting(job, progress, refreshChart);
    if (!$("chart").hidden && Date.now() - lastChart > 5000) refreshChart();
  });
  events.addEventListener("phase", (e) => {
    if (job && job.status === "queued") renderJob({ ...job, status: "running" });
    $("job-phase").textContent = JSON.parse(e.data).phase || "";
  });
  // A queued job's place or forecast moved (docs/scheduling.md): read it again.
  events.addEventListener("queue", () => reload().catch(() => {}));
  for (const type of ["artifact", "sample"]) {
    events.addEventListener(type, () => renderArtifacts(jobId).catch(() => {}));
  }
  events.addEventListener("finished", () => {
    events.close();
    reload().then(() => { if (!$("chart").hidden) refreshChart(); }).catch(() => {});
  });
  reload().catch(() => {});
  return () => events.close();
}
