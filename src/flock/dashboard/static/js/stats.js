// Statistics per workflow or per span name: count, percentiles, error rate, a chart.
import { api, query, h, svg, fmtMs, fmtInt, fmtTime, errorBox } from "./api.js";

const RANGES = [["", "all time"], ["1h", "last hour"], ["24h", "last 24 h"], ["7d", "last 7 days"], ["30d", "last 30 days"]];

function chart(series, bucketNs, since, until) {
  const W = 160, H = 34;
  if (!series.length) return h("span", { class: "muted small" }, "—");
  const starts = series.map((p) => Number(p.start_time));
  const lo = since ?? Math.min(...starts);
  const hi = Math.max(until ?? Math.max(...starts) + bucketNs, lo + bucketNs);
  const maxCount = Math.max(...series.map((p) => p.count));
  const maxP95 = Math.max(...series.map((p) => p.p95_ms), 1e-9);
  const bw = Math.max((bucketNs / (hi - lo)) * W - 1, 1.5);
  const x = (t) => ((t - lo) / (hi - lo)) * W;
  const bars = series.map((p) => {
    const bh = Math.max((p.count / maxCount) * (H - 4), 1);
    const eh = (p.errors / maxCount) * (H - 4);
    return [
      svg("rect", { x: x(Number(p.start_time)).toFixed(1), y: (H - bh).toFixed(1), width: bw.toFixed(1), height: bh.toFixed(1), class: "c-count" },
        svg("title", {}, `${fmtTime(p.start_time)}\n${p.count} runs, ${p.errors} errors\np50 ${fmtMs(p.p50_ms)} · p95 ${fmtMs(p.p95_ms)}`)),
      eh > 0 ? svg("rect", { x: x(Number(p.start_time)).toFixed(1), y: (H - eh).toFixed(1), width: bw.toFixed(1), height: eh.toFixed(1), class: "c-err" }) : null,
    ];
  });
  const line = series.map((p, i) => `${i ? "L" : "M"}${(x(Number(p.start_time)) + bw / 2).toFixed(1)},${(H - 2 - (p.p95_ms / maxP95) * (H - 6)).toFixed(1)}`).join(" ");
  return svg("svg", { class: "spark", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "runs and p95 over time" },
    bars, svg("path", { d: line, class: "c-p95" }));
}

export async function statsView(root, params) {
  const by = params.get("by") === "span" ? "span" : "workflow";
  const since = params.get("since") || "";
  const name = params.get("name") || "";
  const go = (changes) => {
    const p = new URLSearchParams({ by, since, name, ...changes });
    for (const [k, v] of [...p]) if (!v) p.delete(k);
    location.hash = `#/stats?${p}`;
  };
  const nameIn = h("input", { type: "search", placeholder: "name contains…", value: name });
  nameIn.addEventListener("keydown", (e) => { if (e.key === "Enter") go({ name: nameIn.value.trim() }); });
  const tabs = h("div", { class: "seg" },
    h("button", { class: `btn ${by === "workflow" ? "active" : ""}`, id: "by-workflow", onclick: () => go({ by: "workflow" }) }, "By workflow"),
    h("button", { class: `btn ${by === "span" ? "active" : ""}`, id: "by-span", onclick: () => go({ by: "span" }) }, "By span name"));
  const range = h("select", { onchange: (e) => go({ since: e.target.value }) },
    RANGES.map(([v, l]) => h("option", { value: v, selected: v === since }, l)));
  const tbody = h("tbody");
  const note = h("div", { class: "muted small" });
  root.append(h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Statistics"), note),
    h("div", { class: "filters" }, tabs, range, nameIn),
    h("table", { class: "grid stats", id: "stats-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, by === "workflow" ? "Workflow" : "Span name"), h("th", { class: "num" }, "Count"),
        h("th", { class: "num" }, "Error rate"), h("th", { class: "num" }, "p50"), h("th", { class: "num" }, "p95"),
        h("th", { class: "num" }, "p99"), h("th", { class: "num" }, "Max"), h("th", {}, "Runs & p95 over time"))),
      tbody)));
  let data;
  try {
    data = await api(`/api/stats${query({ by, since, name })}`);
  } catch (err) { tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, errorBox(err)))); return; }
  note.textContent = data.bucket_ns ? `chart buckets: ${fmtMs(data.bucket_ns / 1e6)}` : "";
  const lo = data.rows.length ? Math.min(...data.rows.flatMap((r) => r.series.map((p) => Number(p.start_time)))) : 0;
  const hi = data.rows.length ? Math.max(...data.rows.flatMap((r) => r.series.map((p) => Number(p.start_time)))) + (data.bucket_ns || 0) : 0;
  tbody.replaceChildren(...data.rows.map((r) => h("tr", { class: by === "workflow" ? "clickable" : "", dataset: { name: r.name },
    onclick: by === "workflow" ? () => { location.hash = `#/traces?workflow=${encodeURIComponent(r.name)}`; } : undefined },
    h("td", {}, h("span", { class: "trace-name" }, r.name)),
    h("td", { class: "num" }, fmtInt(r.count)),
    h("td", { class: `num ${r.errors ? "err-text" : "muted"}` }, `${(r.error_rate * 100).toFixed(r.error_rate && r.error_rate < 0.1 ? 1 : 0)}%`),
    h("td", { class: "num" }, fmtMs(r.p50_ms)), h("td", { class: "num" }, fmtMs(r.p95_ms)),
    h("td", { class: "num" }, fmtMs(r.p99_ms)), h("td", { class: "num muted" }, fmtMs(r.max_ms)),
    h("td", {}, chart(r.series, data.bucket_ns || 1, lo, hi)))));
  if (!data.rows.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No spans in this range.")));
}
