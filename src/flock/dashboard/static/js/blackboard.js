// The live blackboard: agents and types as a graph, artifacts as they are published, and a
// form (built from the type's Pydantic JSON schema) to publish a new artifact.
import { api, h, svg, errorBox, toast, onLive } from "./api.js";
import { artifactCard } from "./correlations.js";

// ---- graph ---------------------------------------------------------------

function layout(bb) {
  const producers = new Map(bb.types.map((t) => [t, []]));
  for (const a of bb.agents) for (const t of a.publishes) producers.get(t).push(a.name);
  const layer = new Map();
  for (const t of bb.types) layer.set(`t:${t}`, 0);
  for (const a of bb.agents) layer.set(`a:${a.name}`, 1);
  // Relax a few rounds: agents after what they consume, types after their producers.
  for (let round = 0; round < bb.agents.length + 2; round++) {
    let changed = false;
    for (const a of bb.agents) {
      const want = Math.max(1, ...a.consumes.map((t) => (producers.get(t).includes(a.name) ? 0 : layer.get(`t:${t}`) + 1)));
      if (want > layer.get(`a:${a.name}`) && want < 40) { layer.set(`a:${a.name}`, want); changed = true; }
      for (const t of a.publishes) {
        const w = layer.get(`a:${a.name}`) + 1;
        if (w > layer.get(`t:${t}`) && !a.consumes.includes(t) && w < 40) { layer.set(`t:${t}`, w); changed = true; }
      }
    }
    if (!changed) break;
  }
  const columns = new Map();
  for (const [id, l] of layer) { if (!columns.has(l)) columns.set(l, []); columns.get(l).push(id); }
  const pos = new Map();
  const COL_W = 210, ROW_H = 62, NODE_W = 160, NODE_H = 36;
  const maxRows = Math.max(...[...columns.values()].map((c) => c.length));
  const ordered = [...columns.keys()].sort((a, b) => a - b);
  ordered.forEach((l, ci) => {
    const ids = columns.get(l).sort();
    const offset = ((maxRows - ids.length) * ROW_H) / 2;
    ids.forEach((id, ri) => pos.set(id, { x: 20 + ci * COL_W, y: 20 + offset + ri * ROW_H, w: NODE_W, h: NODE_H }));
  });
  return { pos, width: 40 + ordered.length * COL_W - (COL_W - NODE_W), height: 40 + maxRows * ROW_H - (ROW_H - NODE_H) };
}

function graph(bb) {
  if (!bb.agents.length) return h("div", { class: "muted" }, "No agents.");
  const { pos, width, height } = layout(bb);
  const edges = [];
  const edge = (from, to, cls) => {
    const a = pos.get(from), b = pos.get(to);
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const back = x2 <= x1;
    const d = back
      ? `M${x1},${y1} C${x1 + 60},${y1 - 70} ${x2 - 60},${y2 - 70} ${x2},${y2}`
      : `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
    edges.push(svg("path", { d, class: `edge ${cls}`, "marker-end": "url(#arrow)" }));
  };
  for (const a of bb.agents) {
    for (const t of a.consumes) edge(`t:${t}`, `a:${a.name}`, "consumes");
    for (const t of a.publishes) edge(`a:${a.name}`, `t:${t}`, "publishes");
  }
  const nodes = [...pos.entries()].map(([id, p]) => {
    const isAgent = id.startsWith("a:");
    const label = id.slice(2);
    const short = label.length > 22 ? `${label.slice(0, 21)}…` : label;
    return svg("g", { class: `node ${isAgent ? "agent" : "type"}`, transform: `translate(${p.x},${p.y})`, "data-node": label },
      svg("rect", { width: p.w, height: p.h, rx: isAgent ? 6 : 18 }),
      svg("text", { x: p.w / 2, y: p.h / 2 + 4, "text-anchor": "middle" }, isAgent ? `⚙ ${short}` : short),
      svg("title", {}, label));
  });
  return svg("svg", { class: "graph", id: "agent-graph", width, height, viewBox: `0 0 ${width} ${height}` },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))),
    edges, nodes);
}

// ---- publish form ----------------------------------------------------------

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve((root.$defs || root.definitions || {})[name] || {}, root);
  }
  if (schema && Array.isArray(schema.anyOf)) {
    const real = schema.anyOf.filter((s) => s.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), nullable: true, title: schema.title, description: schema.description, default: schema.default };
  }
  return schema || {};
}

function fieldFor(name, raw, root, required) {
  const s = resolve(raw, root);
  const id = `field-${name}`;
  let input, read;
  const itemType = s.type === "array" ? resolve(s.items || {}, root).type : null;
  if (Array.isArray(s.enum)) {
    input = h("select", { id, name }, required ? null : h("option", { value: "" }, "—"), s.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === s.default }, String(v))));
    read = () => (input.value === "" ? undefined : JSON.parse(input.value));
  } else if (s.type === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: s.default === true });
    read = () => input.checked;
  } else if (s.type === "integer" || s.type === "number") {
    input = h("input", { id, name, type: "number", step: s.type === "integer" ? "1" : "any", value: s.default ?? "" });
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (s.type === "string") {
    const long = (s.maxLength || 0) > 200 || /description|text|body|content|prompt/i.test(name);
    input = long ? h("textarea", { id, name, rows: "3" }, s.default ?? "") : h("input", { id, name, type: "text", value: s.default ?? "" });
    read = () => (input.value === "" && !required ? undefined : input.value);
  } else if (s.type === "array" && ["string", "integer", "number"].includes(itemType)) {
    input = h("input", { id, name, type: "text", placeholder: "comma-separated", value: Array.isArray(s.default) ? s.default.join(", ") : "" });
    read = () => {
      if (input.value.trim() === "") return required ? [] : undefined;
      const parts = input.value.split(",").map((x) => x.trim()).filter(Boolean);
      return itemType === "string" ? parts : parts.map(Number);
    };
  } else {
    input = h("textarea", { id, name, rows: "3", class: "mono", placeholder: "JSON" }, s.default !== undefined ? JSON.stringify(s.default) : "");
    read = () => {
      if (input.value.trim() === "") return undefined;
      try { return JSON.parse(input.value); } catch { throw new FieldError(name, "not valid JSON"); }
    };
  }
  const error = h("div", { class: "field-error", dataset: { field: name } });
  const label = h("label", { for: id }, s.title || raw.title || name, required ? h("span", { class: "req" }, " *") : null);
  const hint = (s.description || raw.description) ? h("div", { class: "hint" }, s.description || raw.description) : null;
  return { name, read, el: h("div", { class: "field", dataset: { field: name } }, label, input, hint, error), error };
}

class FieldError extends Error { constructor(field, msg) { super(msg); this.field = field; } }

function publishForm(types) {
  const form = h("form", { class: "publish", id: "publish-form", novalidate: true });
  if (!types.length) { form.append(h("div", { class: "muted" }, "No registered types.")); return form; }
  const typeSel = h("select", { id: "publish-type", name: "type" }, types.map((t) => h("option", { value: t.name }, t.name)));
  const fieldsBox = h("div", { class: "fields" });
  const corr = h("input", { id: "publish-correlation", type: "text", placeholder: "new id if empty" });
  const general = h("div", { class: "field-error", id: "publish-error" });
  let fields = [];
  const build = () => {
    const t = types.find((x) => x.name === typeSel.value);
    const schema = t.json_schema;
    const req = new Set(schema.required || []);
    fields = Object.entries(schema.properties || {}).map(([n, s]) => fieldFor(n, s, schema, req.has(n)));
    fieldsBox.replaceChildren(...fields.map((f) => f.el));
  };
  typeSel.addEventListener("change", build);
  build();
  form.append(
    h("div", { class: "field" }, h("label", { for: "publish-type" }, "Type"), typeSel),
    fieldsBox,
    h("div", { class: "field" }, h("label", { for: "publish-correlation" }, "Correlation id"), corr),
    general,
    h("button", { class: "btn primary", type: "submit", id: "publish-submit" }, "Publish"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    for (const f of fields) { f.error.textContent = ""; f.el.classList.remove("invalid"); }
    general.textContent = "";
    const payload = {};
    try {
      for (const f of fields) { const v = f.read(); if (v !== undefined) payload[f.name] = v; }
    } catch (err) {
      const f = fields.find((x) => x.name === err.field);
      if (f) { f.error.textContent = err.message; f.el.classList.add("invalid"); return; }
      general.textContent = err.message; return;
    }
    try {
      const a = await api("/api/artifacts", { method: "POST", body: { type: typeSel.value, payload, correlation_id: corr.value.trim() || null } });
      toast(`Published ${a.type} ${a.id.slice(0, 8)}`, "ok");
    } catch (err) {
      if (err.status === 422 && Array.isArray(err.detail)) {
        for (const d of err.detail) {
          const loc = d.loc || [];
          const field = loc[0] === "body" && loc[1] === "payload" ? loc[2] : null;
          const f = fields.find((x) => x.name === field);
          if (f) { f.error.textContent = f.error.textContent ? `${f.error.textContent}; ${d.msg}` : d.msg; f.el.classList.add("invalid"); }
          else general.textContent = `${loc.slice(1).join(".")}: ${d.msg}`;
        }
      } else general.textContent = err.message;
    }
  });
  return form;
}

// ---- view ------------------------------------------------------------------

export async function blackboardView(root) {
  const graphBox = h("div", { class: "graph-box" });
  const feed = h("div", { class: "artifacts", id: "artifact-feed" });
  const formBox = h("div");
  root.append(h("div", { class: "bb" },
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Agents"),
      h("span", { class: "muted small" }, "types ⟶ agents ⟶ types")), graphBox),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Publish an artifact")), formBox),
    h("section", { class: "panel wide" }, h("div", { class: "panel-head" }, h("h2", {}, "Artifacts"), h("span", { class: "muted small" }, "newest first · live")), feed)));
  try {
    const [bb, types, arts, info] = await Promise.all([api("/api/blackboard"), api("/api/types"), api("/api/artifacts?limit=50"), api("/api/info")]);
    graphBox.append(graph(bb));
    const consumed = new Set(bb.agents.flatMap((a) => a.consumes));
    const sorted = types.slice().sort((a, b) => (consumed.has(b.name) - consumed.has(a.name)) || a.name.localeCompare(b.name));
    formBox.append(info.read_only ? h("div", { class: "muted" }, "Read-only dashboard.") : publishForm(sorted));
    feed.append(...arts.items.map(artifactCard));
    if (!arts.items.length) feed.append(h("div", { class: "muted empty", id: "no-artifacts" }, "No artifacts yet."));
  } catch (err) { graphBox.append(errorBox(err)); return; }
  return onLive((msg) => {
    if (msg.type !== "artifact" || feed.querySelector(`[data-artifact-id="${CSS.escape(msg.artifact.id)}"]`)) return;
    feed.querySelector("#no-artifacts")?.remove();
    const card = artifactCard(msg.artifact);
    card.classList.add("fresh");
    feed.prepend(card);
    while (feed.children.length > 200) feed.lastChild.remove();
  });
}
