// Workflow executions grouped by correlation id: their agent runs, traces and artifacts.
import { api, query, h, fmtMs, fmtAgo, fmtTime, fmtInt, errorBox } from "./api.js";
import { jsonView } from "./jsonview.js";

const PAGE = 50;

export async function correlationsView(root, params) {
  const q = params.get("q") || "";
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const qIn = h("input", { type: "search", class: "grow", placeholder: "correlation id…", value: q });
  const go = (changes) => {
    const p = new URLSearchParams({ q, offset: String(offset), ...changes });
    for (const [k, v] of [...p]) if (!v || v === "0") p.delete(k);
    location.hash = `#/correlations?${p}`;
  };
  qIn.addEventListener("keydown", (e) => { if (e.key === "Enter") go({ q: qIn.value.trim(), offset: "0" }); });
  const tbody = h("tbody");
  const status = h("div", { class: "muted small" });
  const pager = h("div", { class: "pager" });
  root.append(h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Correlations"), status),
    h("p", { class: "muted small" }, "Agent runs that share a correlation id — one workflow execution, across traces."),
    h("div", { class: "filters" }, qIn, h("button", { class: "btn", onclick: () => go({ q: qIn.value.trim(), offset: "0" }) }, "Search")),
    h("table", { class: "grid", id: "correlations-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Started"), h("th", {}, "Correlation id"), h("th", {}, "Agents"),
        h("th", { class: "num" }, "Runs"), h("th", { class: "num" }, "Traces"), h("th", { class: "num" }, "Artifacts"),
        h("th", { class: "num" }, "Span"), h("th", {}, "Status"))),
      tbody),
    pager));
  let page;
  try { page = await api(`/api/correlations${query({ limit: PAGE, offset, q })}`); }
  catch (err) { tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, errorBox(err)))); return; }
  status.textContent = `${fmtInt(page.total)} correlation ids`;
  tbody.replaceChildren(...page.items.map((c) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/correlation/${encodeURIComponent(c.correlation_id)}`; } },
    h("td", { title: fmtTime(c.start_time), class: "nowrap" }, fmtAgo(c.start_time)),
    h("td", { class: "mono" }, c.correlation_id),
    h("td", {}, c.agents.map((a) => h("span", { class: "chip" }, a))),
    h("td", { class: "num" }, fmtInt(c.runs)), h("td", { class: "num" }, fmtInt(c.trace_ids.length)),
    h("td", { class: "num" }, c.artifacts === null ? "–" : fmtInt(c.artifacts)),
    h("td", { class: "num" }, fmtMs((Number(c.end_time) - Number(c.start_time)) / 1e6)),
    h("td", {}, c.errors ? h("span", { class: "badge err" }, `${c.errors} failed`) : h("span", { class: "badge ok" }, "ok")))));
  if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No agent runs recorded yet.")));
  pager.replaceChildren(
    h("button", { class: "btn", disabled: offset === 0, onclick: () => go({ offset: String(Math.max(0, offset - PAGE)) }) }, "← Newer"),
    h("button", { class: "btn", disabled: offset + PAGE >= page.total, onclick: () => go({ offset: String(offset + PAGE) }) }, "Older →"));
}

export function artifactCard(a) {
  return h("div", { class: "artifact", dataset: { artifactId: a.id } },
    h("div", { class: "artifact-head" },
      h("span", { class: "chip type" }, a.type),
      h("span", { class: "muted small" }, "from "), h("b", { class: "small" }, a.produced_by),
      a.visibility && a.visibility.kind !== "Public"
        ? h("span", { class: "chip", title: `visibility: ${JSON.stringify(a.visibility)}` }, a.visibility.kind) : null,
      h("span", { class: "spacer" }),
      h("a", { class: "mono small", href: `#/correlation/${encodeURIComponent(a.correlation_id)}`, title: "correlation id" }, a.correlation_id.slice(0, 8)),
      h("span", { class: "muted small", title: a.created_at }, new Date(a.created_at).toLocaleTimeString())),
    jsonView(a.payload, { openDepth: 1 }));
}

export async function correlationView(root, cid) {
  const panel = h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("div", {},
      h("a", { href: "#/correlations", class: "small back" }, "← correlations"),
      h("h2", {}, "Correlation ", h("span", { class: "mono" }, cid)))));
  root.append(panel);
  let d;
  try { d = await api(`/api/correlations/${encodeURIComponent(cid)}`); }
  catch (err) { panel.append(errorBox(err)); return; }
  const c = d.correlation;
  if (c) panel.append(h("div", { class: "meta" }, h("span", {}, `${c.runs} agent runs`), h("span", {}, c.agents.join(", ")),
    c.errors ? h("span", { class: "badge err" }, `${c.errors} failed`) : h("span", { class: "badge ok" }, "ok")));
  panel.append(h("h3", {}, `Traces (${d.traces.length})`),
    h("table", { class: "grid" }, h("tbody", {}, d.traces.map((t) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/trace/${t.trace_id}`; } },
      h("td", { class: "nowrap" }, fmtTime(t.start_time)), h("td", {}, h("a", { href: `#/trace/${t.trace_id}` }, t.name)),
      h("td", { class: "mono muted" }, t.trace_id.slice(0, 12)), h("td", { class: "num" }, `${t.span_count} spans`),
      h("td", { class: "num" }, fmtMs(t.duration_ms)),
      h("td", {}, t.errors ? h("span", { class: "badge err" }, `${t.errors} errors`) : h("span", { class: "badge ok" }, "ok")))))));
  panel.append(h("h3", {}, `Artifacts (${d.artifacts.length})`),
    d.artifacts.length ? h("div", { class: "artifacts" }, d.artifacts.slice().reverse().map(artifactCard))
      : h("div", { class: "muted small" }, "No live blackboard attached, or no artifacts with this id."));
}
