// The single-page app: a hash router over the views, the live socket, clearing traces.
import { api, h, toast, connectLive, onLive, fmtInt, errorBox, rememberList, refreshAgo } from "./api.js";
import { tracesView } from "./traces.js";
import { timelineView } from "./timeline.js";
import { statsView } from "./stats.js";
import { correlationsView, correlationView } from "./correlations.js";
import { blackboardView } from "./blackboard.js";

const view = document.getElementById("view");
const AGO_REFRESH_MS = 5000;
let cleanup = null;
let info = null;

async function route() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const hash = location.hash.replace(/^#/, "") || "/traces";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  const name = parts[0] || "traces";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "trace" && a.dataset.view === "traces") || (name === "correlation" && a.dataset.view === "correlations"));
  }
  view.replaceChildren();
  view.className = `view-${name}`;
  try {
    if (name === "trace" && parts[1]) {
      // Trace and span ids are lowercase hex; one pasted in capitals just works.
      const traceId = decodeURIComponent(parts[1]).trim().toLowerCase();
      if (params.get("span")) params.set("span", params.get("span").toLowerCase());
      const canonical = `#/trace/${traceId}${params.toString() ? `?${params}` : ""}`;
      if (canonical !== location.hash && /^[0-9a-f]{32}$/.test(traceId)) history.replaceState(null, "", canonical);
      cleanup = await timelineView(view, traceId, params);
    } else if (name === "stats") cleanup = await statsView(view, params);
    else if (name === "correlations") cleanup = await correlationsView(view, params);
    else if (name === "correlation" && parts[1]) cleanup = await correlationView(view, decodeURIComponent(parts[1]));
    else if (name === "blackboard") cleanup = await blackboardView(view);
    else {
      rememberList(location.hash || "#/traces");
      cleanup = await tracesView(view, params);
    }
  } catch (err) { view.append(errorBox(err)); }
}

async function showInfo() {
  try { info = await api("/api/info"); } catch { return; }
  document.getElementById("dbinfo").textContent = `${info.db_path} · ${fmtInt(info.spans)} spans${info.read_only ? " · read-only" : ""}`;
}

async function start() {
  try { info = await api("/api/info"); }
  catch (err) { view.append(errorBox(err.status === 401 ? "Access token missing or wrong: open the URL printed by the server (it ends in ?token=…)." : err)); return; }
  await showInfo();
  document.getElementById("nav-blackboard").hidden = !info.flock;
  const clearBtn = document.getElementById("clear-btn");
  clearBtn.hidden = info.read_only;
  clearBtn.addEventListener("click", async () => {
    const current = await api("/api/info");
    const dialog = document.getElementById("confirm");
    const scope = document.getElementById("clear-scope");
    const describe = () => {
      const age = scope.selectedOptions[0].textContent.replace("traces that ended ", "");
      document.getElementById("confirm-text").textContent = scope.value
        ? `This deletes every trace in ${current.db_path} that ended ${age} (whole traces: one still going on keeps all its spans). It cannot be undone.`
        : `This deletes all ${fmtInt(current.spans)} spans in ${current.db_path}. It cannot be undone.`;
    };
    scope.value = "";
    scope.onchange = describe;
    describe();
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "ok") return;
      const body = scope.value ? { confirm: true, older_than: scope.value } : { confirm: true };
      try {
        const r = await api("/api/traces/clear", { method: "POST", body });
        if (r.success) toast(`Deleted ${fmtInt(r.deleted_count)} spans`, "ok"); else toast(r.error, "err");
        showInfo();
        route();
      } catch (err) { toast(err.message, "err"); }
    }, { once: true });
  });
  // The header's span count follows the file; a view that failed while the server was
  // away (restart) loads again once the live socket is back.
  let infoTimer = null;
  onLive((msg) => {
    if (msg.type === "traces" || msg.type === "cleared" || msg.type === "reconnected") {
      clearTimeout(infoTimer);
      infoTimer = setTimeout(showInfo, msg.type === "traces" ? 1000 : 0);
    }
    if (msg.type === "reconnected" && view.querySelector(".error-box.offline")) route();
  });
  setInterval(() => refreshAgo(view), AGO_REFRESH_MS);
  connectLive(document.getElementById("live"));
  window.addEventListener("hashchange", route);
  route();
}

start();
