// A collapsible JSON tree. Every key carries its dotted path (data-path="workflow.name"),
// strings holding JSON (e.g. input.value) can be expanded as JSON too.
import { h } from "./api.js";

function looksJson(s) {
  if (typeof s !== "string" || s.length < 2) return null;
  const c = s.trimStart()[0];
  if (c !== "{" && c !== "[") return null;
  try { return JSON.parse(s); } catch { return null; }
}

// Strings longer than this show their start and a toggle (a 4,000-character prompt would
// otherwise make the span detail thousands of pixels tall).
export const CLAMP_CHARS = 300;

function longString(value) {
  const full = JSON.stringify(value);
  const text = h("span", { class: "jv-str clamped" }, `${full.slice(0, CLAMP_CHARS)}…`);
  const more = `show all ${value.length.toLocaleString("en-US")} characters`;
  const toggle = h("button", { type: "button", class: "jv-more", "aria-expanded": "false" }, more);
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    text.textContent = open ? full : `${full.slice(0, CLAMP_CHARS)}…`;
    text.classList.toggle("clamped", !open);
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "show less" : more;
  });
  return h("span", { class: "jv-long" }, text, " ", toggle);
}

function scalar(value) {
  if (value === null) return h("span", { class: "jv-null" }, "null");
  switch (typeof value) {
    case "string": return value.length > CLAMP_CHARS ? longString(value) : h("span", { class: "jv-str" }, JSON.stringify(value));
    case "number": return h("span", { class: "jv-num" }, String(value));
    case "boolean": return h("span", { class: "jv-bool" }, String(value));
    default: return h("span", {}, String(value));
  }
}

function node(key, value, path, depth, openDepth) {
  const keyEl = key === null ? null : h("span", { class: "jv-key", title: path, dataset: { path } }, key);
  const sep = key === null ? null : h("span", { class: "jv-punct" }, ": ");
  const parsed = looksJson(value);
  const composite = value !== null && typeof value === "object";
  if (!composite && parsed === null) {
    return h("div", { class: "jv-row" }, keyEl, sep, scalar(value));
  }
  const inner = composite ? value : parsed;
  const isArr = Array.isArray(inner);
  const entries = isArr ? inner.map((v, i) => [String(i), v]) : Object.entries(inner);
  const open = composite && depth < openDepth;
  const summary = isArr ? `[${entries.length}]` : `{${entries.length}}`;
  const children = h("div", { class: "jv-children" });
  let built = false;
  const build = () => {
    if (built) return;
    built = true;
    for (const [k, v] of entries) {
      const p = path ? `${path}.${k}` : k;
      children.append(node(isArr ? `${k}` : k, v, p, depth + 1, openDepth));
    }
  };
  const row = h("div", { class: `jv-node ${open ? "open" : ""}` });
  const toggle = h("span", { class: "jv-toggle", role: "button", tabindex: "0" }, "");
  const flip = () => { build(); row.classList.toggle("open"); };
  toggle.addEventListener("click", flip);
  toggle.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); flip(); } });
  const head = h("div", { class: "jv-row jv-head" }, toggle, keyEl, sep,
    h("span", { class: "jv-summary", onclick: flip }, parsed !== null ? `${summary} (JSON string)` : summary));
  if (open) build();
  row.append(head, children);
  return row;
}

export function jsonView(value, { openDepth = 3, empty = "—" } = {}) {
  const root = h("div", { class: "jsonview" });
  if (value === null || value === undefined ||
      (typeof value === "object" && Object.keys(value).length === 0)) {
    root.append(h("div", { class: "muted small" }, empty));
    return root;
  }
  if (typeof value !== "object") { root.append(scalar(value)); return root; }
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  for (const [k, v] of entries) root.append(node(k, v, k, 0, openDepth));
  return root;
}
