// The lorabox dashboard: plain JS modules over the REST API, signed in by an HttpOnly cookie
// (POST /v1/session), so EventSource, <img> and download links authenticate too. The pages:
// jobs (here), the team's queue (queue.js) and one job (job.js); shared helpers in util.js.
import { showJob } from "./job.js";
import { showQueue } from "./queue.js";
import {
  $, FINISHED, WAITING_BECAUSE, api, bar, duration, el, every, fraction, jobLabel, row, show,
  statusBadge, when,
} from "./util.js";

let stopView = () => {};

// --- the jobs ----------------------------------------------------------------------------

function jobRow(job) {
  const p = job.progress || {};
  const link = el("a", jobLabel(job), { href: `#/jobs/${job.id}` });
  const state = el("span");
  const place = job.queue_position ? ` #${job.queue_position}` : "";
  state.append(statusBadge(job.status, job.status + place));
  if (job.blocked_reason) {
    state.append(" ", el("span", WAITING_BECAUSE[job.blocked_reason], { class: "reason" }));
  }
  const loss = typeof p.avg_loss === "number" ? p.avg_loss.toFixed(4) : "–";
  return row([link, job.owner, job.base_model, when(job.created_at), state, bar(fraction(p)), loss,
    FINISHED.has(job.status) ? "–" : duration(p.eta_s)], { "data-job": job.id });
}

async function renderJobs() {
  const me = await api("/v1/me");
  const scope = me.is_admin ? "all" : "mine";
  const page = await api(`/v1/jobs?scope=${scope}&limit=100`);
  $("jobs-rows").replaceChildren(...page.items.map(jobRow));
  $("jobs-empty").hidden = page.items.length > 0;
}

function showJobs() {
  show("jobs");
  return every(2000, renderJobs);
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
  if (match) stopView = showJob(match[1]);
  else stopView = location.hash === "#/queue" ? showQueue() : showJobs();
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
