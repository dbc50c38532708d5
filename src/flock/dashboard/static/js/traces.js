// The traces list: newest first, filters in the URL hash, paginated, live.
import { api, query, h, fmtMs, agoEl, fmtInt, errorBox, onLive } from "./api.js";

const PAGE = 50;
const RANGES = [["", "any time"], ["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"]];

export async function tracesView(root, params) {
  const f = {
    workflow: params.get("workflow") || "",
    errors: params.get("errors") === "1",
    min_duration_ms: params.get("min") || "",
    since: params.get("since") || "",
    until: params.get("until") || "",
    q: params.get("q") || "",
    offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
  };
  const setHash = (changes) => {
    const next = { ...f, ...changes };
    const p = new URLSearchParams();
    if (next.workflow) p.set("workflow", next.workflow);
    if (next.errors) p.set("errors", "1");
    if (next.min_duration_ms) p.set("min", next.min_duration_ms);
    if (next.since) p.set("since", next.since);
    if (next.until) p.set("until", next.until);
    if (next.q) p.set("q", next.q);
    if (next.offset) p.set("offset", String(next.offset));
    location.hash = `#/traces${p.toString() ? "?" + p : ""}`;
  };

  const workflowSel = h("select", { id: "f-workflow", onchange: (e) => setHash({ workflow: e.target.value, offset: 0 }) },
    h("option", { value: "" }, "all workflows"));
  const sinceSel = h("select", { id: "f-since", onchange: (e) => setHash({ since: e.target.value, offset: 0 }) },
    RANGES.map(([v, label]) => h("option", { value: v, selected: v === f.since }, label)));
  if (f.since && !RANGES.some(([v]) => v === f.since)) sinceSel.append(h("option", { value: f.since, selected: true }, `since ${f.since}`));
  const untilIn = h("input", { id: "f-until", type: "datetime-local", value: f.until, title: "until",
    onchange: (e) => setHash({ until: e.target.value, offset: 0 }) });
  const minIn = h("input", { id: "f-min", type: "number", min: "0", step: "any", placeholder: "min ms", value: f.min_duration_ms,
    class: "narrow", onchange: (e) => setHash({ min_duration_ms: e.target.value, offset: 0 }) });
  const errIn = h("input", { id: "f-errors", type: "checkbox", checked: f.errors,
    onchange: (e) => setHash({ errors: e.target.checked, offset: 0 }) });
  const qIn = h("input", { id: "f-q", type: "search", placeholder: "search: trace id, span name, attribute…", value: f.q, class: "grow" });
  qIn.addEventListener("keydown", (e) => { if (e.key === "Enter") setHash({ q: qIn.value.trim(), offset: 0 }); });

  const filters = h("div", { class: "filters" },
    workflowSel, sinceSel, h("label", { class: "inline muted small" }, "until ", untilIn), minIn,
    h("label", { class: "inline" }, errIn, " errors only"), qIn,
    h("button", { class: "btn", onclick: () => setHash({ q: qIn.value.trim(), offset: 0 }) }, "Search"),
    h("button", { class: "btn ghost", onclick: () => { location.hash = "#/traces"; } }, "Reset"));
  const status = h("div", { class: "muted small" });
  const tbody = h("tbody");
  const table = h("table", { class: "grid traces", id: "traces-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Started"), h("th", {}, "Workflow / root span"), h("th", { class: "opt" }, "Trace"),
      h("th", { class: "num opt" }, "Spans"), h("th", { class: "durcol" }, "Duration"), h("th", {}, "Status"))),
    tbody);
  const pager = h("div", { class: "pager" });
  root.append(h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Traces"), status), filters, table, pager));

  // The workflow names, again whenever traces arrive (a new workflow shows up in the list).
  const loadNames = () => api("/api/traces/names").then((names) => {
    const options = [h("option", { value: "" }, "all workflows")];
    for (const n of names) options.push(h("option", { value: n.name, selected: n.name === f.workflow }, `${n.name} (${fmtInt(n.count)})`));
    if (f.workflow && !names.some((n) => n.name === f.workflow)) options.push(h("option", { value: f.workflow, selected: true }, f.workflow));
    workflowSel.replaceChildren(...options);
    workflowSel.value = f.workflow;
  }).catch(() => {});
  loadNames();
  const filtered = Boolean(f.workflow || f.errors || f.min_duration_ms || f.since || f.until || f.q);

  let known = new Set();
  async function load(live = false) {
    let page;
    try {
      page = await api(`/api/traces${query({ limit: PAGE, offset: f.offset, workflow: f.workflow, errors: f.errors,
        min_duration_ms: f.min_duration_ms, since: f.since, until: f.until ? new Date(f.until).toISOString() : "", q: f.q })}`);
    } catch (err) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6 }, errorBox(err),
        err.status === 422 ? h("button", { class: "btn small", id: "reset-filters", onclick: () => { location.hash = "#/traces"; } }, "Reset filters") : null)));
      status.textContent = "";
      pager.replaceChildren();
      return;
    }
    const maxDur = Math.max(1e-9, ...page.items.map((t) => t.duration_ms));
    tbody.replaceChildren(...page.items.map((t) => {
      const fresh = live && !known.has(t.trace_id);
      return h("tr", { class: `clickable ${t.errors ? "has-error" : ""} ${fresh ? "fresh" : ""}`, dataset: { traceId: t.trace_id },
        onclick: () => { location.hash = `#/trace/${t.trace_id}`; } },
        h("td", { class: "nowrap" }, agoEl(t.start_time)),
        h("td", {}, h("a", { href: `#/trace/${t.trace_id}`, class: "trace-name" }, t.name),
          t.in_progress ? runningBadge(t) : null),
        h("td", { class: "mono muted opt" }, t.trace_id.slice(0, 12)),
        h("td", { class: "num opt" }, fmtInt(t.span_count)),
        h("td", { class: "durcol" }, h("div", { class: "durbar" },
          h("div", { class: `fill ${t.errors ? "err" : ""}`, style: { width: `${Math.max(1, (100 * t.duration_ms) / maxDur)}%` } }),
          h("span", {}, fmtMs(t.duration_ms)))),
        h("td", {}, t.errors ? h("span", { class: "badge err" }, `${t.errors} error${t.errors > 1 ? "s" : ""}`) : h("span", { class: "badge ok" }, "ok")));
    }));
    if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, emptyMessage(page.total))));
    known = new Set(page.items.map((t) => t.trace_id));
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    const lastOffset = (pages - 1) * PAGE;
    const shown = page.items.length
      ? `${fmtInt(f.offset + 1)}–${fmtInt(f.offset + page.items.length)} of ${fmtInt(page.total)}`
      : `0 of ${fmtInt(page.total)}`;
    status.textContent = `${shown} traces`;
    // Offsets set by hand need not be a page boundary, or may lie past the end.
    const where = !page.items.length && f.offset ? "past the last page"
      : f.offset % PAGE ? `traces ${fmtInt(f.offset + 1)}–${fmtInt(f.offset + page.items.length)}`
      : `page ${fmtInt(f.offset / PAGE + 1)} of ${fmtInt(pages)}`;
    pager.replaceChildren(
      h("button", { class: "btn", disabled: f.offset === 0, onclick: () => setHash({ offset: Math.max(0, Math.min(f.offset - PAGE, lastOffset)) }) }, "← Newer"),
      h("span", { class: "muted small", id: "pager-text" }, where),
      h("button", { class: "btn", disabled: f.offset + PAGE >= page.total, onclick: () => setHash({ offset: f.offset + PAGE }) }, "Older →"));
  }

  function emptyMessage(total) {
    if (f.offset && total) {
      return ["No traces on this page. ", h("a", { href: "#", id: "first-page", onclick: (e) => { e.preventDefault(); setHash({ offset: 0 }); } }, "Go to the first page")];
    }
    if (filtered) {
      return ["No traces match these filters. ", h("button", { class: "btn small", id: "reset-filters", onclick: () => { location.hash = "#/traces"; } }, "Reset filters")];
    }
    return "No traces yet. Run a workflow inside flock.traced_run(…) and it appears here.";
  }
  await load();
  let timer = null;
  const off = onLive((msg) => {
    // New spans refresh the first page; clearing or a server back from a restart, any page.
    if ((msg.type === "traces" && f.offset === 0) || msg.type === "cleared" || msg.type === "reconnected") {
      clearTimeout(timer);
      timer = setTimeout(() => { load(msg.type === "traces"); loadNames(); }, 300);
    }
  });
  return () => { off(); clearTimeout(timer); };
}

function runningBadge(t) {
  return t.stale
    ? h("span", { class: "badge stale", title: "No span has ended in this trace for a long time: the process writing it probably stopped before the workflow finished." }, "stale")
    : h("span", { class: "badge running", title: "The workflow's root span is not written yet: it is still running." }, "running");
}
