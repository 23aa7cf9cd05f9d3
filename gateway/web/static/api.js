// The page's access to the gateway's HTTP/WebSocket API: bearer token (AUTH_MODE token/oidc), errors, formatting.

const TOKEN_KEY = "upscaling.token";

export const STATUS_COLOURS = {
  created: "#3b6fd8",
  queued: "#f08c00",
  running: "#f5d000",
  finished: "#2f9e44",
  canceled: "#868e96",
  failed: "#e03131",
  unknown: "#212529",
};
export const JOB_STATUSES = Object.keys(STATUS_COLOURS);
export const TERMINAL_TASK_STATUSES = new Set(["finished", "failed", "canceled"]);

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const value = token();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

/** A request to the API; JSON answers are parsed, errors thrown with the server's message. */
export async function api(path, { method = "GET", raw = false } = {}) {
  const response = await fetch(path, { method, headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) {
    throw new AuthError((await errorBody(response)).message || "a token is required");
  }
  if (!response.ok) {
    const body = await errorBody(response);
    throw new ApiError(response.status, body.error_code || String(response.status),
                       body.message || response.statusText);
  }
  return raw ? response : response.json();
}

async function errorBody(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

/** ws(s)://host/path?params, with the token as `token` (as APEx WebSocket clients send it). */
export function wsUrl(path, params = {}) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  if (token()) url.searchParams.set("token", token());
  return url.toString();
}

/** Show the token form in `container`; `onSaved` runs once a token was entered. */
export function askForToken(container, reason, onSaved) {
  container.replaceChildren();
  const form = document.createElement("form");
  form.className = "token-form";
  const text = document.createElement("p");
  text.textContent = `This gateway requires authentication (${reason}). Enter an API key or access token:`;
  const input = document.createElement("input");
  input.type = "password";
  input.name = "token";
  input.autocomplete = "off";
  input.placeholder = "token";
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Use token";
  form.append(text, input, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    container.replaceChildren();
    onSaved();
  });
  container.append(form);
  container.hidden = false;
  input.focus();
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function statusBadge(status) {
  const badge = el("span", { class: `badge status-${status}`, text: status });
  badge.style.setProperty("--status-colour", STATUS_COLOURS[status] || STATUS_COLOURS.unknown);
  return badge;
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function percent(value) {
  const rounded = Math.round(Number(value || 0) * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)} %`;
}
