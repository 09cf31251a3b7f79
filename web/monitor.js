// The relay's monitor page: live calls, live transcripts, levels and listen-in.
//
// It talks to the operator API with the admin token: fetch() sends it as a bearer
// header; WebSockets (which cannot carry headers in a browser) offer it as the
// subprotocol "bearer.<token>" next to "relay-monitor". The token lives in
// sessionStorage only, so it is gone when the tab closes.
//
// window.__monitor exposes counters for tests and for debugging in the console.

const TOKEN_KEY = "relay-monitor-token";
const POLL_MS = 2000;
const EVENT_LOG_MAX = 200;
const RATE = 24000;
const LISTEN_LEAD_SECS = 0.08; // scheduling headroom against network jitter
const LISTEN_MAX_AHEAD_SECS = 0.5; // beyond this, drop audio rather than lag behind

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

const $ = (id) => document.getElementById(id);

const probe = {
  polls: 0,
  events: 0,
  levels: { caller: null, agent: null },
  transcript: [],
  listenBytes: 0,
  scheduledSecs: 0,
  listenLevel: () => listenLevel(),
  errors: [],
};
window.__monitor = probe;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  selected: null,
  events: null, // WebSocket of the selected call's events
  listen: null, // { socket, context, analyser, nextTime }
  pollTimer: null,
  partial: new Map(), // item_id -> <li> of a turn still being transcribed
};

// -- helpers ----------------------------------------------------------------------------

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.toggleAttribute("data-error", isError);
  if (isError) probe.errors.push(text);
}

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${path}`;
}

function openSocket(path) {
  return new WebSocket(wsUrl(path), ["relay-monitor", `bearer.${state.token}`]);
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch {
      // not our error envelope: keep the status
    }
    throw new Error(message);
  }
  return response.json();
}

function formatDuration(secs) {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// -- calls list ---------------------------------------------------------------------------

async function poll() {
  try {
    const calls = (await api("/api/calls")).data;
    probe.polls += 1;
    renderCalls(calls);
    setStatus(`Connected · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    setStatus(`Cannot list calls: ${error.message}`, true);
  }
}

function renderCalls(calls) {
  const body = $("calls");
  body.replaceChildren(
    ...calls.map((call) => {
      const row = document.createElement("tr");
      row.dataset.callId = call.id;
      row.setAttribute("aria-selected", String(call.id === state.selected));
      row.tabIndex = 0;
      const started = call.created_at ? Date.now() / 1000 - call.created_at : 0;
      for (const text of [call.id, call.state, call.model || "", formatDuration(started)]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.addEventListener("click", () => select(call.id));
      row.addEventListener("keydown", (e) => e.key === "Enter" && select(call.id));
      return row;
    }),
  );
  $("call-count").textContent = String(calls.length);
  $("no-calls").hidden = calls.length > 0;
}

function startPolling() {
  clearInterval(state.pollTimer);
  poll();
  state.pollTimer = setInterval(poll, POLL_MS);
}

// -- one call: events, transcript, levels ----------------------------------------------------

function select(callId) {
  if (state.selected === callId) return;
  stopListening();
  state.events?.close();
  state.selected = callId;
  state.partial.clear();
  probe.transcript = [];
  for (const row of $("calls").children) {
    row.setAttribute("aria-selected", String(row.dataset.callId === callId));
  }
  $("detail").hidden = false;
  $("detail-id").textContent = callId;
  $("detail-state").textContent = "connecting…";
  $("transcript").replaceChildren();
  $("events").replaceChildren();
  showLevels({ caller_dbfs: null, agent_dbfs: null });

  const socket = openSocket(`/api/calls/${encodeURIComponent(callId)}/events`);
  state.events = socket;
  socket.addEventListener("message", (e) => {
    if (state.events === socket) onMonitorMessage(JSON.parse(e.data));
  });
  socket.addEventListener("close", () => {
    if (state.events === socket) $("detail-state").textContent += " · stream closed";
  });
}

function onMonitorMessage(message) {
  switch (message.type) {
    case "relay.snapshot":
      $("detail-state").textContent = `${message.call.state} · ${message.call.model || ""}`;
      for (const turn of message.call.transcripts || []) addTurn(turn.role, turn.text);
      for (const item of message.events) onEvent(item, false);
      break;
    case "relay.event":
      onEvent(message, true);
      break;
    case "relay.levels":
      showLevels(message);
      break;
    case "relay.dropped":
      logLine(`… ${message.count} message(s) dropped (this page fell behind)`);
      break;
    case "relay.call_ended":
      $("detail-state").textContent = `ended · ${message.outcome}`;
      stopListening();
      break;
  }
}

function onEvent(item, live) {
  const event = item.event;
  probe.events += 1;
  logLine(`${item.direction === "client" ? "→" : "←"} ${event.type}`);
  // The snapshot already holds completed turns: only live events add to the transcript.
  if (!live || item.direction !== "server") return;
  if (event.type === USER_DONE) finishTurn(event.item_id, "user", event.transcript);
  else if (event.type in AGENT_DONE) finishTurn(event.item_id, "agent", event[AGENT_DONE[event.type]]);
  else if (event.type === USER_DELTA) growTurn(event.item_id, "user", event.delta);
  else if (AGENT_DELTA.has(event.type)) growTurn(event.item_id, "agent", event.delta);
}

function logLine(text) {
  const list = $("events");
  const line = document.createElement("li");
  line.textContent = text;
  list.append(line);
  while (list.children.length > EVENT_LOG_MAX) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function turnElement(role) {
  const li = document.createElement("li");
  li.dataset.role = role;
  const who = document.createElement("span");
  who.className = "monitor-role";
  who.textContent = role === "user" ? "Caller" : "Agent";
  const text = document.createElement("span");
  text.className = "monitor-text";
  li.append(who, text);
  $("transcript").append(li);
  return li;
}

function addTurn(role, text) {
  turnElement(role).querySelector(".monitor-text").textContent = text;
  probe.transcript.push({ role, text });
}

function growTurn(itemId, role, delta) {
  if (typeof delta !== "string") return;
  let li = state.partial.get(itemId);
  if (!li) {
    li = turnElement(role);
    li.dataset.partial = "";
    state.partial.set(itemId, li);
  }
  li.querySelector(".monitor-text").textContent += delta;
}

function finishTurn(itemId, role, text) {
  if (typeof text !== "string") return;
  const li = state.partial.get(itemId) || turnElement(role);
  state.partial.delete(itemId);
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
  }
}

// -- listen-in: PCM16 24 kHz over a WebSocket, played with WebAudio ---------------------------

async function startListening() {
  const track = $("listen-track").value;
  const context = new AudioContext({ sampleRate: RATE });
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.connect(context.destination);
  const socket = openSocket(
    `/api/calls/${encodeURIComponent(state.selected)}/listen?track=${track}&format=pcm16`,
  );
  socket.binaryType = "arraybuffer";
  const listen = { socket, context, analyser, nextTime: 0 };
  state.listen = listen;
  socket.addEventListener("message", (e) => play(listen, e.data));
  socket.addEventListener("close", () => state.listen === listen && stopListening());
  $("listen").setAttribute("aria-pressed", "true");
  $("listen").textContent = "Stop listening";
}

function play(listen, data) {
  const pcm = new Int16Array(data);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  const { context } = listen;
  const buffer = context.createBuffer(1, samples.length, RATE);
  buffer.copyToChannel(samples, 0);
  const now = context.currentTime;
  if (listen.nextTime - now > LISTEN_MAX_AHEAD_SECS) return; // catch up: drop this frame
  const at = Math.max(now + LISTEN_LEAD_SECS, listen.nextTime);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(listen.analyser);
  source.start(at);
  listen.nextTime = at + buffer.duration;
  probe.listenBytes += data.byteLength;
  probe.scheduledSecs += buffer.duration;
}

function listenLevel() {
  const analyser = state.listen?.analyser;
  if (!analyser) return null;
  const samples = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(samples);
  const meanSquare = samples.reduce((sum, x) => sum + x * x, 0) / samples.length;
  return meanSquare > 0 ? 10 * Math.log10(meanSquare) : -100;
}

function stopListening() {
  const listen = state.listen;
  state.listen = null;
  if (listen) {
    listen.socket.close();
    listen.context.close();
  }
  $("listen").setAttribute("aria-pressed", "false");
  $("listen").textContent = "Listen";
}

// -- start-up -------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  startPolling();
});

$("listen").addEventListener("click", () => {
  if (state.listen) stopListening();
  else if (state.selected) {
    startListening().catch((error) => setStatus(`Cannot listen: ${error.message}`, true));
  }
});

if (state.token) {
  $("token").value = state.token;
  startPolling();
}
