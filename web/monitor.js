// The relay's operator console: live calls (sortable, filterable, refreshed every
// POLL_MS), one call's detail (monitor-detail.js) and the history of recordings
// (monitor-history.js). See monitor-common.js for how the admin token is used.

import { $, api, formatDuration, probe, session, setStatus, setToken } from "./monitor-common.js";
import { selectCall, showCallSnapshot } from "./monitor-detail.js";
import { startHistory } from "./monitor-history.js";

const POLL_MS = 2000;

const live = {
  calls: [],
  sortKey: "created_at",
  sortDir: -1, // newest first
  filter: "",
  selected: null,
  timer: null,
};

const COLUMNS = {
  id: (c) => c.id,
  state: (c) => c.state || "",
  model: (c) => c.model || "",
  transport: (c) => c.transport || c.legs?.caller?.transport || "",
  created_at: (c) => c.created_at || 0,
};

async function poll() {
  try {
    live.calls = (await api("/api/calls")).data;
    probe.polls += 1;
    renderCalls();
    showCallSnapshot(live.calls.find((c) => c.id === live.selected));
    setStatus(`Connected · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus(`Cannot list calls: ${error.message}`, true);
  }
}

function visibleCalls() {
  const words = live.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const key = COLUMNS[live.sortKey];
  return live.calls
    .filter((call) => {
      const text = Object.values(COLUMNS).map((f) => String(f(call))).join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    })
    .sort((a, b) => {
      const x = key(a);
      const y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * live.sortDir;
    });
}

function renderCalls() {
  const calls = visibleCalls();
  const now = Date.now() / 1000;
  // The rows are rebuilt at each poll: a keyboard user's focus stays on the same call.
  const focused = document.activeElement?.closest?.("#calls tr")?.dataset.callId;
  $("calls").replaceChildren(
    ...calls.map((call) => {
      const row = document.createElement("tr");
      row.dataset.callId = call.id;
      row.setAttribute("aria-selected", String(call.id === live.selected));
      row.tabIndex = 0;
      const age = call.created_at ? formatDuration(now - call.created_at) : "";
      const cells = [call.id, call.state, call.model || "", COLUMNS.transport(call), age];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.addEventListener("click", () => choose(call.id));
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          choose(call.id);
        }
      });
      return row;
    }),
  );
  if (focused) $("calls").querySelector(`tr[data-call-id="${CSS.escape(focused)}"]`)?.focus();
  $("call-count").textContent = String(live.calls.length);
  $("no-calls").hidden = calls.length > 0;
  $("no-calls").textContent = live.calls.length ? "No call matches the filter." : "No live calls.";
}

function choose(callId) {
  live.selected = callId;
  for (const row of $("calls").children) {
    row.setAttribute("aria-selected", String(row.dataset.callId === callId));
  }
  selectCall(callId, live.calls.find((c) => c.id === callId));
}

function sortBy(key) {
  live.sortDir = live.sortKey === key ? -live.sortDir : key === "created_at" ? -1 : 1;
  live.sortKey = key;
  for (const th of document.querySelectorAll("#calls-table th[data-sort]")) {
    const on = th.dataset.sort === key;
    th.setAttribute("aria-sort", on ? (live.sortDir > 0 ? "ascending" : "descending") : "none");
  }
  renderCalls();
}

function startPolling() {
  clearInterval(live.timer);
  poll();
  live.timer = setInterval(poll, POLL_MS);
  startHistory();
}

function showTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
}

// -- start-up ------------------------------------------------------------------------

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setToken($("token").value.trim());
  startPolling();
});

$("call-filter").addEventListener("input", (e) => {
  live.filter = e.target.value;
  renderCalls();
});

for (const th of document.querySelectorAll("#calls-table th[data-sort]")) {
  th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
}

const tabs = [...document.querySelectorAll("[role=tab]")];
for (const tab of tabs) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
  tab.addEventListener("keydown", (e) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    showTab(next.dataset.tab);
    next.focus();
  });
}

if (session.token) {
  $("token").value = session.token;
  startPolling();
}
