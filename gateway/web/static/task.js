// One task on a map: its tiles (the jobs' dimension values) coloured by job status, kept live by the task
// WebSocket's snapshots; a progress summary; a click on a tile shows its job and backend id; finished raster
// results are drawn as PNG previews (`/unit_jobs/{id}/preview.png`).
/* global L */
import {
  api, ApiError, askForToken, AuthError, el, JOB_STATUSES, percent, STATUS_COLOURS, statusBadge,
  TERMINAL_TASK_STATUSES, wsUrl,
} from "./api.js";

const taskId = Number(window.location.pathname.split("/").filter(Boolean).pop());
const errorBox = document.getElementById("error");
const connection = document.getElementById("connection");
const PREVIEW_CONCURRENCY = 4;
const PREVIEW_RETRIES = 15;
const CANVAS_ABOVE = 2000; // more tiles than this are drawn on a canvas instead of one SVG path each
const MAX_PREVIEWS_IN_VIEW = 400; // results are loaded for the finished tiles in view, when not more than this

let map = null;
let tileGroup = null;
let resultGroup = null;
let task = null;
let socket = null;
let fitted = false;
const tiles = new Map(); // job id -> {layer, status}
const jobs = new Map(); // job id -> job of the latest snapshot
const previewQueue = [];
const previewsRequested = new Set();
let previewsRunning = 0;

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

// ---- geometry of a dimension value -------------------------------------------------------------------------
const GEOMETRY_TYPES = new Set(["Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString",
                                "GeometryCollection"]);

function tileGeometry(value) {
  if (!value || typeof value !== "object") return null;
  if (value.type === "Feature") return tileGeometry(value.geometry);
  if (value.type === "FeatureCollection") {
    const geometries = (value.features || []).map((f) => tileGeometry(f && f.geometry)).filter(Boolean);
    return geometries.length ? { type: "GeometryCollection", geometries } : null;
  }
  if (GEOMETRY_TYPES.has(value.type)) return value;
  const { west, south, east, north } = value;
  if ([west, south, east, north].every((v) => typeof v === "number") && (value.crs === undefined
      || [4326, "4326", "EPSG:4326"].includes(value.crs))) {
    return { type: "Polygon", coordinates: [[[west, south], [east, south], [east, north], [west, north], [west, south]]] };
  }
  return null;
}

// ---- map -------------------------------------------------------------------------------------------------
function tileStyle(status, hasResult) {
  const colour = STATUS_COLOURS[status] || STATUS_COLOURS.unknown;
  return { color: colour, weight: 1.5, fillColor: colour, fillOpacity: hasResult ? 0.08 : 0.45 };
}

function createMap(jobCount) {
  map = L.map("map", { preferCanvas: jobCount > CANVAS_ABOVE, zoomSnap: 0.25 });
  map.createPane("results").style.zIndex = 350; // under the tiles (overlayPane, 400)
  tileGroup = L.featureGroup().addTo(map);
  resultGroup = L.layerGroup().addTo(map);
  L.control.layers(null, { Tiles: tileGroup, "Results (first band)": resultGroup }, { collapsed: false }).addTo(map);
  L.control.scale().addTo(map);
  map.setView([0, 0], 2);
  map.on("moveend", requestVisiblePreviews);
}

function markElements(layer, jobId, status) {
  layer.eachLayer((part) => {
    const node = part.getElement && part.getElement();
    if (node) {
      node.setAttribute("data-job-id", String(jobId));
      node.setAttribute("data-status", status);
      node.classList.add("tile");
    }
  });
}

function addTile(job, geometry) {
  const layer = L.geoJSON(geometry, { style: () => tileStyle(job.status, false) });
  layer.bindPopup(() => popupContent(job.id), { minWidth: 240 });
  layer.addTo(tileGroup);
  markElements(layer, job.id, job.status);
  tiles.set(job.id, { layer, bounds: layer.getBounds(), status: job.status, hasResult: false });
}

function updateTile(job) {
  const tile = tiles.get(job.id);
  if (!tile || tile.status === job.status) return;
  tile.status = job.status;
  tile.layer.setStyle(tileStyle(job.status, tile.hasResult));
  markElements(tile.layer, job.id, job.status);
  if (tile.layer.isPopupOpen()) tile.layer.setPopupContent(popupContent(job.id));
}

// ---- popup -----------------------------------------------------------------------------------------------
function field(name, label, value) {
  return el("tr", {}, el("th", { text: label }), el("td", { "data-field": name, text: value }));
}

function popupContent(jobId) {
  const job = jobs.get(jobId) || { id: jobId };
  const rows = el("table", {},
    field("job_id", "job", String(job.id)),
    field("title", "title", job.title || ""),
    field("status", "status", job.status || ""),
    field("progress", "progress", percent(job.progress)),
    field("backend_job_id", "backend id", "…"));
  if (job.message) rows.append(field("message", "message", job.message));
  const box = el("div", { class: "job-popup", "data-job-id": String(jobId) }, rows);
  api(`/unit_jobs/${jobId}`).then((body) => {
    box.querySelector('[data-field="backend_job_id"]').textContent = body.backend_job_id || "not submitted yet";
  }).catch((error) => {
    box.querySelector('[data-field="backend_job_id"]').textContent = `(${error.message})`;
  });
  return box;
}

// ---- raster previews -------------------------------------------------------------------------------------
function wantsPreviews() {
  return !task.format || task.format === "gtiff";
}

/** Load the results of the finished tiles in view (once each), unless more than MAX_PREVIEWS_IN_VIEW are in
 * view: then ask to zoom in (a zoomed-out view of a large task would load thousands of images). */
function requestVisiblePreviews() {
  if (!task || !wantsPreviews() || !fitted) return;
  const view = map.getBounds();
  const inView = [];
  for (const [jobId, tile] of tiles) {
    if (tile.status === "finished" && view.intersects(tile.bounds)) inView.push(jobId);
  }
  const note = document.getElementById("preview-note");
  if (inView.length > MAX_PREVIEWS_IN_VIEW) {
    note.textContent = `${inView.length} results in view: zoom in to see them`;
    return;
  }
  note.textContent = "";
  for (const jobId of inView) {
    if (previewsRequested.has(jobId)) continue;
    previewsRequested.add(jobId);
    previewQueue.push({ jobId, attempt: 0 });
  }
  pumpPreviews();
}

function pumpPreviews() {
  while (previewsRunning < PREVIEW_CONCURRENCY && previewQueue.length) {
    const item = previewQueue.shift();
    previewsRunning += 1;
    loadPreview(item).finally(() => {
      previewsRunning -= 1;
      pumpPreviews();
    });
  }
}

async function loadPreview(item) {
  try {
    const response = await api(`/unit_jobs/${item.jobId}/preview.png`, { raw: true });
    const [west, south, east, north] = response.headers.get("X-Bounds").split(",").map(Number);
    const url = URL.createObjectURL(await response.blob());
    const overlay = L.imageOverlay(url, [[south, west], [north, east]],
                                   { pane: "results", className: "result-overlay", opacity: 0.9 });
    overlay.addTo(resultGroup);
    overlay.getElement().setAttribute("data-job-id", String(item.jobId));
    const tile = tiles.get(item.jobId);
    tile.hasResult = true;
    tile.layer.setStyle(tileStyle(tile.status, true));
  } catch (error) {
    const retry = error instanceof ApiError && (error.code === "RESULTS_NOT_AVAILABLE" || error.status >= 500);
    if (retry && item.attempt < PREVIEW_RETRIES) {
      item.attempt += 1;
      setTimeout(() => { previewQueue.push(item); pumpPreviews(); }, Math.min(1000 * item.attempt, 10000));
    } else if (!(error instanceof ApiError && error.code === "NO_RASTER_RESULT")) {
      console.warn(`no preview of job ${item.jobId}: ${error.message}`);
    }
  }
}

// ---- summary ---------------------------------------------------------------------------------------------
function renderSummary(body) {
  document.title = `#${body.id} ${body.title} · ${percent(body.progress)}`;
  document.getElementById("title").textContent = `#${body.id} ${body.title}`;
  document.getElementById("task-status").replaceChildren(statusBadge(body.status));
  document.getElementById("summary").setAttribute("data-status", body.status);
  document.getElementById("progress-bar").style.width = `${Math.min(100, Number(body.progress) || 0)}%`;
  const text = document.getElementById("progress-text");
  text.textContent = percent(body.progress);
  text.setAttribute("data-progress", String(body.progress));
  const counts = body.job_counts || {};
  const total = (body.jobs || []).length;
  document.getElementById("counts").textContent = `${counts.finished || 0} of ${total} jobs finished`
    + JOB_STATUSES.filter((s) => s !== "finished" && counts[s]).map((s) => ` · ${counts[s]} ${s}`).join("");
  const legend = document.getElementById("legend");
  legend.replaceChildren(el("h2", { text: "Jobs" }), ...JOB_STATUSES.map((status) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = STATUS_COLOURS[status];
    return el("div", { class: "legend-row", "data-status": status }, swatch,
              el("span", { text: status }), el("span", { class: "count", text: String(counts[status] || 0) }));
  }));
  if (total && !tiles.size) legend.append(el("p", { class: "muted", text: "The jobs' dimension values are not "
    + "geometries: nothing to draw on the map." }));
  const terminal = TERMINAL_TASK_STATUSES.has(body.status);
  document.getElementById("cancel").hidden = terminal;
  document.getElementById("retry").hidden = !(counts.failed > 0);
}

function render(body) {
  task = body;
  if (!map) createMap((body.jobs || []).length);
  const dimension = body.dimension && body.dimension.name;
  for (const job of body.jobs || []) {
    jobs.set(job.id, job);
    if (!tiles.has(job.id)) {
      const geometry = tileGeometry((job.parameters || {})[dimension]);
      if (geometry) addTile(job, geometry);
    } else {
      updateTile(job);
    }
  }
  if (!fitted && tiles.size) {
    map.fitBounds(tileGroup.getBounds(), { padding: [24, 24] });
    fitted = true;
  }
  renderSummary(body);
  requestVisiblePreviews();
}

// ---- live updates ----------------------------------------------------------------------------------------
function setConnection(text, live = false) {
  connection.textContent = text;
  connection.className = live ? "connection live" : "connection";
}

function connect(delay = 1000) {
  if (socket || (task && TERMINAL_TASK_STATUSES.has(task.status))) return;
  let stop = false;
  socket = new WebSocket(wsUrl(`/ws/upscale_tasks/${taskId}`, { interval: "1" }));
  socket.addEventListener("open", () => { setConnection("live", true); delay = 1000; });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "status" && message.data) {
      render(message.data);
      showError("");
    } else if (message.type === "error") {
      showError(message.message || "error");
    }
  });
  socket.addEventListener("close", (event) => {
    socket = null;
    if (task && TERMINAL_TASK_STATUSES.has(task.status)) {
      setConnection(`task ${task.status}`);
      return;
    }
    if (event.code === 1008 && event.reason === "AUTHENTICATION_FAILED") {
      stop = true;
      askForToken(document.getElementById("auth"), "the token was refused", start);
    } else if (event.reason === "TASK_NOT_FOUND") {
      stop = true;
    }
    if (!stop) {
      setConnection("reconnecting…");
      setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
    }
  });
}

async function action(path, question) {
  if (!window.confirm(question)) return;
  try {
    render(await api(path, { method: "POST" }).then(() => api(`/upscale_tasks/${taskId}`)));
    connect();
  } catch (error) {
    showError(error.message);
  }
}

document.getElementById("cancel").addEventListener("click",
  () => action(`/upscale_tasks/${taskId}/cancel`, "Cancel this task? Jobs not yet submitted never will be."));
document.getElementById("retry").addEventListener("click",
  () => action(`/upscale_tasks/${taskId}/retry`, "Submit the failed jobs again?"));

async function start() {
  if (!Number.isSafeInteger(taskId) || taskId < 1) {
    showError("not a task id");
    return;
  }
  try {
    render(await api(`/upscale_tasks/${taskId}`));
    setConnection(TERMINAL_TASK_STATUSES.has(task.status) ? `task ${task.status}` : "connecting…");
    connect();
  } catch (error) {
    if (error instanceof AuthError) askForToken(document.getElementById("auth"), error.message, start);
    else showError(error.message);
  }
}

start();
