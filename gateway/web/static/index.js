// The task list: `GET /upscale_tasks` pages, refreshed whenever `/ws/jobs_status` reports a change.
import {
  api, askForToken, AuthError, el, formatTime, percent, statusBadge, TERMINAL_TASK_STATUSES, wsUrl,
} from "./api.js";

const tbody = document.querySelector("#tasks tbody");
const more = document.getElementById("more");
const empty = document.getElementById("empty");
const errorBox = document.getElementById("error");
const connection = document.getElementById("connection");
let pages = 1;
let nextToken = null;
let socket = null;
let refreshTimer = null;

function doneShare(task) {
  const counts = task.job_counts || {};
  const done = (counts.finished || 0) + (counts.failed || 0) + (counts.canceled || 0);
  return task.job_count ? (100 * done) / task.job_count : 0;
}

function row(task) {
  const link = el("a", { href: `/tasks/${task.id}`, text: task.title || `task ${task.id}` });
  const counts = task.job_counts || {};
  const detail = ["finished", "failed", "canceled", "running", "queued", "created"]
    .filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
  return el("tr", { "data-task-id": String(task.id), "data-status": task.status },
    el("td", { text: String(task.id) }),
    el("td", {}, link),
    el("td", {}, statusBadge(task.status)),
    el("td", { text: String(task.job_count), title: detail }),
    el("td", { class: "done", text: percent(doneShare(task)) }),
    el("td", { text: formatTime(task.created) }),
    el("td", { text: formatTime(task.updated) }));
}

async function load() {
  try {
    const rows = [];
    let pageToken = "";
    for (let page = 0; page < pages; page += 1) {
      const query = new URLSearchParams({ page_size: "50" });
      if (pageToken) query.set("page_token", pageToken);
      const body = await api(`/upscale_tasks?${query}`);
      rows.push(...body.tasks);
      pageToken = body.next_page_token;
      if (!pageToken) break;
    }
    nextToken = pageToken;
    tbody.replaceChildren(...rows.map(row));
    empty.hidden = rows.length > 0;
    more.hidden = !nextToken;
    errorBox.hidden = true;
    connect();
  } catch (error) {
    if (error instanceof AuthError) {
      askForToken(document.getElementById("auth"), error.message, load);
    } else {
      errorBox.textContent = error.message;
      errorBox.hidden = false;
    }
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(load, 300);
}

function connect(delay = 1000) {
  if (socket) return;
  socket = new WebSocket(wsUrl("/ws/jobs_status", { filter: "upscaling", interval: "2" }));
  socket.addEventListener("open", () => { connection.textContent = "live"; connection.className = "connection live"; });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "status") {
      const busy = (message.data.upscaling_tasks || []).some((t) => !TERMINAL_TASK_STATUSES.has(t.status));
      connection.title = busy ? "tasks in progress" : "all tasks done";
      scheduleRefresh();
    } else if (message.type === "error") {
      errorBox.textContent = message.message;
      errorBox.hidden = false;
    }
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    connection.className = "connection";
    if (event.code === 1008 && event.reason === "AUTHENTICATION_FAILED") {
      connection.textContent = "";
      askForToken(document.getElementById("auth"), "the token was refused", load);
      return;
    }
    connection.textContent = "reconnecting";
    setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
  });
}

more.addEventListener("click", () => { pages += 1; load(); });
load();
