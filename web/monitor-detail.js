// One live call in the console: legs and transports, ICE pair, jitter/loss/RTT series,
// levels and voice activity of both sides, live transcript, events (expandable JSON),
// listen-in and hang-up. Fed by the call's monitor WebSocket (/api/calls/{id}/events).

import { $, api, drawSparkline, element, openSocket, probe, setStatus } from "./monitor-common.js";
import { startListening, stopListening, isListening } from "./monitor-listen.js";

const EVENT_LOG_MAX = 200;
const LEVEL_POINTS = 100; // 10 s of relay.levels
const STATS_POINTS = 60;
const SPEAKING_DBFS = -45; // a side counts as speaking above this level

const USER_DONE = "conversation.item.input_audio_transcription.completed";
const USER_DELTA = "conversation.item.input_audio_transcription.delta";
const AGENT_DONE = {
  "response.output_audio_transcript.done": "transcript",
  "response.audio_transcript.done": "transcript",
  "response.output_text.done": "text",
  "response.text.done": "text",
};
const AGENT_DELTA = new Set([
  "response.output_audio_transcript.delta",
  "response.audio_transcript.delta",
  "response.output_text.delta",
  "response.text.delta",
]);

const detail = {
  callId: null,
  socket: null,
  partial: new Map(), // item_id -> <li> of a turn still being transcribed
  levels: { caller: [], agent: [] },
  series: {}, // name -> values
  lastLinks: new Map(), // "leg/direction" -> {packets_received, packets_lost}
};

export function selectCall(callId, snapshot) {
  if (detail.callId === callId) return;
  stopListening();
  detail.socket?.close();
  Object.assign(detail, { callId, partial: new Map(), levels: { caller: [], agent: [] } });
  detail.series = {};
  detail.lastLinks = new Map();
  probe.transcript = [];
  $("detail").hidden = false;
  $("detail-empty").hidden = true;
  $("detail-id").textContent = callId;
  $("detail-state").textContent = "connecting…";
  $("transcript").replaceChildren();
  $("events").replaceChildren();
  for (const svg of document.querySelectorAll("#detail svg.spark")) svg.replaceChildren();
  for (const out of document.querySelectorAll("#detail output[data-series]")) out.textContent = "–";
  resetHangup();
  showLevels({ caller_dbfs: null, agent_dbfs: null });
  showCallSnapshot(snapshot);

  const socket = openSocket(`/api/calls/${encodeURIComponent(callId)}/events`);
  detail.socket = socket;
  socket.addEventListener("message", (e) => {
    if (detail.socket === socket) onMonitorMessage(JSON.parse(e.data));
  });
  socket.addEventListener("close", () => {
    if (detail.socket === socket) $("detail-state").textContent += " · stream closed";
  });
}

// Legs, transports and ICE pairs, from the call's snapshot (the list's poll refreshes it).
export function showCallSnapshot(call) {
  if (!call || call.id !== detail.callId) return;
  const rows = [];
  for (const [leg, info] of Object.entries(call.legs || {})) {
    if (!info) continue;
    const pair = info.selected_pair;
    const ice = pair
      ? `${pair.protocol} ${pair.local} (${pair.local_type}) ↔ ${pair.remote} (${pair.remote_type})`
      : "–";
    rows.push(
      element(
        "tr",
        {},
        element("th", { scope: "row", text: leg }),
        element("td", { text: info.transport || (leg === "caller" ? call.transport : "webrtc") || "" }),
        element("td", { text: info.connection_state || "" }),
        element("td", { class: "console-ice", text: ice }),
      ),
    );
  }
  $("legs").replaceChildren(...rows);
}

function onMonitorMessage(message) {
  switch (message.type) {
    case "relay.snapshot":
      $("detail-state").textContent = `${message.call.state} · ${message.call.model || ""}`;
      showCallSnapshot(message.call);
      for (const turn of message.call.transcripts || []) addTurn(turn.role, turn.text);
      for (const item of message.events) onEvent(item, false);
      break;
    case "relay.event":
      onEvent(message, true);
      break;
    case "relay.levels":
      showLevels(message);
      break;
    case "relay.stats":
      showStats(message);
      break;
    case "relay.dropped":
      logLine(`… ${message.count} message(s) dropped (this page fell behind)`);
      break;
    case "relay.call_ended":
      $("detail-state").textContent = `ended · ${message.outcome}`;
      $("hangup").disabled = true;
      stopListening();
      break;
  }
}

function onEvent(item, live) {
  const event = item.event;
  probe.events += 1;
  logLine(`${item.direction === "client" ? "→" : "←"} ${event.type}`, event);
  // The snapshot already holds completed turns: only live events add to the transcript.
  if (!live || item.direction !== "server") return;
  if (event.type === USER_DONE) finishTurn(event.item_id, "user", event.transcript);
  else if (event.type in AGENT_DONE) finishTurn(event.item_id, "agent", event[AGENT_DONE[event.type]]);
  else if (event.type === USER_DELTA) growTurn(event.item_id, "user", event.delta);
  else if (AGENT_DELTA.has(event.type)) growTurn(event.item_id, "agent", event.delta);
}

function logLine(text, event = null) {
  const list = $("events");
  let line;
  if (event) {
    const pre = element("pre", {});
    const details = element("details", {}, element("summary", { text }), pre);
    // The JSON is rendered only when opened: most events are never looked at.
    details.addEventListener("toggle", () => {
      if (details.open && !pre.textContent) pre.textContent = JSON.stringify(event, null, 2);
    });
    line = element("li", {}, details);
  } else {
    line = element("li", { text });
  }
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(line);
  while (list.children.length > EVENT_LOG_MAX) list.firstElementChild.remove();
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function turnElement(role) {
  const li = element(
    "li",
    { "data-role": role },
    element("span", { class: "monitor-role", text: role === "user" ? "Caller" : "Assistant" }),
    element("span", { class: "monitor-text" }),
  );
  $("transcript").append(li);
  return li;
}

function addTurn(role, text) {
  turnElement(role).querySelector(".monitor-text").textContent = text;
  probe.transcript.push({ role, text });
}

function growTurn(itemId, role, delta) {
  if (typeof delta !== "string") return;
  let li = detail.partial.get(itemId);
  if (!li) {
    li = turnElement(role);
    li.dataset.partial = "";
    detail.partial.set(itemId, li);
  }
  li.querySelector(".monitor-text").textContent += delta;
}

function finishTurn(itemId, role, text) {
  if (typeof text !== "string") return;
  const li = detail.partial.get(itemId) || turnElement(role);
  detail.partial.delete(itemId);
  li.removeAttribute("data-partial");
  li.querySelector(".monitor-text").textContent = text;
  probe.transcript.push({ role, text });
}

function showLevels(message) {
  for (const leg of ["caller", "agent"]) {
    const dbfs = message[`${leg}_dbfs`];
    probe.levels[leg] = dbfs;
    $(`level-${leg}`).value = dbfs ?? -60;
    $(`level-${leg}-db`).textContent = dbfs == null ? "–" : `${dbfs.toFixed(0)} dB`;
    const speaking = dbfs != null && dbfs > SPEAKING_DBFS;
    const vad = $(`vad-${leg}`);
    vad.toggleAttribute("data-on", speaking);
    vad.textContent = speaking ? "speaking" : "silent";
    const series = detail.levels[leg];
    series.push(dbfs == null ? null : Math.max(-60, dbfs));
    if (series.length > LEVEL_POINTS) series.shift();
    drawSparkline($(`spark-level-${leg}`), series, { min: -60, max: 0 });
  }
}

// relay.stats: RTT per leg, and per received stream its jitter and the share of packets
// lost since the previous sample (the counters are cumulative).
function showStats(message) {
  probe.stats += 1;
  const points = {};
  for (const [leg, rtt] of Object.entries(message.rtt_secs || {})) points[`rtt-${leg}`] = rtt * 1000;
  for (const link of message.links || []) {
    if (link.direction !== "in") continue;
    const key = `${link.leg}/${link.direction}`;
    const before = detail.lastLinks.get(key) || { packets_received: 0, packets_lost: 0 };
    detail.lastLinks.set(key, link);
    const got = link.packets_received - before.packets_received;
    const lost = link.packets_lost - before.packets_lost;
    points[`loss-${link.leg}`] = got + lost > 0 ? (100 * Math.max(0, lost)) / (got + lost) : 0;
    if (link.jitter_secs != null) points[`jitter-${link.leg}`] = link.jitter_secs * 1000;
  }
  for (const out of document.querySelectorAll("#detail output[data-series]")) {
    const name = out.dataset.series;
    const series = (detail.series[name] ||= []);
    series.push(points[name] ?? null);
    if (series.length > STATS_POINTS) series.shift();
    const svg = $(`spark-${name}`);
    drawSparkline(svg, series, { min: 0 });
    const latest = points[name];
    out.textContent = latest == null ? "–" : `${latest.toFixed(name.startsWith("loss") ? 1 : 0)}${name.startsWith("loss") ? " %" : " ms"}`;
  }
}

// -- hang-up: a second press confirms ------------------------------------------------------

function resetHangup() {
  const button = $("hangup");
  button.disabled = false;
  delete button.dataset.confirm;
  button.textContent = "Hang up";
}

async function hangup() {
  const button = $("hangup");
  if (!("confirm" in button.dataset)) {
    button.dataset.confirm = "";
    button.textContent = "Press again to hang up";
    return;
  }
  button.disabled = true;
  try {
    await api(`/v1/realtime/calls/${encodeURIComponent(detail.callId)}/hangup`, { method: "POST" });
    setStatus(`Hung up ${detail.callId}.`);
  } catch (error) {
    setStatus(`Cannot hang up: ${error.message}`, true);
    resetHangup();
  }
}

$("hangup").addEventListener("click", hangup);
$("hangup").addEventListener("blur", () => {
  if (!$("hangup").disabled) resetHangup();
});

$("listen").addEventListener("click", () => {
  if (isListening()) stopListening();
  else if (detail.callId) {
    startListening(detail.callId, $("listen-track").value).catch((error) =>
      setStatus(`Cannot listen: ${error.message}`, true),
    );
  }
});
