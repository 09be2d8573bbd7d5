// The team's queue (GET /v1/queue): everyone's running and waiting jobs in the scheduler's
// order, the caller's own marked, and a panel per worker.
import {
  $, WAITING_BECAUSE, api, bar, el, every, jobLabel, row, show, size, statusBadge, when,
} from "./util.js";

function stateCell(job) {
  const cell = el("span");
  cell.append(statusBadge(job.status));
  if (job.status === "queued") {
    const reason = job.blocked_reason ? WAITING_BECAUSE[job.blocked_reason] : "next in line";
    cell.append(" ", el("span", reason, { class: `reason ${job.blocked_reason || "none"}` }));
  }
  return cell;
}

function jobCell(job) {
  const cell = el("span");
  // Only one's own jobs open (the API shows a colleague's job's name and place, no more).
  cell.append(job.mine ? el("a", jobLabel(job), { href: `#/jobs/${job.id}` }) : jobLabel(job));
  if (job.mine) cell.append(" ", el("span", "yours", { class: "mine-badge" }));
  return cell;
}

function jobRow(job) {
  const place = job.status === "running" ? "▶" : job.queue_position ?? "–";
  const attrs = { "data-queue-job": job.id, class: job.mine ? "mine" : "" };
  return row([place, jobCell(job), job.owner, job.base_model, when(job.created_at),
    el("span", job.priority, { class: `priority ${job.priority}` }), stateCell(job),
    job.status === "running" ? when(job.started_at) : when(job.estimated_start_at),
    when(job.estimated_finish_at)], attrs);
}

function workerPanel(worker, jobs) {
  const panel = el("article", null, { class: `worker ${worker.state}`, "data-worker": worker.name });
  const running = jobs.find((j) => j.id === worker.current_job_id);
  const current = worker.current_job_id
    ? (running ? `${jobLabel(running)} (${running.owner})` : worker.current_job_id.slice(0, 8))
    : "idle";
  const used = worker.memory_total_bytes ? worker.memory_used_bytes / worker.memory_total_bytes : 0;
  panel.append(
    el("h3", worker.name),
    el("p", worker.gpu_name || "CPU", { class: "gpu" }),
    el("p", `job: ${current}`, { class: "current" }),
    bar(used),
    el("p", `memory in use: ${size(worker.memory_used_bytes)} of ${size(worker.memory_total_bytes)}`,
      { class: "memory" }),
  );
  return panel;
}

function summary(queue) {
  const parts = [`policy: ${queue.scheduler}`, `${queue.running} running`, `${queue.queued} waiting`];
  if (queue.paused) parts.push("paused by an admin: no job starts");
  return parts.join(" · ");
}

export function showQueue() {
  show("queue");
  const pages = [null]; // cursors of the pages seen: the last is the one shown
  const render = async () => {
    const cursor = pages[pages.length - 1];
    const queue = await api(`/v1/queue?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
    $("queue-summary").textContent = summary(queue);
    $("workers").replaceChildren(...queue.workers.map((w) => workerPanel(w, queue.items)));
    $("queue-rows").replaceChildren(...queue.items.map(jobRow));
    $("queue-empty").hidden = queue.items.length > 0;
    $("queue-first").hidden = pages.length === 1;
    $("queue-next").hidden = !queue.next_cursor;
    $("queue-next").onclick = () => {
      pages.push(queue.next_cursor);
      render().catch(() => {});
    };
  };
  $("queue-first").onclick = () => {
    pages.splice(1);
    render().catch(() => {});
  };
  return every(2000, render);
}
