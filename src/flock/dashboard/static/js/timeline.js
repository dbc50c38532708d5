// The waterfall of one trace: hierarchy, bars to scale, collapse/expand, errors in red,
// the critical path marked, and a detail panel for the selected span. Rows are virtualised
// (only those on screen are in the DOM) so traces of 10,000+ spans stay fast. A running
// trace reloads as its spans arrive, until its root span is written. Rows are a keyboard
// tree: Tab to it, arrows move and collapse/expand, Enter or Space selects.
import { api, h, fmtMs, fmtTime, fmtInt, errorBox, colorFor, onLive, listHash } from "./api.js";
import { jsonView } from "./jsonview.js";

const ROW_H = 24;
const PAGE = 10000;
const NARROW = 1000; // px: below this the detail panel sits under the waterfall (app.css)
const LABEL_ROOM = 12; // % of the bar column a duration label needs beside a bar

async function fetchTrace(traceId) {
  const data = await api(`/api/traces/${encodeURIComponent(traceId)}?limit=${PAGE}`);
  while (data.spans.length < data.span_count) {
    const more = await api(`/api/traces/${encodeURIComponent(traceId)}?limit=${PAGE}&offset=${data.spans.length}`);
    if (!more.spans.length) break;
    data.spans.push(...more.spans);
  }
  return data;
}

export async function timelineView(root, traceId, params) {
  const back = h("a", { href: listHash(), class: "small back", id: "back-to-list" }, "← traces");
  const head = h("div", { class: "panel-head" }, h("div", { class: "title-box" }, back, h("h2", {}, "Loading trace…")));
  const panel = h("section", { class: "panel timeline" }, head);
  root.append(panel);
  const failed = (err) => {
    head.replaceChildren(h("div", { class: "title-box" }, back, h("h2", {}, "Trace")));
    panel.replaceChildren(head, errorBox(err.status === 404 ? `No trace ${traceId} in this trace file (it may have been cleared).` : err));
  };
  if (!/^[0-9a-f]{32}$/.test(traceId)) {
    failed(`“${traceId}” is not a trace id: trace ids are 32 hexadecimal digits.`);
    return undefined;
  }
  let data;
  try { data = await fetchTrace(traceId); } catch (err) { failed(err); return undefined; }

  let spans = [];
  let t0 = 0;
  let total = 1;
  let byId = new Map();
  const collapsed = new Set();
  let selected = (params.get("span") || "").toLowerCase() || null;
  let focusId = null;

  const title = h("h2", { id: "trace-title", class: "ellipsis" });
  const meta = h("div", { class: "meta" });
  head.replaceChildren(
    h("div", { class: "title-box" }, back, title, meta),
    h("div", { class: "tools" },
      h("span", { class: "legend" }, h("i", { class: "sw crit" }), "critical path"),
      h("span", { class: "legend" }, h("i", { class: "sw err" }), "error"),
      h("button", { class: "btn small", id: "expand-all", onclick: () => { collapsed.clear(); refresh(); } }, "Expand all"),
      h("button", { class: "btn small", id: "collapse-all", onclick: () => {
        collapsed.clear();
        for (const s of spans) if (s.children && s.depth >= 1) collapsed.add(s.span_id);
        refresh();
      } }, "Collapse")));

  const ticks = h("div", { class: "wf-ticks" });
  const header = h("div", { class: "wf-header" }, h("div", { class: "wf-name" }, "Span"), h("div", { class: "wf-bars" }, ticks));
  const body = h("div", { class: "wf-body", id: "waterfall", role: "tree", "aria-label": "spans" });
  const spacer = h("div", { class: "wf-spacer" });
  body.append(spacer);
  const detail = h("aside", { class: "detail", id: "span-detail" }, h("div", { class: "muted empty" }, "Select a span to see its attributes, events and links."));
  panel.append(h("div", { class: "split" }, h("div", { class: "wf" }, header, body), detail));

  function apply(d) {
    data = d;
    spans = d.spans;
    t0 = Number(d.start_time);
    total = Math.max(Number(d.end_time) - t0, 1);
    byId = new Map(spans.map((s, i) => [s.span_id, i]));
    title.textContent = d.name;
    title.title = d.name;
    meta.replaceChildren(
      h("span", { class: "mono" }, d.trace_id),
      h("span", {}, fmtTime(d.start_time)),
      h("span", {}, h("b", {}, fmtMs(total / 1e6)), " total"),
      h("span", {}, `${fmtInt(d.span_count)} spans`),
      d.errors ? h("span", { class: "badge err" }, `${d.errors} error${d.errors > 1 ? "s" : ""}`) : h("span", { class: "badge ok" }, "ok"),
      d.stale ? h("span", { class: "badge stale", id: "trace-state", title: "No span has ended for a long time: the process writing this trace probably stopped." }, "stale")
        : d.in_progress ? h("span", { class: "badge running", id: "trace-state", title: "Still running: updates as its spans arrive." }, "running") : "");
    // Axis ticks across the bar column, on the same scale as the bars.
    ticks.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      ticks.append(h("span", { class: "tick", style: { left: `${i * 25}%` } }, fmtMs((total / 1e6) * (i / 4))));
    }
  }

  let visible = [];
  let visibleIndex = new Map(); // span id -> row number
  function computeVisible() {
    visible = [];
    let skipDepth = Infinity;
    for (const s of spans) {
      if (s.depth > skipDepth) continue;
      skipDepth = collapsed.has(s.span_id) ? s.depth : Infinity;
      visible.push(s);
    }
    spacer.style.height = `${visible.length * ROW_H}px`;
    visibleIndex = new Map(visible.map((s, i) => [s.span_id, i]));
  }
  // The one row reached with Tab (roving tabindex): the focused, else selected, else first.
  function tabbable() {
    for (const id of [focusId, selected]) if (id && visibleIndex.has(id)) return id;
    return visible.length ? visible[0].span_id : null;
  }

  function toggleSpan(spanId) {
    if (collapsed.has(spanId)) collapsed.delete(spanId); else collapsed.add(spanId);
    refresh();
  }

  let tabId = null;
  function row(s, i) {
    const left = ((Number(s.start_time) - t0) / total) * 100;
    const width = Math.max(((Number(s.end_time) - Number(s.start_time)) / total) * 100, 0.15);
    const err = s.status_code === "ERROR";
    const isCollapsed = collapsed.has(s.span_id);
    const toggle = s.children
      ? h("span", { class: "toggle", title: isCollapsed ? "expand" : "collapse", onclick: (e) => { e.stopPropagation(); toggleSpan(s.span_id); } }, isCollapsed ? "▸" : "▾")
      : h("span", { class: "toggle leaf" }, "");
    // The duration beside the bar where there is room (right, else left), else inside it.
    const place = left + width < 100 - LABEL_ROOM ? "right" : left > LABEL_ROOM ? "left" : "inside";
    const labelStyle = place === "right" ? { left: `calc(${left + width}% + 4px)` }
      : place === "left" ? { right: `calc(${100 - left}% + 4px)` } : { right: `calc(${100 - left - width}% + 4px)` };
    return h("div", {
      class: `wf-row ${err ? "err" : ""} ${s.critical ? "crit" : ""} ${s.span_id === selected ? "selected" : ""}`,
      style: { top: `${i * ROW_H}px` },
      dataset: { spanId: s.span_id, name: s.name, depth: String(s.depth) },
      role: "treeitem", tabindex: s.span_id === tabId ? "0" : "-1",
      "aria-level": String(s.depth + 1), "aria-selected": String(s.span_id === selected),
      "aria-expanded": s.children ? String(!isCollapsed) : undefined,
      onclick: () => { focusId = s.span_id; select(s.span_id, { reveal: true }); },
    },
      h("div", { class: "wf-name", style: { paddingLeft: `${6 + s.depth * 14}px` }, title: s.name },
        toggle, h("span", { class: "swatch", style: { background: err ? "var(--err)" : colorFor(s.name) } }),
        h("span", { class: "label" }, s.name),
        s.children && isCollapsed ? h("span", { class: "count" }, String(s.children)) : null),
      h("div", { class: "wf-bars" },
        h("div", { class: "bar", style: { left: `${left}%`, width: `${width}%`, background: err ? "var(--err)" : colorFor(s.name) } }),
        h("span", { class: `bar-label ${place}`, style: labelStyle }, fmtMs(s.duration_ms))));
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
    const hadFocus = body.contains(document.activeElement);
    const rows = [];
    tabId = tabbable();
    for (let i = first; i < last; i++) rows.push(row(visible[i], i));
    spacer.replaceChildren(...rows);
    if (hadFocus && focusId) {
      const el = spacer.querySelector(`[data-span-id="${focusId}"]`);
      if (el) el.focus({ preventScroll: true });
    }
    // The header spans what the rows span: the body's scrollbar is not part of the bar scale.
    header.style.paddingRight = `${body.offsetWidth - body.clientWidth}px`;
  }
  function refresh() { computeVisible(); render(true); }
  const onScroll = () => requestAnimationFrame(() => render());
  const onResize = () => render(true);
  body.addEventListener("scroll", onScroll);
  window.addEventListener("resize", onResize);

  // Keyboard: a tree of rows.
  function focusRow(vi) {
    if (vi < 0 || vi >= visible.length) return;
    focusId = visible[vi].span_id;
    const top = vi * ROW_H;
    if (top < body.scrollTop) body.scrollTop = top;
    else if (top + ROW_H > body.scrollTop + body.clientHeight) body.scrollTop = top + ROW_H - body.clientHeight;
    render(true);
    const el = spacer.querySelector(`[data-span-id="${focusId}"]`);
    if (el) el.focus({ preventScroll: true });
  }
  body.addEventListener("keydown", (e) => {
    const el = e.target.closest && e.target.closest(".wf-row");
    if (!el) return;
    const id = el.dataset.spanId;
    const vi = visibleIndex.get(id) ?? -1;
    const s = visible[vi];
    if (!s) return;
    const key = e.key;
    if (key === "Enter" || key === " ") select(id, { reveal: true });
    else if (key === "ArrowDown") focusRow(vi + 1);
    else if (key === "ArrowUp") focusRow(vi - 1);
    else if (key === "Home") focusRow(0);
    else if (key === "End") focusRow(visible.length - 1);
    else if (key === "ArrowRight") {
      if (s.children && collapsed.has(id)) { focusId = id; toggleSpan(id); } else if (s.children) focusRow(vi + 1);
    } else if (key === "ArrowLeft") {
      if (s.children && !collapsed.has(id)) { focusId = id; toggleSpan(id); } else if (s.parent_id && visibleIndex.has(s.parent_id)) focusRow(visibleIndex.get(s.parent_id));
    } else return;
    e.preventDefault();
  });
  body.addEventListener("focusin", (e) => {
    const el = e.target.closest && e.target.closest(".wf-row");
    if (el) focusId = el.dataset.spanId;
  });

  async function select(spanId, { scroll = false, reveal = false } = {}) {
    selected = spanId;
    focusId = focusId || spanId;
    // Expand the ancestors so the span is visible.
    const i = byId.get(spanId);
    if (i === undefined) return;
    let p = spans[i].parent_id;
    const up = new Set([spanId]);  // corrupt traces may have parent cycles: stop at one
    while (p && byId.has(p) && !up.has(p)) { up.add(p); collapsed.delete(p); p = spans[byId.get(p)].parent_id; }
    refresh();
    const vi = visibleIndex.get(spanId) ?? -1;
    if (scroll && vi >= 0) { body.scrollTop = Math.max(0, vi * ROW_H - body.clientHeight / 3); render(true); }
    history.replaceState(null, "", `#/trace/${traceId}?span=${spanId}`);
    detail.replaceChildren(h("div", { class: "muted" }, "Loading…"));
    // Narrow windows show the detail under the waterfall: bring it into view.
    if (reveal && window.innerWidth < NARROW) detail.scrollIntoView({ block: "start" });
    try {
      const d = await api(`/api/traces/${traceId}/spans/${spanId}`);
      if (selected === spanId) detail.replaceChildren(...spanDetail(d, t0, traceId, (sid) => select(sid, { scroll: true })).filter(Boolean));
    } catch (err) { detail.replaceChildren(errorBox(err)); }
  }

  apply(data);
  refresh();
  if (selected && byId.has(selected)) select(selected, { scroll: true });

  // Live: a running trace reloads when spans arrive (until its root is written); a cleared
  // trace says so; a server back from a restart is asked again.
  let timer = null;
  let reloading = false;
  async function reload() {
    if (reloading) return;
    reloading = true;
    try { apply(await fetchTrace(traceId)); refresh(); } catch (err) { if (err.status === 404) failed(err); } finally { reloading = false; }
  }
  const off = onLive((msg) => {
    if ((msg.type === "traces" && data.in_progress) || msg.type === "cleared" || msg.type === "reconnected") {
      clearTimeout(timer);
      timer = setTimeout(reload, 200);
    }
  });
  return () => { off(); clearTimeout(timer); window.removeEventListener("resize", onResize); };
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
      ex ? h("div", { class: "err-text ex-message" }, `${ex.type || "Exception"}: ${ex.message || ""}`) : null,
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
