// Talking to the server: fetch with the access token, the live WebSocket, formatting.

const params = new URLSearchParams(location.search);
if (params.get("token")) sessionStorage.setItem("flock-token", params.get("token"));
const TOKEN = sessionStorage.getItem("flock-token");

// What the API's parameters are called in the UI, for validation errors.
const FIELD_LABELS = { min_duration_ms: "min ms", since: "since", until: "until", q: "search", trace_id: "trace id",
  span_id: "span id", workflow: "workflow", offset: "offset", limit: "page size" };

// A readable message for an error body: FastAPI's 422 lists ({loc, msg}) become "min ms: …".
export function describeError(status, detail) {
  if (Array.isArray(detail)) {
    const parts = detail.map((d) => {
      const loc = Array.isArray(d && d.loc) ? d.loc : [];
      const key = loc.length ? String(loc[loc.length - 1]) : "";
      const label = FIELD_LABELS[key] || key;
      return `${label ? `${label}: ` : ""}${(d && d.msg) || "invalid"}`;
    });
    return `Invalid ${parts.join("; ")}`;
  }
  if (typeof detail === "string" && detail) return detail;
  if (detail === null || detail === undefined || detail === "") return `The server answered ${status}.`;
  return JSON.stringify(detail);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(describeError(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

export const OFFLINE = "Cannot reach the dashboard server (stopped or restarting?). This view reloads when it is back.";

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, OFFLINE); // a network error ("Failed to fetch")
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) throw new ApiError(res.status, data && data.detail !== undefined ? data.detail : data);
  return data;
}

export function query(obj) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// One WebSocket for the whole page, reconnecting; listeners get every message, and
// {"type": "reconnected"} when the socket is back after losing the server.
const listeners = new Set();
let socket = null;
let lost = false;
export const RECONNECT_MS = 3000;
export function onLive(fn) { listeners.add(fn); return () => listeners.delete(fn); }
function emit(msg) { for (const fn of [...listeners]) fn(msg); }
export function connectLive(indicator) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const url = `${proto}://${location.host}/api/live${TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : ""}`;
  socket = new WebSocket(url);
  socket.onopen = () => {
    indicator.classList.add("on");
    if (lost) { lost = false; emit({ type: "reconnected" }); }
  };
  socket.onmessage = (ev) => {
    let msg; try { msg = JSON.parse(ev.data); } catch { return; }
    emit(msg);
  };
  socket.onclose = () => {
    indicator.classList.remove("on");
    lost = true;
    setTimeout(() => connectLive(indicator), RECONNECT_MS);
  };
}

// The traces list the user last looked at (filters, page), for "← traces" from a trace.
export function rememberList(hash) { sessionStorage.setItem("flock-list", hash); }
export function listHash() {
  const hash = sessionStorage.getItem("flock-list") || "";
  return hash.startsWith("#/traces") ? hash : "#/traces";
}

// ---- formatting ----------------------------------------------------------

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1) return `${ms.toFixed(2)}ms`;
  if (ms < 10) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)}s`;
  const m = Math.floor(ms / 60000);
  return `${m}m ${Math.round((ms % 60000) / 1000)}s`;
}

export function nsToDate(ns) { return new Date(Number(ns) / 1e6); }

export function fmtTime(ns) {
  const d = nsToDate(ns);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtAgo(ns) {
  const s = (Date.now() - Number(ns) / 1e6) / 1000;
  if (s < 0) return fmtTime(ns);
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

// "9s ago" that keeps advancing: main.js refreshes every [data-ago] element.
export function agoEl(ns, attrs = {}) {
  return h("span", { ...attrs, title: fmtTime(ns), dataset: { ago: String(ns) } }, fmtAgo(ns));
}
export function refreshAgo(root = document) {
  for (const el of root.querySelectorAll("[data-ago]")) el.textContent = fmtAgo(el.dataset.ago);
}

export function fmtInt(n) { return Number(n).toLocaleString("en-US"); }

// Build DOM without innerHTML (so nothing from the data is ever parsed as HTML).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

export function errorBox(err) {
  return h("div", { class: `error-box ${err && err.status === 0 ? "offline" : ""}` }, `⚠ ${err.message || err}`);
}

// A stable pleasant colour per name (service/operation), as trace viewers do.
const PALETTE = ["#3b82f6", "#10b981", "#8b5cf6", "#f59e0b", "#06b6d4", "#ec4899", "#84cc16", "#6366f1", "#14b8a6", "#f97316"];
export function colorFor(name) {
  const key = name.includes(".") ? name.split(".")[0] : name;
  let x = 0;
  for (let i = 0; i < key.length; i++) x = (x * 31 + key.charCodeAt(i)) >>> 0;
  return PALETTE[x % PALETTE.length];
}
