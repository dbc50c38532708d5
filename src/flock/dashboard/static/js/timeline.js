// The waterfall of one trace: hierarchy, bars to scale, collapse/expand, errors in red,
// the critical path marked, and a detail panel for the selected span. Rows are virtualised
// (only those on screen are in the DOM) so traces of 10,000+ spans stay fast.
import { api, h, fmtMs, fmtTime, fmtInt, errorBox, colorFor } from "./api.js";
import { jsonView } from "./jsonview.js";

const ROW_H = 24;
const PAGE = 10000;

export async function timelineView(root, traceId, params) {
  const head = h("div", { class: "panel-head" }, h("h2", {}, "Loading trace…"));
  const panel = h("section", { class: "panel timeline" }, head);
  root.append(panel);
  let data;
  try {
    data = await api(`/api/traces/${encodeURIComponent(traceId)}?limit=${PAGE}`);
    while (data.spans.length < data.span_count) {
      const more = await api(`/api/traces/${encodeURIComponent(traceId)}?limit=${PAGE}&offset=${data.spans.length}`);
      if (!more.spans.length) break;
      data.spans.push(...more.spans);
    }
  } catch (err) {
    head.replaceChildren(h("h2", {}, "Trace"), h("a", { href: "#/traces", class: "small" }, "← all traces"));
    panel.append(errorBox(err.status === 404 ? `No trace ${traceId} in this trace file.` : err));
    return;
  }
  const spans = data.spans;
  const t0 = Number(data.start_time);
  const total = Math.max(Number(data.end_time) - t0, 1);
  const byId = new Map(spans.map((s, i) => [s.span_id, i]));
  const collapsed = new Set();
  let selected = params.get("span");

  head.replaceChildren(
    h("div", {},
      h("a", { href: "#/traces", class: "small back" }, "← traces"),
      h("h2", { id: "trace-title" }, data.name),
      h("div", { class: "meta" },
        h("span", { class: "mono" }, data.trace_id),
        h("span", {}, fmtTime(data.start_time)),
        h("span", {}, h("b", {}, fmtMs(total / 1e6)), " total"),
        h("span", {}, `${fmtInt(data.span_count)} spans`),
        data.errors ? h("span", { class: "badge err" }, `${data.errors} error${data.errors > 1 ? "s" : ""}`) : h("span", { class: "badge ok" }, "ok"))),
    h("div", { class: "tools" },
      h("span", { class: "legend" }, h("i", { class: "sw crit" }), "critical path"),
      h("span", { class: "legend" }, h("i", { class: "sw err" }), "error"),
      h("button", { class: "btn small", id: "expand-all", onclick: () => { collapsed.clear(); refresh(); } }, "Expand all"),
      h("button", { class: "btn small", id: "collapse-all", onclick: () => {
        collapsed.clear();
        for (const s of spans) if (s.children && s.depth >= 1) collapsed.add(s.span_id);
        refresh();
      } }, "Collapse")));

  // Axis ticks across the bar column.
  const ticks = h("div", { class: "wf-ticks" });
  for (let i = 0; i <= 4; i++) {
    ticks.append(h("span", { class: "tick", style: { left: `${i * 25}%` } }, fmtMs((total / 1e6) * (i / 4))));
  }
  const body = h("div", { class: "wf-body", id: "waterfall" });
  const spacer = h("div", { class: "wf-spacer" });
  body.append(spacer);
  const detail = h("aside", { class: "detail", id: "span-detail" }, h("div", { class: "muted empty" }, "Select a span to see its attributes, events and links."));
  panel.append(h("div", { class: "split" },
    h("div", { class: "wf" }, h("div", { class: "wf-header" }, h("div", { class: "wf-name" }, "Span"), h("div", { class: "wf-bars" }, ticks)), body),
    detail));

  let visible = [];
  function computeVisible() {
    visible = [];
    let skipDepth = Infinity;
    for (const s of spans) {
      if (s.depth > skipDepth) continue;
      skipDepth = collapsed.has(s.span_id) ? s.depth : Infinity;
      visible.push(s);
    }
    spacer.style.height = `${visible.length * ROW_H}px`;
  }

  function row(s, i) {
    const left = ((Number(s.start_time) - t0) / total) * 100;
    const width = Math.max(((Number(s.end_time) - Number(s.start_time)) / total) * 100, 0.15);
    const err = s.status_code === "ERROR";
    const toggle = s.children
      ? h("span", { class: "toggle", title: collapsed.has(s.span_id) ? "expand" : "collapse", onclick: (e) => {
          e.stopPropagation();
          if (collapsed.has(s.span_id)) collapsed.delete(s.span_id); else collapsed.add(s.span_id);
          refresh();
        } }, collapsed.has(s.span_id) ? "▸" : "▾")
      : h("span", { class: "toggle leaf" }, "");
    const labelRight = left + width < 80;
    return h("div", {
      class: `wf-row ${err ? "err" : ""} ${s.critical ? "crit" : ""} ${s.span_id === selected ? "selected" : ""}`,
      style: { top: `${i * ROW_H}px` },
      dataset: { spanId: s.span_id, name: s.name, depth: String(s.depth) },
      onclick: () => select(s.span_id),
    },
      h("div", { class: "wf-name", style: { paddingLeft: `${6 + s.depth * 14}px` }, title: s.name },
        toggle, h("span", { class: "swatch", style: { background: err ? "var(--err)" : colorFor(s.name) } }),
        h("span", { class: "label" }, s.name),
        s.children && collapsed.has(s.span_id) ? h("span", { class: "count" }, String(s.children)) : null),
      h("div", { class: "wf-bars" },
        h("div", { class: "bar", style: { left: `${left}%`, width: `${width}%`, background: err ? "var(--err)" : colorFor(s.name) } }),
        h("span", { class: "bar-label", style: labelRight ? { left: `calc(${left + width}% + 4px)` } : { right: `calc(${100 - left}% + 4px)` } }, fmtMs(s.duration_ms))));
  }

  let lastRange = "";
  function render(force = false) {
    const top = body.scrollTop;
    const height = body.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - 15);
    const last = Math.min(visible.length, Math.ceil((top + height) / ROW_H) + 15);
    const key = `${first}:${last}`;
    if (!force && key === lastRange) return;
    lastRange = key;
    const rows = [];
    for (let i = first; i < last; i++) rows.push(row(visible[i], i));
    spacer.replaceChildren(...rows);
  }
  function refresh() { computeVisible(); render(true); }
  body.addEventListener("scroll", () => requestAnimationFrame(() => render()));
  window.addEventListener("resize", () => render(true));

  async function select(spanId, { scroll = false } = {}) {
    selected = spanId;
    // Expand the ancestors so the span is visible.
    let i = byId.get(spanId);
    if (i === undefined) return;
    let p = spans[i].parent_id;
    while (p && byId.has(p)) { collapsed.delete(p); p = spans[byId.get(p)].parent_id; }
    refresh();
    const vi = visible.findIndex((s) => s.span_id === spanId);
    if (scroll && vi >= 0) { body.scrollTop = Math.max(0, vi * ROW_H - body.clientHeight / 3); render(true); }
    history.replaceState(null, "", `#/trace/${traceId}?span=${spanId}`);
    detail.replaceChildren(h("div", { class: "muted" }, "Loading…"));
    try {
      const d = await api(`/api/traces/${traceId}/spans/${spanId}`);
      if (selected === spanId) detail.replaceChildren(...spanDetail(d, t0, traceId, (sid) => select(sid, { scroll: true })).filter(Boolean));
    } catch (err) { detail.replaceChildren(errorBox(err)); }
  }

  refresh();
  if (selected && byId.has(selected)) select(selected, { scroll: true });
}

function exceptionOf(ev) {
  const a = ev.attributes || {};
  const ex = a.exception && typeof a.exception === "object" ? a.exception : {};
  return {
    type: ex.type ?? a["exception.type"],
    message: ex.message ?? a["exception.message"],
    stack: ex.stacktrace ?? a["exception.stacktrace"],
  };
}

function spanDetail(d, t0, traceId, selectInTrace) {
  const err = d.status_code === "ERROR";
  const out = [
    h("div", { class: "detail-head" },
      h("h3", { class: err ? "err-text" : "" }, d.name),
      h("span", { class: `badge ${err ? "err" : "ok"}` }, d.status_code)),
    d.status_description ? h("div", { class: "error-box" }, d.status_description) : null,
    h("dl", { class: "kv" },
      h("dt", {}, "Duration"), h("dd", {}, fmtMs(d.duration_ms)),
      h("dt", {}, "Start"), h("dd", {}, `+${fmtMs((Number(d.start_time) - t0) / 1e6)}  (${fmtTime(d.start_time)})`),
      h("dt", {}, "Span id"), h("dd", { class: "mono" }, d.span_id),
      h("dt", {}, "Parent"), h("dd", { class: "mono" }, d.parent_id
        ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); selectInTrace(d.parent_id); } }, d.parent_id) : "—"),
      h("dt", {}, "Service"), h("dd", {}, `${d.service || "—"} · ${d.kind || ""}`)),
    h("h4", {}, "Attributes"),
    h("div", { id: "attributes" }, jsonView(d.attributes)),
  ];
  out.push(h("h4", {}, `Events (${d.events.length})`));
  if (!d.events.length) out.push(h("div", { class: "muted small" }, "—"));
  for (const ev of d.events) {
    const ex = ev.name === "exception" ? exceptionOf(ev) : null;
    out.push(h("div", { class: `event ${ex ? "exception" : ""}` },
      h("div", { class: "event-head" }, h("b", {}, ev.name),
        ev.timestamp ? h("span", { class: "muted small" }, ` +${fmtMs((Number(ev.timestamp) - t0) / 1e6)}`) : null),
      ex ? h("div", { class: "err-text" }, `${ex.type || "Exception"}: ${ex.message || ""}`) : null,
      ex && ex.stack ? h("pre", { class: "stack" }, ex.stack) : null,
      jsonView(ev.attributes, { openDepth: ex ? 0 : 2 })));
  }
  out.push(h("h4", {}, `Links (${d.links.length})`));
  if (!d.links.length) out.push(h("div", { class: "muted small" }, "—"));
  for (const link of d.links) {
    const same = link.trace_id === traceId;
    out.push(h("div", { class: "link" },
      h("a", {
        href: `#/trace/${link.trace_id}?span=${link.span_id}`, class: "mono trace-link",
        onclick: same ? (e) => { e.preventDefault(); selectInTrace(link.span_id); } : undefined,
      }, same ? `span ${link.span_id} (this trace)` : `trace ${link.trace_id.slice(0, 12)}… span ${link.span_id}`),
      jsonView(link.attributes, { openDepth: 1 })));
  }
  out.push(h("h4", {}, "Resource"), jsonView(d.resource, { openDepth: 0 }));
  return out;
}
