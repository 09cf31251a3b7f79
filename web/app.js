/**
 * app.js: the demo voice page served at `GET /`.
 *
 * Configuration: the host page may set `window.REALTIME_RELAY_CONFIG` (any RealtimeVoiceClient option,
 * e.g. `{tokenUrl: "/my-backend/realtime-token"}`) before this module runs. The demo default uses the
 * relay's own development route `/api/demo/client_secret`.
 */
import { ErrorCode, RealtimeVoiceClient } from "./realtime-client.js";

const $ = (id) => document.getElementById(id);
const el = {
  status: $("status"),
  statusText: $("status-text"),
  transport: $("transport"),
  banner: $("banner"),
  bannerTitle: $("banner-title"),
  bannerMessage: $("banner-message"),
  bannerAction: $("banner-action"),
  bannerClose: $("banner-close"),
  conversation: $("conversation"),
  empty: $("empty"),
  messages: $("messages"),
  userTranscript: $("user-transcript"),
  agentTranscript: $("agent-transcript"),
  speaking: $("speaking"),
  speakingText: $("speaking-text"),
  meter: $("mic-meter"),
  meterFill: $("meter-fill"),
  start: $("start"),
  mute: $("mute"),
  muteText: $("mute-text"),
  end: $("end"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  voice: $("voice"),
  mode: $("mode"),
  clear: $("clear"),
  audio: $("agent-audio"),
};

const config = { ...(globalThis.REALTIME_RELAY_CONFIG || {}) };
if (config.voice) el.voice.value = config.voice;
if (config.mode) el.mode.value = config.mode;

const client = new RealtimeVoiceClient({ ...config, audioElement: el.audio });
/** A handle for debugging and for the browser tests (stats, levels). */
globalThis.realtimeApp = { client };

// ---- errors --------------------------------------------------------------------------------------

const TITLES = {
  [ErrorCode.INSECURE_ORIGIN]: "This page is not secure",
  [ErrorCode.UNSUPPORTED_BROWSER]: "Browser not supported",
  [ErrorCode.MIC_PERMISSION_DENIED]: "Microphone access denied",
  [ErrorCode.NO_MIC]: "No microphone found",
  [ErrorCode.MIC_BUSY]: "Microphone unavailable",
  [ErrorCode.RELAY_UNREACHABLE]: "Relay unreachable",
  [ErrorCode.TOKEN_FAILED]: "Could not start a session",
  [ErrorCode.UNAUTHORIZED]: "Session key refused",
  [ErrorCode.UPSTREAM_UNREACHABLE]: "Voice service unreachable",
  [ErrorCode.UPSTREAM_TIMEOUT]: "Voice service timed out",
  [ErrorCode.RELAY_BUSY]: "Relay busy",
  [ErrorCode.RATE_LIMITED]: "Too many requests",
  [ErrorCode.DIRECT_MODE_DISABLED]: "Direct mode unavailable",
  [ErrorCode.RELAY_ERROR]: "The relay refused the call",
  [ErrorCode.CONNECTION_FAILED]: "Could not connect",
  [ErrorCode.CONNECTION_LOST]: "Connection lost",
  [ErrorCode.CALL_ENDED]: "Call ended",
  [ErrorCode.AUTOPLAY_BLOCKED]: "Audio is blocked",
  [ErrorCode.TRANSCRIPTION_MISSING]: "No transcript yet",
  [ErrorCode.TRANSCRIPTION_FAILED]: "Transcription failed",
  [ErrorCode.SERVER_ERROR]: "Voice service error",
  [ErrorCode.NOT_CONNECTED]: "Not connected",
};

let shownError = null;
let bannerAction = null;

function showBanner({ code, title, message, actionLabel, action, tone = "error" }) {
  el.banner.hidden = false;
  el.banner.dataset.code = code || "";
  el.banner.dataset.tone = tone;
  el.bannerTitle.textContent = title;
  el.bannerMessage.textContent = message;
  bannerAction = action || null;
  el.bannerAction.hidden = !action;
  el.bannerAction.textContent = actionLabel || "";
}

function hideBanner() {
  el.banner.hidden = true;
  el.banner.dataset.code = "";
  bannerAction = null;
  shownError = null;
}

function showError(error) {
  if (!error || error === shownError) return;
  shownError = error;
  const status = error.status ? ` (HTTP ${error.status})` : "";
  let actionLabel;
  let action;
  if (error.code === ErrorCode.AUTOPLAY_BLOCKED) {
    actionLabel = "Enable audio";
    action = async () => {
      if (await client.enableAudio()) hideBanner();
    };
  } else if (error.fatal && error.code !== ErrorCode.INSECURE_ORIGIN && error.code !== ErrorCode.UNSUPPORTED_BROWSER) {
    actionLabel = "Try again";
    action = () => start();
  }
  showBanner({
    code: error.code,
    title: (TITLES[error.code] || "Something went wrong") + status,
    message: error.message,
    actionLabel,
    action,
    tone: error.fatal ? "error" : "warning",
  });
}

el.bannerAction.addEventListener("click", () => bannerAction?.());
el.bannerClose.addEventListener("click", () => {
  client.clearError();
  hideBanner();
  el.start.focus();
});

// ---- rendering -----------------------------------------------------------------------------------

const STATUS_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Call ended",
  error: "Not connected",
};

/** How the page names what carries the call (`client.transport`). */
const TRANSPORT_TEXT = {
  "webrtc-udp": "WebRTC (UDP)",
  "webrtc-tcp": "WebRTC (TCP)",
  websocket: "WebSocket",
};

const rendered = new Map(); // message id -> <li>

function renderMessages(messages) {
  for (const message of messages) {
    let li = rendered.get(message.id);
    if (!li) {
      li = document.createElement("li");
      li.className = `message ${message.role}`;
      li.dataset.id = message.id;
      const who = document.createElement("span");
      who.className = "message-who";
      who.textContent = message.role === "user" ? "You" : "Assistant";
      const bubble = document.createElement("p");
      bubble.className = "message-text";
      li.append(who, bubble);
      el.messages.append(li);
      rendered.set(message.id, li);
    }
    const bubble = li.querySelector(".message-text");
    let text = message.text;
    if (!text && message.role === "user" && message.source === "voice") {
      text = message.failed ? "(could not transcribe)" : message.final ? "(no words heard)" : "…";
    }
    if (bubble.textContent !== text) bubble.textContent = text;
    li.dataset.final = String(Boolean(message.final));
    li.dataset.source = message.source || "";
    li.classList.toggle("interrupted", Boolean(message.interrupted));
  }
  if (messages.length < rendered.size) {
    const keep = new Set(messages.map((m) => m.id));
    for (const [id, li] of rendered) {
      if (!keep.has(id)) {
        li.remove();
        rendered.delete(id);
      }
    }
  }
  el.empty.hidden = messages.length > 0;
}

let lastCount = 0;

function render(state) {
  el.status.dataset.status = state.status;
  el.statusText.textContent = STATUS_TEXT[state.status] || state.status;
  const transport = state.isConnected && state.transport ? TRANSPORT_TEXT[state.transport] || state.transport : "";
  if (el.transport) {
    el.transport.hidden = !transport;
    el.transport.textContent = transport ? `via ${transport}` : "";
    el.transport.dataset.transport = state.isConnected ? state.transport || "" : "";
  }

  const busy = state.isConnecting;
  el.start.disabled = state.isConnected || busy;
  el.start.querySelector("span").textContent = busy ? "Connecting…" : "Start call";
  el.start.setAttribute("aria-busy", String(busy));
  el.end.disabled = !(state.isConnected || busy);
  el.mute.disabled = !state.isConnected;
  const muted = state.isConnected && !state.isRecording;
  el.mute.setAttribute("aria-pressed", String(muted));
  el.muteText.textContent = muted ? "Unmute" : "Mute";
  el.message.disabled = !state.isConnected;
  el.send.disabled = !state.isConnected;
  el.message.placeholder = state.isConnected ? "Type a message…" : "Start a call to type a message";
  el.voice.disabled = busy || state.isConnected;
  el.mode.disabled = busy || state.isConnected;

  let speaking = "off";
  let speakingText = "Microphone off";
  if (state.isConnected) {
    if (!state.isRecording) [speaking, speakingText] = ["muted", "Muted"];
    else if (state.isSpeaking) [speaking, speakingText] = ["speaking", "You are speaking"];
    else if (state.isAgentSpeaking) [speaking, speakingText] = ["agent", "Assistant is speaking"];
    else [speaking, speakingText] = ["listening", "Listening"];
  }
  el.speaking.dataset.state = speaking;
  el.speakingText.textContent = speakingText;

  el.userTranscript.textContent = state.userTranscript;
  el.userTranscript.dataset.final = String(state.userTranscriptFinal);
  el.agentTranscript.textContent = state.agentTranscript;

  renderMessages(state.messages);
  if (state.messages.length !== lastCount) {
    lastCount = state.messages.length;
    el.conversation.scrollTop = el.conversation.scrollHeight;
  }

  if (state.error) showError(state.error);
  else if (shownError) hideBanner();
  document.body.dataset.status = state.status;
}

client.subscribe(render);
render(client.state);

// ---- mic level meter -----------------------------------------------------------------------------

let meterFrame = 0;
let lastAria = -1;
function meterLoop() {
  meterFrame = 0;
  if (!client.isConnected) {
    el.meterFill.style.transform = "scaleX(0)";
    el.meter.setAttribute("aria-valuenow", "0");
    lastAria = 0;
    return;
  }
  const rms = client.getMicLevel();
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const level = Math.max(0, Math.min(1, (db + 60) / 60));
  el.meterFill.style.transform = `scaleX(${level.toFixed(3)})`;
  el.meter.dataset.level = level.toFixed(3);
  const aria = Math.round(level * 100);
  if (aria !== lastAria && (aria === 0 || Math.abs(aria - lastAria) >= 5)) {
    el.meter.setAttribute("aria-valuenow", String(aria));
    lastAria = aria;
  }
  meterFrame = requestAnimationFrame(meterLoop);
}
client.subscribe((state) => {
  if (state.isConnected && !meterFrame) meterFrame = requestAnimationFrame(meterLoop);
});

// ---- controls ------------------------------------------------------------------------------------

async function start() {
  hideBanner();
  client.setOptions({ voice: el.voice.value, mode: el.mode.value });
  const ok = await client.connect();
  if (ok) el.mute.focus();
}

el.start.addEventListener("click", start);
el.end.addEventListener("click", async () => {
  await client.disconnect();
  el.start.focus();
});
el.mute.addEventListener("click", () => client.toggleRecording());
el.clear.addEventListener("click", () => {
  client.clearTranscripts();
});
el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (client.sendMessage(el.message.value)) el.message.value = "";
  el.message.focus();
});

if (globalThis.isSecureContext === false) {
  showBanner({
    code: ErrorCode.INSECURE_ORIGIN,
    title: TITLES[ErrorCode.INSECURE_ORIGIN],
    message:
      `Browsers only give the microphone to https:// pages (or localhost), and ${location.origin} is not one. ` +
      "Open this page over https:// to talk.",
  });
}
