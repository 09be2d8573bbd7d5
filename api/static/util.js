// Helpers every page of the dashboard shares: the API call, elements, and how numbers,
// times and jobs are written.

export const $ = (id) => document.getElementById(id);
export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const SECTIONS = ["sign-in", "jobs", "queue", "job"];

export async function api(path, options = {}) {
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

export function show(section) {
  for (const id of SECTIONS) $(id).hidden = id !== section;
  $("nav").hidden = section === "sign-in";
}

export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

export function row(cells, attrs = {}) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) {
    const td = el("td");
    td.append(cell instanceof Node ? cell : String(cell ?? "–"));
    tr.append(td);
  }
  return tr;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
}

export function size(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

// A moment as the reader's local date and time: "6 Dec, 14:05" (today: "14:05").
export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short" })}, ${time}`;
}

// A job as people name it: its name, or "unnamed" and the id's first characters.
export function jobLabel(job) {
  return job.name || `unnamed ${job.id.slice(0, 8)}`;
}

export function fraction(progress) {
  return progress.total_steps ? Math.min(1, (progress.step || 0) / progress.total_steps) : 0;
}

export function bar(value) {
  const outer = el("div", null, { class: "progress" });
  const inner = el("div", null, { class: "bar" });
  inner.style.width = `${(100 * value).toFixed(1)}%`;
  outer.append(inner);
  return outer;
}

export function statusBadge(status, label = status) {
  return el("span", label, { class: `status ${status}` });
}

// Why a queued job waits (the job's blocked_reason; docs/scheduling.md), in words.
export const WAITING_BECAUSE = {
  held: "held",
  quota: "over quota",
  paused: "paused",
  gpu_memory: "waiting for GPU memory",
  no_fitting_worker: "no worker fits",
};

// Polls `render` every `ms` until the returned stop function is called.
export function every(ms, render) {
  let timer = null, stopped = false;
  const tick = () => render().catch(() => {}).finally(() => {
    if (!stopped) timer = setTimeout(tick, ms);
  });
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
