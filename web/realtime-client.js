/**
 * realtime-client.js: the browser client of realtime-relay, without any framework.
 *
 * One `RealtimeVoiceClient` makes one voice call at a time:
 *
 *   1. gets a client secret: from the relay via the host app's token URL (relay mode, the default), or an
 *      OpenAI ephemeral key from `/api/realtime/session` (direct mode, for networks that may reach OpenAI);
 *   2. captures the microphone (echo cancellation, noise suppression and auto gain on; 24 kHz mono);
 *   3. hands both to a transport, which carries the call: WebRTC first (realtime-webrtc.js), then a
 *      WebSocket (realtime-websocket.js) when WebRTC does not connect within `webrtcTimeoutMs`
 *      (`transport: "auto"`, the default; "webrtc" or "websocket" forces one), or any other that
 *      keeps the contract of realtime-transport.js (`transport` as a factory);
 *   4. plays the agent's audio, turns OpenAI Realtime events into transcripts and a conversation
 *      (realtime-conversation.js), and reports every failure as a `RealtimeClientError` with an
 *      actionable message and a `code` (realtime-errors.js);
 *   5. reconnects to the same call when the connection fails (the relay keeps it for a grace period;
 *      `status` is "reconnecting" and `isReconnecting` true meanwhile, `isConnected` stays true);
 *   6. hangs up on `disconnect()`, on a connection lost for good and when the page goes away.
 *
 * It keeps the original `useWebRTC` API: options `model`, `transcriptionModel`, `voice`,
 * `onTranscriptDelta`, `onTranscriptDone`, `onAgentResponse`, `onError`; state `isConnected`,
 * `isRecording`, `userTranscript`, `agentTranscript`; methods `connect`, `disconnect`,
 * `sendMessage(text)`, `toggleRecording`, `clearTranscripts`. See web/README.md.
 */
import { Conversation } from "./realtime-conversation.js";
import { DEFAULT_OPTIONS, IDLE_FLAGS, INITIAL_STATE } from "./realtime-defaults.js";
import {
  Aborted,
  ErrorCode,
  RealtimeClientError,
  autoplayBlocked,
  callEnded,
  setupError,
} from "./realtime-errors.js";
import { CallAudio, checkBrowser, openMicrophone, stopTracks } from "./realtime-media.js";
import { CallRequests, getCredentials, sessionConfig } from "./realtime-session.js";
import { WebRTCTransport } from "./realtime-webrtc.js";
import { WebSocketTransport } from "./realtime-websocket.js";

export { DEFAULT_MODEL, DEFAULT_TRANSCRIPTION_MODEL, DEFAULT_VOICE } from "./realtime-defaults.js";
export { ErrorCode, RealtimeClientError } from "./realtime-errors.js";
export { MIC_CONSTRAINTS } from "./realtime-media.js";
export { WebRTCTransport } from "./realtime-webrtc.js";
export { WebSocketTransport } from "./realtime-websocket.js";

/** Auto mode: how long WebRTC may take to connect (after the relay's answer) before the WebSocket is tried. */
export const DEFAULT_WEBRTC_TIMEOUT_MS = 5000;

/** What carries the call, as the page names it: "webrtc-udp", "webrtc-tcp" or "websocket" (the relay's snapshot says udp, tcp, turn-udp/-tcp/-tls or websocket). */
export async function transportKind(transport) {
  if (!transport) return null;
  if (typeof transport.kind === "string") return transport.kind;
  const pc = transport.peerConnection;
  if (!pc) return null;
  try {
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((stats) => byId.set(stats.id, stats));
    let pair = null;
    report.forEach((stats) => {
      if (stats.type === "transport" && stats.selectedCandidatePairId) pair = byId.get(stats.selectedCandidatePairId);
    });
    if (!pair) report.forEach((stats) => {
      if (!pair && stats.type === "candidate-pair" && stats.nominated && stats.state === "succeeded") pair = stats;
    });
    const remote = pair && byId.get(pair.remoteCandidateId);
    return remote && remote.protocol === "tcp" ? "webrtc-tcp" : "webrtc-udp";
  } catch {
    return "webrtc";
  }
}

/**
 * The `transport` option "auto" (the default): WebRTC, which tries UDP then ICE-TCP on the relay's
 * port by itself; if it does not connect within `webrtcTimeoutMs` after the relay answered (UDP and
 * that port blocked: a proxy that passes only HTTPS), that call is hung up and the same key opens the
 * call over a WebSocket. "webrtc" and "websocket" force one. Events of the transport given up are
 * never passed on.
 *
 * @implements {import("./realtime-transport.js").RealtimeTransport}
 */
export class AutoTransport {
  constructor(choice = "auto", webrtcTimeoutMs = DEFAULT_WEBRTC_TIMEOUT_MS) {
    this.choice = choice;
    this.webrtcTimeoutMs = webrtcTimeoutMs;
    /** The transport carrying the call (or trying to). */
    this.current = null;
    /** Whether WebRTC was given up for the WebSocket. */
    this.fellBack = false;
    this._closed = false;
    this._muted = false;
  }

  get peerConnection() { return this.current?.peerConnection ?? null; }
  get kind() { return this.current?.kind; }

  isSupported() {
    const rtc = new WebRTCTransport().isSupported();
    const ws = new WebSocketTransport().isSupported();
    return this.choice === "webrtc" ? rtc : this.choice === "websocket" ? ws : rtc || ws;
  }

  async start(options) {
    const rtcSupported = new WebRTCTransport().isSupported();
    if (this.choice === "websocket" || (this.choice === "auto" && !rtcSupported)) {
      return this._run(new WebSocketTransport(), options);
    }
    if (this.choice === "webrtc") return this._run(new WebRTCTransport(), options);
    const rtc = new WebRTCTransport();
    const bounded = Math.min(options.options.connectTimeoutMs || Infinity, this.webrtcTimeoutMs);
    try {
      return await this._run(rtc, { ...options, options: { ...options.options, connectTimeoutMs: bounded } });
    } catch (err) {
      if (this._closed || !(err instanceof RealtimeClientError) || err.code !== ErrorCode.CONNECTION_FAILED) throw err;
      console.info("realtime-client: WebRTC did not connect; trying the WebSocket", err.message);
    }
    this.fellBack = true;
    // Hang the WebRTC call up first (briefly: a per-key call limit would count it).
    await Promise.race([rtc.close(), new Promise((resolve) => setTimeout(resolve, 1000))]);
    if (this._closed) throw new Aborted();
    return this._run(new WebSocketTransport(), options);
  }

  _run(transport, options) {
    this.current = transport;
    const events = {};
    for (const [name, handler] of Object.entries(options.events)) {
      events[name] = (...args) => {
        if (this.current === transport && !this._closed) handler(...args);
      };
    }
    if (this._muted) transport.setMuted(true);
    return transport.start({ ...options, events });
  }

  send(event) { return this.current ? this.current.send(event) : false; }

  setMuted(muted) {
    this._muted = muted;
    this.current?.setMuted(muted);
  }

  stats() { return this.current ? this.current.stats() : Promise.resolve(null); }

  close(options) {
    this._closed = true;
    return this.current ? this.current.close(options) : Promise.resolve();
  }
}

function makeTransport(o) {
  if (typeof o.transport === "function") return o.transport(o);
  // Direct mode calls OpenAI itself, whose WebSocket is another protocol: WebRTC only.
  if (o.mode === "direct") return new AutoTransport("webrtc");
  const choice = ["webrtc", "websocket"].includes(o.transport) ? o.transport : "auto";
  return new AutoTransport(choice, o.webrtcTimeoutMs ?? DEFAULT_WEBRTC_TIMEOUT_MS);
}

/**
 * A voice call through realtime-relay (or straight to OpenAI in direct mode).
 *
 * State is read from `client.state` (a frozen snapshot replaced on every change) or the getters
 * (`isConnected`, `isRecording`, `userTranscript`, `agentTranscript`, ...); `subscribe(fn)` is called
 * with each new snapshot. Methods never throw for call failures: they report through `onError`,
 * `state.error` and an `"error"` event, and `connect()` resolves to whether the call is up.
 */
export class RealtimeVoiceClient extends EventTarget {
  constructor(options = {}) {
    super();
    /** @type {Record<string, any>} the options in force (see realtime-defaults.js) */
    this.options = { ...DEFAULT_OPTIONS };
    this.setOptions(options);
    /** @type {Readonly<Record<string, any>>} the current snapshot (see INITIAL_STATE) */
    this.state = INITIAL_STATE;
    this._listeners = new Set();
    /** Counts the calls begun and given up: a set-up that sees it change stops. */
    this._generation = 0;
    this._audio = new CallAudio();
    /** The transport of the current call, or null. */
    this._transport = null;
    this._requests = null;
    this._conversation = new Conversation({
      state: () => this.state,
      setState: (patch) => this._set(patch),
      report: (error) => this._report(error),
      notify: (name, ...args) => this._notify(name, ...args),
      send: (event) => this.sendEvent(event),
      options: () => this.options,
    });
    this._onPageHide = () => this._endCall({ status: "disconnected", keepalive: true });
  }

  /** Changes options; connection options apply to the next `connect()`. Undefined values are ignored. */
  setOptions(options = {}) {
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined) this.options[key] = value;
    }
  }

  // ---- state ---------------------------------------------------------------------------------

  get isConnected() { return this.state.isConnected; }
  get isConnecting() { return this.state.isConnecting; }
  /** The connection failed and the client is reconnecting to the same call (`isConnected` stays true). */
  get isReconnecting() { return this.state.isReconnecting; }
  get isRecording() { return this.state.isRecording; }
  get isSpeaking() { return this.state.isSpeaking; }
  get userTranscript() { return this.state.userTranscript; }
  get agentTranscript() { return this.state.agentTranscript; }
  get messages() { return this.state.messages; }
  get error() { return this.state.error; }
  get status() { return this.state.status; }
  get callId() { return this.state.callId; }
  /** What carries the call: "webrtc-udp", "webrtc-tcp", "websocket" (null before it is up). */
  get transport() { return this.state.transport ?? null; }
  /** The RTCPeerConnection of the current call (for getStats), or null. */
  get peerConnection() { return this._transport?.peerConnection ?? null; }
  /** The <audio> element that plays the agent, or null before the first call. */
  get audioElement() { return this._audio.element; }

  /** Calls `listener(state)` on every change; returns the unsubscribe function. */
  subscribe(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  getState() {
    return this.state;
  }

  _set(patch) {
    this.state = Object.freeze({ ...this.state, ...patch });
    for (const listener of [...this._listeners]) {
      try {
        listener(this.state);
      } catch (err) {
        console.error("realtime-client: state listener failed", err);
      }
    }
    this._notify("onStateChange", this.state);
    this.dispatchEvent(new CustomEvent("statechange", { detail: this.state }));
  }

  /** Calls the option callback `name` (onError, onTranscriptDelta, ...), if any; never throws. */
  _notify(name, ...args) {
    const fn = this.options[name];
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      console.error(`realtime-client: ${name} callback failed`, err);
    }
  }

  _report(error) {
    this._set({ error, ...(error.fatal ? { status: "error" } : {}) });
    this._notify("onError", error);
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
  }

  /** Forgets the last error (for example when the person dismisses it). */
  clearError() {
    if (this.state.error) this._set({ error: null, ...(this.state.status === "error" ? { status: "idle" } : {}) });
  }

  // ---- connect -------------------------------------------------------------------------------

  /** Starts a call. Resolves to true once the call is up, false if it failed (see `state.error`). */
  async connect() {
    if (this.state.isConnected || this.state.isConnecting) return this.state.isConnected;
    const generation = ++this._generation;
    this._conversation.reset();
    this._set({
      status: "connecting",
      isConnecting: true,
      isConnected: false,
      error: null,
      audioBlocked: false,
      isSpeaking: false,
      isAgentSpeaking: false,
      callId: null,
      transport: null,
      mode: this.options.mode === "direct" ? "direct" : "relay",
      model: this.options.model,
    });
    try {
      await this._setUpCall(() => generation !== this._generation);
      this._set({ status: "connected", isConnecting: false, isConnected: true, isRecording: true });
      globalThis.addEventListener?.("pagehide", this._onPageHide);
      return true;
    } catch (err) {
      const givenUp = err instanceof Aborted || generation !== this._generation;
      if (!givenUp) this._endCall({ status: "error", error: setupError(err) });
      return false;
    }
  }

  /** Microphone, key, transport; throws `Aborted` as soon as `givenUp()` says the call was given up. */
  async _setUpCall(givenUp) {
    const o = this.options;
    const transport = makeTransport(o);
    checkBrowser(transport.isSupported());
    const stream = await openMicrophone();
    if (givenUp()) {
      stopTracks(stream);
      throw new Aborted();
    }
    this._audio.attachMicrophone(stream);
    const requests = new CallRequests({ timeoutMs: o.requestTimeoutMs, direct: o.mode === "direct" });
    this._requests = requests;
    const { token, callsUrl } = await getCredentials(o, requests);
    if (givenUp()) throw new Aborted();
    this._transport = transport;
    await transport.start({
      url: callsUrl,
      token,
      stream,
      options: o,
      request: (url, init, what) => requests.fetch(url, init, what),
      events: this._transportEvents(transport),
    });
    if (givenUp()) throw new Aborted();
    this._set({ transport: await transportKind(transport) });
    if (givenUp()) throw new Aborted();
  }

  /** The transport's callbacks; they do nothing once `transport` is no longer the current one. */
  _transportEvents(transport) {
    const current = (handler) => (...args) => {
      if (this._transport === transport) handler(...args);
    };
    return {
      onOpen: current(() => this._onTransportOpen()),
      onEvent: current((event) => this._onServerEvent(event)),
      onRemoteAudio: current((stream) => this._showPlayback(this._audio.playAgent(stream, this.options.audioElement))),
      onCallId: current((callId) => this._set({ callId })),
      onEnd: current((code) => this._onTransportEnd(code)),
      onReconnecting: current(() => this._set({ status: "reconnecting", isReconnecting: true })),
      onReconnected: current(() => this._onReconnected(transport)),
    };
  }

  async _onReconnected(transport) {
    if (!this.state.isConnected) return;
    this._set({ status: "connected", isReconnecting: false });
    const kind = await transportKind(transport);
    if (this._transport === transport && kind) this._set({ transport: kind });
  }

  _onTransportOpen() {
    if (!this.options.sessionUpdateOnOpen) return;
    const session = sessionConfig(this.options);
    delete session.model; // the model is fixed by the key; GA refuses to change it
    // Only what this page chose: options left at their defaults must not overwrite what the app's
    // backend set when it minted the key (the relay locks those fields and refuses changes to them).
    if (this.options.voice === DEFAULT_OPTIONS.voice) delete session.audio.output;
    if (this.options.transcriptionModel === DEFAULT_OPTIONS.transcriptionModel) delete session.audio.input;
    if (!session.audio.input && !session.audio.output) delete session.audio;
    this._transport.send({ type: "session.update", session });
  }

  _onServerEvent(event) {
    this._notify("onEvent", event);
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
    this._conversation.handle(event);
  }

  _onTransportEnd(code) {
    if (!this.state.isConnected) return;
    this._endCall({ status: "error", error: callEnded(code, this._conversation.lastServerError) });
  }

  // ---- media ---------------------------------------------------------------------------------

  /** Follows a `play()` of the agent's audio: an autoplay refusal sets `audioBlocked` and is reported. */
  async _showPlayback(played) {
    const { ok, refusal } = await played;
    if (ok && this.state.audioBlocked) {
      const clear = this.state.error?.code === ErrorCode.AUTOPLAY_BLOCKED ? { error: null } : {};
      this._set({ audioBlocked: false, ...clear });
    }
    if (refusal) {
      this._set({ audioBlocked: true });
      this._report(autoplayBlocked(refusal));
    }
    return ok;
  }

  /** Starts the agent's audio after an autoplay block; call it from a click or key handler. */
  async enableAudio() {
    await this._audio.resume();
    return this._showPlayback(this._audio.play());
  }

  /** RMS level (0..1) of the microphone as sent: 0 while muted. */
  getMicLevel() {
    return this.state.isRecording ? this._audio.micLevel() : 0;
  }

  /** RMS level (0..1) of the agent's audio being played. */
  getOutputLevel() {
    return this._audio.outputLevel();
  }

  /** The transport's statistics (an RTCStatsReport with WebRTC), or null without a call. */
  async getStats() {
    return this._transport ? this._transport.stats() : null;
  }

  /** Mutes or unmutes the microphone (the relay then receives silence). Returns the new isRecording. */
  toggleRecording() {
    if (!this._transport || !this.state.isConnected) return this.state.isRecording;
    const recording = !this.state.isRecording;
    this._transport.setMuted(!recording);
    this._set({ isRecording: recording, ...(recording ? {} : { isSpeaking: false }) });
    return recording;
  }

  // ---- events --------------------------------------------------------------------------------

  /** Sends one client event (queued until the transport is open). Returns whether it was sent or queued. */
  sendEvent(event) {
    return this._transport ? this._transport.send(event) : false;
  }

  /** Sends a typed message and asks for a (spoken) answer. Returns whether it was sent. */
  sendMessage(text) {
    const content = String(text ?? "").trim();
    if (!content) return false;
    if (!this.state.isConnected) {
      this._report(
        new RealtimeClientError(ErrorCode.NOT_CONNECTED, "Start the call before sending a message.", { fatal: false }),
      );
      return false;
    }
    this._conversation.sendText(content);
    return true;
  }

  /** Empties `userTranscript`, `agentTranscript` and the conversation shown so far. */
  clearTranscripts() {
    this._conversation.clear();
  }

  // ---- disconnect ----------------------------------------------------------------------------

  /** Ends the call: hangs up on the relay, closes the connection and releases the microphone. */
  async disconnect() {
    await this._endCall({ status: "disconnected" });
  }

  /**
   * Ends the call from this side: gives up any set-up, stops the microphone and the agent's audio
   * now, shows `status` (and reports `error`), and resolves once the transport has hung up and closed.
   */
  _endCall({ status, error = null, keepalive = false }) {
    this._generation++;
    this._requests?.cancel();
    this._requests = null;
    const wasActive = this.state.isConnected || this.state.isConnecting;
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    this._conversation.stop();
    this._audio.release();
    const transport = this._transport;
    this._transport = null;
    const closed = transport ? transport.close({ keepalive }) : Promise.resolve();
    if (error) {
      this._set({ ...IDLE_FLAGS, status });
      this._report(error);
    } else if (wasActive) {
      this._set({ ...IDLE_FLAGS, status, error: null });
    }
    return closed;
  }
}

/** `createRealtimeClient(options)` is `new RealtimeVoiceClient(options)`. */
export function createRealtimeClient(options = {}) {
  return new RealtimeVoiceClient(options);
}

export default RealtimeVoiceClient;
