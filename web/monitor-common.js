// What the console's parts share: the admin token, the operator API, status line,
// formatting and the small inline-SVG time series (no external hosts, no libraries).
//
// The token is sent as a bearer header by fetch(); WebSockets (which cannot carry
// headers in a browser) offer it as the subprotocol "bearer.<token>" next to
// "relay-monitor". It lives in sessionStorage only, so it is gone when the tab closes.

export const TOKEN_KEY = "relay-monitor-token";

export const $ = (id) => document.getElementById(id);

export const session = { token: sessionStorage.getItem(TOKEN_KEY) || "" };

// window.__monitor: counters for tests and for debugging in the browser's console.
export const probe = {
  polls: 0,
  events: 0,
  stats: 0,
  levels: { caller: null, agent: null },
  transcript: [],
  listenBytes: 0,
  scheduledSecs: 0,
  listenLevel: () => null,
  errors: [],
  history: { searches: 0, results: [], activeLine: -1 },
};
window.__monitor = probe;

export function setToken(token) {
  session.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.toggleAttribute("data-error", isError);
  if (isError) probe.errors.push(text);
}

export function openSocket(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return new WebSocket(`${scheme}://${location.host}${path}`, [
    "relay-monitor",
    `bearer.${session.token}`,
  ]);
}

async function request(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${session.token}` },
  });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // not our error envelope: keep the status
    }
    throw new Error(message);
  }
  return response;
}

export async function api(path, options) {
  return (await request(path, options)).json();
}

export async function apiBlob(path) {
  return (await request(path)).blob();
}

export function formatDuration(secs) {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function formatTime(unixSecs) {
  return unixSecs ? new Date(unixSecs * 1000).toLocaleString() : "";
}

export function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

// A time series as one inline SVG path, scaled to its own range (or [min, max]).
// `values` holds numbers or null (gaps); the newest is at the right.
export function drawSparkline(svg, values, { min = null, max = null } = {}) {
  const W = 120;
  const H = 28;
  const numbers = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  const lo = min ?? Math.min(...numbers, 0);
  const hi = Math.max(max ?? Math.max(...numbers, 0), lo + 1e-9);
  const step = values.length > 1 ? W / (values.length - 1) : W;
  let d = "";
  let pen = "M";
  values.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      pen = "M";
      return;
    }
    const y = H - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (H - 2) - 1;
    d += `${pen}${(i * step).toFixed(1)},${y.toFixed(1)} `;
    pen = "L";
  });
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  let path = svg.querySelector("path");
  if (!path) {
    path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    svg.append(path);
  }
  path.setAttribute("d", d.trim());
}
