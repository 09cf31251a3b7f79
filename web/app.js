/**
 * app.js: the demo voice page served at `GET /`.
 *
 * Configuration: the host page may set `window.REALTIME_RELAY_CONFIG` (any RealtimeVoiceClient option,
 * e.g. `{tokenUrl: "/my-backend/realtime-token"}`) before this module runs. The demo default uses the
 * relay's own development route `/api/demo/client_secret`. Also: `uiLanguage` ("en", "fr", "es": the
 * page's strings; default: the person's choice, else the browser's languages) and `history`: "browser"
 * (the default: the conversation kept in localStorage), "relay" (the signed-in user's recorded
 * conversations, read from the relay with a client secret the app's backend minted with
 * `session.relay.user_id`) or false (none). `language` (the transcription language) defaults to the
 * page's language.
 */
import { ErrorCode, RealtimeVoiceClient } from "./realtime-client.js";
import { LocalHistory, RelayHistory, contextItem } from "./history.js";
import { meter, showLevels } from "./levels.js";
import { LANGUAGES, apply, pickLanguage, saveLanguage, savedLanguage, translator } from "./i18n.js";

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
  language: $("language"),
  upstream: $("upstream"),
  live: $("live"),
  userLive: $("user-live"),
  agentLive: $("agent-live"),
  startText: $("start-text"),
  continue: $("continue"),
  agentMeter: $("agent-meter"),
  agentMeterFill: $("agent-meter-fill"),
};

const config = { ...(globalThis.REALTIME_RELAY_CONFIG || {}) };
if (config.voice) el.voice.value = config.voice;
if (config.mode) el.mode.value = config.mode;

let uiLanguage =
  (config.uiLanguage in LANGUAGES && config.uiLanguage) || savedLanguage() || pickLanguage(navigator.languages);
let t = translator(uiLanguage);
el.language.value = uiLanguage;

const history = config.history === false ? null : config.history === "relay" ? new RelayHistory() : new LocalHistory();
const { uiLanguage: _ui, history: _history, ...clientOptions } = config;
const client = new RealtimeVoiceClient({ ...clientOptions, audioElement: el.audio });
/** The transcription language: the host page's, else the page's language. */
const spokenLanguage = () => config.language || uiLanguage;
/** A handle for debugging and for the browser tests (stats, levels). */
globalThis.realtimeApp = { client, history, historyLoaded: null };

// ---- errors --------------------------------------------------------------------------------------

const title = (code) => (code && t(`error.${code}`) !== `error.${code}` ? t(`error.${code}`) : t("somethingWrong"));

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
    actionLabel = t("enableAudio");
    action = async () => {
      if (await client.enableAudio()) hideBanner();
    };
  } else if (error.fatal && error.code !== ErrorCode.INSECURE_ORIGIN && error.code !== ErrorCode.UNSUPPORTED_BROWSER) {
    actionLabel = t("tryAgain");
    action = () => start();
  }
  showBanner({
    code: error.code,
    title: title(error.code) + status,
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

const STATUS_KEY = {
  idle: "notConnected",
  connecting: "connecting",
  connected: "connected",
  reconnecting: "reconnecting",
  disconnected: "callEnded",
  error: "notConnected",
};

/** How the page names what carries the call (`client.transport`). */
const TRANSPORT_TEXT = {
  "webrtc-udp": "WebRTC (UDP)",
  "webrtc-tcp": "WebRTC (TCP)",
  websocket: "WebSocket",
};

const rendered = new Map(); // message id -> <li>
let divider = null;

/**
 * Which messages the list shows: settled turns (the turn in progress is in the "now speaking"
 * strip, not twice), and once the call is over, whatever was said of an unfinished turn. A voice
 * turn with no words yet is never a bubble.
 */
function shown(message, connected) {
  if (message.source === "voice" && !message.text) return message.final;
  return Boolean(message.text) && (message.final || !connected);
}

function bubbleText(message) {
  if (message.text) return message.text;
  return message.failed ? t("notTranscribed") : t("noWords");
}

function messageItem(message) {
  const li = document.createElement("li");
  li.className = `message ${message.role}`;
  li.dataset.id = message.id;
  const who = document.createElement("span");
  who.className = "message-who";
  const bubble = document.createElement("p");
  bubble.className = "message-text";
  li.append(who, bubble);
  return li;
}

function renderMessages(messages, connected) {
  const visible = messages.filter((m) => shown(m, connected));
  const keep = new Set(visible.map((m) => m.id));
  for (const [id, li] of rendered) {
    if (!keep.has(id)) {
      li.remove();
      rendered.delete(id);
    }
  }
  let previous = null;
  for (const message of visible) {
    let li = rendered.get(message.id);
    if (!li) {
      li = messageItem(message);
      rendered.set(message.id, li);
    }
    if (previous ? previous.nextSibling !== li : el.messages.firstChild !== li) {
      if (previous) previous.after(li);
      else el.messages.prepend(li);
    }
    previous = li;
    li.querySelector(".message-who").textContent = message.role === "user" ? t("you") : t("assistant");
    const bubble = li.querySelector(".message-text");
    const text = bubbleText(message);
    if (bubble.textContent !== text) bubble.textContent = text;
    li.dataset.final = String(Boolean(message.final));
    li.dataset.source = message.source || "";
    li.classList.toggle("earlier", Boolean(message.earlier));
    li.classList.toggle("interrupted", Boolean(message.interrupted));
    bubble.dataset.interrupted = t("interrupted");
  }
  renderDivider(visible);
  el.empty.hidden = visible.length > 0;
  return visible;
}

/** "Earlier conversation" above the turns of earlier page loads. */
function renderDivider(visible) {
  const first = visible.find((m) => m.earlier);
  if (!first) {
    divider?.remove();
    divider = null;
    return;
  }
  if (!divider) {
    divider = document.createElement("li");
    divider.className = "history-divider";
    divider.append(document.createElement("span"));
  }
  divider.firstChild.textContent = t("earlier");
  const li = rendered.get(first.id);
  if (li.previousSibling !== divider) li.before(divider);
}

let lastShown = "";
/** Whether the list shows its end (then it keeps showing it when the layout changes). */
let atEnd = true;

/** Where the page's own last scroll left the list (its scroll event is not the person's). */
let ownTop = -1;

function showEnd() {
  el.conversation.scrollTo({ top: el.conversation.scrollHeight, behavior: "instant" });
  ownTop = el.conversation.scrollTop;
}

/** Follows the end of the conversation when it grows or changes (a call ending included). */
function scrollToEnd(visible, status) {
  const last = visible[visible.length - 1];
  const signature = `${visible.length}|${last ? last.id + last.text.length : ""}|${status}`;
  if (signature === lastShown) return;
  lastShown = signature;
  atEnd = true;
  requestAnimationFrame(showEnd);
}

el.conversation.addEventListener("scroll", () => {
  const c = el.conversation;
  if (c.scrollTop === ownTop) return;
  atEnd = c.scrollTop + c.clientHeight >= c.scrollHeight - 4;
});
const keepEnd = new ResizeObserver(() => atEnd && showEnd());
keepEnd.observe(el.conversation);
keepEnd.observe(el.messages);

let state = client.state;

function render(next = state) {
  state = next;
  const connected = state.isConnected;
  el.status.dataset.status = state.status;
  el.statusText.textContent = t(STATUS_KEY[state.status] || "notConnected");
  const transport = connected && state.transport ? TRANSPORT_TEXT[state.transport] || state.transport : "";
  el.transport.hidden = !transport;
  el.transport.textContent = transport ? t("via", { transport }) : "";
  el.transport.dataset.transport = connected ? state.transport || "" : "";

  const busy = state.isConnecting;
  el.start.disabled = connected || busy;
  el.startText.textContent = busy ? t("connecting") : t("start");
  el.start.setAttribute("aria-busy", String(busy));
  el.end.disabled = !(connected || busy);
  el.mute.disabled = !connected;
  const muted = connected && !state.isRecording;
  el.mute.setAttribute("aria-pressed", String(muted));
  el.muteText.textContent = muted ? t("unmute") : t("mute");
  el.message.disabled = !connected;
  el.send.disabled = !connected;
  el.message.placeholder = connected ? t("messageReady") : t("messageIdle");
  el.voice.disabled = busy || connected;
  el.mode.disabled = busy || connected;
  el.language.disabled = busy || connected;

  let speaking = "off";
  let speakingKey = "micOff";
  if (connected) {
    if (!state.isRecording) [speaking, speakingKey] = ["muted", "muted"];
    else if (state.isSpeaking) [speaking, speakingKey] = ["speaking", "youSpeaking"];
    else if (state.isAgentSpeaking) [speaking, speakingKey] = ["agent", "agentSpeaking"];
    else [speaking, speakingKey] = ["listening", "listening"];
  }
  el.speaking.dataset.state = speaking;
  el.speakingText.textContent = t(speakingKey);

  renderLive(connected);
  const messages = history ? history.merge(state.messages) : state.messages;
  const visible = renderMessages(messages, connected);
  el.continue.hidden = busy || connected || !visible.length;
  scrollToEnd(visible, state.status);

  if (state.error) showError(state.error);
  else if (shownError) hideBanner();
  document.body.dataset.status = state.status;
}

/** The "now speaking" strip: a turn still in progress, shown once (its bubble comes when it settles). */
function renderLive(connected) {
  el.userTranscript.textContent = state.userTranscript;
  el.userTranscript.dataset.final = String(state.userTranscriptFinal);
  el.agentTranscript.textContent = state.agentTranscript;
  const last = (role) => [...state.messages].reverse().find((m) => m.role === role);
  const userTurn = last("user");
  const agentTurn = last("assistant");
  el.userLive.hidden = !(connected && userTurn && !userTurn.final && userTurn.text);
  el.agentLive.hidden = !(connected && agentTurn && !agentTurn.final && agentTurn.text);
  el.live.hidden = el.userLive.hidden && el.agentLive.hidden;
}

client.subscribe(render);

// ---- languages -----------------------------------------------------------------------------------

function setLanguage(language) {
  uiLanguage = language;
  t = translator(language);
  apply(document, t, language);
  el.language.value = language;
  showUpstream();
  const error = shownError;
  shownError = null;
  render();
  if (error && !state.error) showError(error);
}

el.language.addEventListener("change", () => {
  saveLanguage(el.language.value);
  setLanguage(el.language.value);
});

// ---- upstream: OpenAI or the built-in emulator ----------------------------------------------------

let upstream = null;

function showUpstream() {
  el.upstream.hidden = !upstream;
  if (!upstream) return;
  el.upstream.dataset.upstream = upstream;
  el.upstream.textContent = upstream === "emulator" ? t("upstreamEmulator") : t("upstreamOpenai");
}

/** The relay names its upstream on the page's own response (`X-Relay-Upstream`). */
async function findUpstream() {
  try {
    const response = await fetch(location.href, { method: "HEAD", cache: "no-store" });
    const said = response.headers.get("X-Relay-Upstream");
    upstream = said === "emulator" || said === "openai" ? said : null;
  } catch {
    upstream = null;
  }
  showUpstream();
}

// ---- voice activity: both sides' levels ----------------------------------------------------------

showLevels(client, meter(el.meter, el.meterFill), meter(el.agentMeter, el.agentMeterFill));

// ---- controls ------------------------------------------------------------------------------------

/** Starts a call; `continuing`: the earlier conversation opens the new session as context. */
async function start(continuing = false) {
  hideBanner();
  const context = continuing ? contextItem(history ? history.merge(state.messages) : state.messages) : null;
  client.setOptions({ voice: el.voice.value, mode: el.mode.value, language: spokenLanguage() });
  const ok = await client.connect();
  if (!ok) return;
  if (context) client.sendEvent(context);
  el.mute.focus();
}

el.start.addEventListener("click", () => start(false));
el.continue.addEventListener("click", () => start(true));
el.end.addEventListener("click", async () => {
  await client.disconnect();
  el.start.focus();
});
el.mute.addEventListener("click", () => client.toggleRecording());
el.clear.addEventListener("click", () => {
  history?.clear();
  client.clearTranscripts();
});
el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (client.sendMessage(el.message.value)) el.message.value = "";
  el.message.focus();
});

setLanguage(uiLanguage);
findUpstream();
if (history instanceof RelayHistory) {
  client.setOptions({ voice: el.voice.value, mode: el.mode.value, language: spokenLanguage() });
  globalThis.realtimeApp.historyLoaded = history.load(client).then((ok) => {
    render();
    return ok;
  });
}

if (globalThis.isSecureContext === false) {
  showBanner({
    code: ErrorCode.INSECURE_ORIGIN,
    title: title(ErrorCode.INSECURE_ORIGIN),
    message: t("insecureMessage", { origin: location.origin }),
  });
}
