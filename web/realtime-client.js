/**
 * realtime-client.js: the browser client of realtime-relay, without any framework.
 *
 * One `RealtimeVoiceClient` makes one voice call at a time:
 *
 *   1. gets a client secret: from the relay via the host app's token URL (relay mode, the default), or an
 *      OpenAI ephemeral key from `/api/realtime/session` (direct mode, for networks that may reach OpenAI);
 *   2. captures the microphone (echo cancellation, noise suppression and auto gain on; 24 kHz mono);
 *   3. creates the `oai-events` data channel, makes the offer, waits (bounded) for ICE gathering,
 *      and POSTs the SDP to `/v1/realtime/calls`; the answer comes back with a `Location` for hang-up;
 *   4. plays the agent's audio, turns OpenAI Realtime events into transcripts and a conversation,
 *      and reports every failure as a `RealtimeClientError` with an actionable message and a `code`;
 *   5. hangs up (`POST {Location}/hangup`) on `disconnect()`, on connection loss and when the page goes away.
 *
 * It keeps the original `useWebRTC` API: options `model`, `transcriptionModel`, `voice`,
 * `onTranscriptDelta`, `onTranscriptDone`, `onAgentResponse`, `onError`; state `isConnected`,
 * `isRecording`, `userTranscript`, `agentTranscript`; methods `connect`, `disconnect`,
 * `sendMessage(text)`, `toggleRecording`, `clearTranscripts`. See web/README.md.
 */

export const DEFAULT_MODEL = "gpt-realtime";
export const DEFAULT_TRANSCRIPTION_MODEL = "whisper-1";
export const DEFAULT_VOICE = "alloy";

/** The microphone constraints of every call (the relay expects speech-grade mono audio). */
export const MIC_CONSTRAINTS = Object.freeze({
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  sampleRate: 24000,
  channelCount: 1,
});

/** Every `code` a `RealtimeClientError` can carry. */
export const ErrorCode = Object.freeze({
  INSECURE_ORIGIN: "insecure_origin",
  UNSUPPORTED_BROWSER: "unsupported_browser",
  MIC_PERMISSION_DENIED: "mic_permission_denied",
  NO_MIC: "no_mic",
  MIC_BUSY: "mic_busy",
  RELAY_UNREACHABLE: "relay_unreachable",
  TOKEN_FAILED: "token_failed",
  UNAUTHORIZED: "unauthorized",
  UPSTREAM_UNREACHABLE: "upstream_unreachable",
  UPSTREAM_TIMEOUT: "upstream_timeout",
  RELAY_BUSY: "relay_busy",
  RATE_LIMITED: "rate_limited",
  DIRECT_MODE_DISABLED: "direct_mode_disabled",
  RELAY_ERROR: "relay_error",
  CONNECTION_FAILED: "connection_failed",
  CONNECTION_LOST: "connection_lost",
  CALL_ENDED: "call_ended",
  AUTOPLAY_BLOCKED: "autoplay_blocked",
  TRANSCRIPTION_MISSING: "transcription_missing",
  TRANSCRIPTION_FAILED: "transcription_failed",
  SERVER_ERROR: "server_error",
  NOT_CONNECTED: "not_connected",
});

/** A failure with a stable `code`, a message a person can act on, and the HTTP `status` if any. */
export class RealtimeClientError extends Error {
  constructor(code, message, { status = null, detail = null, fatal = true, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "RealtimeClientError";
    /** One of `ErrorCode`. */
    this.code = code;
    /** HTTP status of the failed request, or null. */
    this.status = status;
    /** The server's error object (OpenAI's envelope `error`), or null. */
    this.detail = detail;
    /** False when the call goes on (autoplay blocked, missing transcription, an `error` event). */
    this.fatal = fatal;
  }
}

const DEFAULT_OPTIONS = Object.freeze({
  model: DEFAULT_MODEL,
  transcriptionModel: DEFAULT_TRANSCRIPTION_MODEL,
  voice: DEFAULT_VOICE,
  /** Optional system instructions for the session. */
  instructions: undefined,
  /** "relay" (browser -> relay -> OpenAI) or "direct" (browser -> OpenAI with a key from the relay). */
  mode: "relay",
  /** Origin (and path prefix) of the relay; "" means the page's own origin. */
  baseUrl: "",
  /** The host app's backend route that returns a relay client secret `{value}`. */
  tokenUrl: "/api/demo/client_secret",
  /** Extra fetch options for the token request (headers, credentials). */
  tokenRequestInit: undefined,
  /** Instead of `tokenUrl`: `async ({session}) => "ek_..."` (or `{value}`). */
  getToken: undefined,
  /** Where the offer goes; defaults to `${baseUrl}/v1/realtime/calls` (direct: `${base_url}/realtime/calls`). */
  callsUrl: undefined,
  /** Direct mode: the route that hands out an OpenAI ephemeral key. */
  directSessionUrl: "/api/realtime/session",
  /** ICE servers for the browser (TURN for locked-down networks). Empty: no STUN, no TURN. */
  iceServers: [],
  /** aiortc has no trickle ICE: the offer waits this long at most for gathering to finish. */
  iceGatheringTimeoutMs: 2000,
  /** Bound on the whole set-up after the answer (ICE + DTLS + data channel open). */
  connectTimeoutMs: 15000,
  /** Bound on each HTTP request (token, offer). */
  requestTimeoutMs: 20000,
  /** A finished user turn without any transcription event after this long is reported. 0 disables. */
  transcriptionTimeoutMs: 10000,
  /** Send `session.update` (GA shape) when the data channel opens. */
  sessionUpdateOnOpen: true,
  /** An <audio> element to play the agent on; one is created when absent. */
  audioElement: undefined,
  onTranscriptDelta: undefined,
  onTranscriptDone: undefined,
  onAgentResponse: undefined,
  onError: undefined,
  /** Every server event, parsed: `(event) => void`. */
  onEvent: undefined,
  /** Every state change: `(state) => void`. */
  onStateChange: undefined,
});

const INITIAL_STATE = Object.freeze({
  /** "idle" | "connecting" | "connected" | "disconnected" | "error" */
  status: "idle",
  isConnecting: false,
  isConnected: false,
  /** The microphone is captured and not muted. */
  isRecording: false,
  /** The server's VAD hears the user (speech_started .. speech_stopped). */
  isSpeaking: false,
  /** The agent's audio is playing (output_audio_buffer.started .. stopped/cleared). */
  isAgentSpeaking: false,
  /** The latest transcribed user turn: grows with transcription deltas, settled by `completed`. */
  userTranscript: "",
  /** Whether `userTranscript` is settled (its `completed` event arrived). */
  userTranscriptFinal: true,
  /** The latest agent turn: grows with output transcript (or text) deltas. */
  agentTranscript: "",
  /** The conversation so far: `{id, role: "user"|"assistant", text, final, source, interrupted}`. */
  messages: Object.freeze([]),
  /** The last error (a RealtimeClientError), or null. */
  error: null,
  /** The agent's audio could not autoplay: call `enableAudio()` from a click. */
  audioBlocked: false,
  callId: null,
  mode: "relay",
  model: null,
});

const AGENT_DELTA_EVENTS = new Set([
  "response.output_audio_transcript.delta", // GA
  "response.audio_transcript.delta", // beta
  "response.output_text.delta", // GA, text-only responses
  "response.text.delta", // beta, text-only responses
]);
const AGENT_DONE_EVENTS = new Map([
  ["response.output_audio_transcript.done", "transcript"],
  ["response.audio_transcript.done", "transcript"],
  ["response.output_text.done", "text"],
  ["response.text.done", "text"],
]);

class Aborted extends Error {}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function joinUrl(base, path) {
  if (!base) return path;
  return base.replace(/\/+$/, "") + path;
}

function absoluteUrl(url) {
  try {
    return new URL(url, globalThis.location?.href).href;
  } catch {
    return url;
  }
}

/** Turns an HTTP failure into a RealtimeClientError with an actionable message. */
async function httpError(response, what, url) {
  let detail = null;
  let text = "";
  try {
    text = await response.text();
    const parsed = JSON.parse(text);
    detail = parsed && typeof parsed === "object" ? parsed.error ?? parsed : null;
  } catch {
    /* not JSON: keep the text */
  }
  const status = response.status;
  const said = (detail && (detail.message || detail.code)) || text.slice(0, 200) || response.statusText;
  const tail = said ? `: ${said}` : "";
  const opts = { status, detail };
  if (status === 401 || status === 403) {
    return new RealtimeClientError(
      ErrorCode.UNAUTHORIZED,
      `The relay refused the session key (HTTP ${status}${tail}). ` +
        "The key may have expired or be wrong: press Start to get a new one; if it keeps failing, " +
        "check the relay's API key in the app's backend.",
      opts,
    );
  }
  if (status === 502) {
    return new RealtimeClientError(
      ErrorCode.UPSTREAM_UNREACHABLE,
      `The relay could not reach the voice service (HTTP 502${tail}). ` +
        "This is on the server side: try again in a moment, or tell the operator.",
      opts,
    );
  }
  if (status === 504) {
    return new RealtimeClientError(
      ErrorCode.UPSTREAM_TIMEOUT,
      `The voice service did not answer the relay in time (HTTP 504${tail}). Try again in a moment.`,
      opts,
    );
  }
  if (status === 503) {
    return new RealtimeClientError(
      ErrorCode.RELAY_BUSY,
      `The relay is full or restarting (HTTP 503${tail}). Try again in a minute.`,
      opts,
    );
  }
  if (status === 429) {
    return new RealtimeClientError(
      ErrorCode.RATE_LIMITED,
      `Too many requests (HTTP 429${tail}). Wait a little, then try again.`,
      opts,
    );
  }
  if (what === "direct" && (status === 404 || status === 405)) {
    return new RealtimeClientError(
      ErrorCode.DIRECT_MODE_DISABLED,
      `Direct mode is not enabled on this server (HTTP ${status} from ${url}). ` +
        "Switch to relay mode, or ask the operator to enable direct sessions.",
      opts,
    );
  }
  if (what === "token" || what === "direct") {
    return new RealtimeClientError(
      ErrorCode.TOKEN_FAILED,
      `Could not get a session key from ${url} (HTTP ${status}${tail}). ` +
        "Check that the app's backend is running and allowed to mint keys, then try again.",
      opts,
    );
  }
  return new RealtimeClientError(
    ErrorCode.RELAY_ERROR,
    `The relay rejected the call (HTTP ${status}${tail}). Try again; if it persists, tell the operator.`,
    opts,
  );
}

function unreachable(url, cause, direct = false) {
  if (direct) {
    return new RealtimeClientError(
      ErrorCode.RELAY_UNREACHABLE,
      `Cannot reach the voice service at ${url} directly: this network (or the service) refuses the ` +
        "browser's request. Switch to relay mode, which only needs to reach this site.",
      { cause },
    );
  }
  return new RealtimeClientError(
    ErrorCode.RELAY_UNREACHABLE,
    `Cannot reach the relay at ${url}: the network request failed before any answer. ` +
      "Check your connection and that the relay is running, then try again.",
    { cause },
  );
}

function micError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new RealtimeClientError(
      ErrorCode.MIC_PERMISSION_DENIED,
      "Microphone access was denied. Allow the microphone for this site (the icon at the left of " +
        "the address bar, or the browser's site settings), then press Start again.",
      { cause: err },
    );
  }
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
    return new RealtimeClientError(
      ErrorCode.NO_MIC,
      "No microphone was found. Plug in or enable a microphone (and check the system's sound " +
        "settings), then press Start again.",
      { cause: err },
    );
  }
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
    return new RealtimeClientError(
      ErrorCode.MIC_BUSY,
      "The microphone could not be started: another app may be using it. Close that app (or pick " +
        "another microphone), then press Start again.",
      { cause: err },
    );
  }
  return new RealtimeClientError(
    ErrorCode.NO_MIC,
    `The microphone could not be opened (${name || "error"}: ${err && err.message}). Press Start to try again.`,
    { cause: err },
  );
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
    this.options = { ...DEFAULT_OPTIONS };
    this.setOptions(options);
    this.state = INITIAL_STATE;
    this._listeners = new Set();
    this._generation = 0;
    this._resetCall();
    this._onPageHide = () => this._hangup({ keepalive: true });
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
  get isRecording() { return this.state.isRecording; }
  get isSpeaking() { return this.state.isSpeaking; }
  get userTranscript() { return this.state.userTranscript; }
  get agentTranscript() { return this.state.agentTranscript; }
  get messages() { return this.state.messages; }
  get error() { return this.state.error; }
  get status() { return this.state.status; }
  get callId() { return this.state.callId; }
  /** The RTCPeerConnection of the current call (for getStats), or null. */
  get peerConnection() { return this._pc; }
  /** The <audio> element that plays the agent, or null before the first call. */
  get audioElement() { return this._audio; }

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
    this._call("onStateChange", this.state);
    this.dispatchEvent(new CustomEvent("statechange", { detail: this.state }));
  }

  _call(name, ...args) {
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
    this._call("onError", error);
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
    const check = () => {
      if (generation !== this._generation) throw new Aborted();
    };
    this._resetCall();
    const o = this.options;
    this._set({
      status: "connecting",
      isConnecting: true,
      isConnected: false,
      error: null,
      audioBlocked: false,
      isSpeaking: false,
      isAgentSpeaking: false,
      callId: null,
      mode: o.mode === "direct" ? "direct" : "relay",
      model: o.model,
    });
    try {
      this._checkEnvironment();
      const stream = await this._openMic();
      if (generation !== this._generation) {
        for (const track of stream.getTracks()) track.stop();
        throw new Aborted();
      }
      this._stream = stream;
      this._startAudioGraph();
      const { token, callsUrl } = await this._getCredentials();
      check();
      this._token = token;
      await this._call_(callsUrl, check);
      check();
      this._set({
        status: "connected",
        isConnecting: false,
        isConnected: true,
        isRecording: this._micTrack ? this._micTrack.enabled : false,
      });
      globalThis.addEventListener?.("pagehide", this._onPageHide);
      return true;
    } catch (err) {
      if (err instanceof Aborted) return false;
      const error =
        err instanceof RealtimeClientError
          ? err
          : new RealtimeClientError(ErrorCode.CONNECTION_FAILED, `The call could not be set up: ${err && err.message}`, {
              cause: err,
            });
      this._hangup({ keepalive: false });
      this._teardown();
      this._set({ ...this._idleFlags(), status: "error" });
      this._report(error);
      return false;
    }
  }

  _checkEnvironment() {
    if (globalThis.isSecureContext === false) {
      throw new RealtimeClientError(
        ErrorCode.INSECURE_ORIGIN,
        `Voice chat needs a secure page, and ${globalThis.location?.origin ?? "this page"} is not one: ` +
          "browsers only give the microphone to https:// pages (or localhost). Open this page over https://.",
      );
    }
    if (!globalThis.navigator?.mediaDevices?.getUserMedia || typeof RTCPeerConnection === "undefined") {
      throw new RealtimeClientError(
        ErrorCode.UNSUPPORTED_BROWSER,
        "This browser cannot make voice calls (no WebRTC or microphone API). Use a current Chrome, " +
          "Edge, Firefox or Safari.",
      );
    }
  }

  async _openMic() {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: { ...MIC_CONSTRAINTS } });
    } catch (err) {
      throw micError(err);
    }
  }

  _sessionConfig() {
    const o = this.options;
    const session = {
      type: "realtime",
      model: o.model,
      audio: {
        input: { transcription: o.transcriptionModel ? { model: o.transcriptionModel } : null },
        output: { voice: o.voice },
      },
    };
    if (o.instructions !== undefined) session.instructions = o.instructions;
    return session;
  }

  async _fetch(url, init, what) {
    const controller = new AbortController();
    this._abort = controller;
    const timer = setTimeout(() => controller.abort(), this.options.requestTimeoutMs);
    try {
      return await fetch(url, { ...init, signal: controller.signal });
    } catch (err) {
      if (controller.signal.aborted && this._abort === controller) {
        throw new RealtimeClientError(
          what === "offer" ? ErrorCode.UPSTREAM_TIMEOUT : ErrorCode.RELAY_UNREACHABLE,
          `No answer from ${absoluteUrl(url)} within ${Math.round(this.options.requestTimeoutMs / 1000)} s. ` +
            "Check your connection and that the relay is running, then try again.",
          { cause: err },
        );
      }
      if (this._abort !== controller) throw new Aborted();
      throw unreachable(absoluteUrl(url), err, what === "offer" && this.options.mode === "direct");
    } finally {
      clearTimeout(timer);
      if (this._abort === controller) this._abort = null;
    }
  }

  async _getCredentials() {
    const o = this.options;
    const session = this._sessionConfig();
    if (o.mode === "direct") {
      const url = joinUrl(o.baseUrl, o.directSessionUrl);
      const extra = o.tokenRequestInit || {};
      const response = await this._fetch(
        url,
        {
          method: "POST",
          ...extra,
          headers: { "Content-Type": "application/json", ...(extra.headers || {}) },
          body: JSON.stringify({ model: o.model, voice: o.voice, transcriptionModel: o.transcriptionModel, session }),
        },
        "direct",
      );
      if (!response.ok) throw await httpError(response, "direct", absoluteUrl(url));
      const body = await response.json();
      const token = body.client_secret?.value ?? body.value;
      if (!token) throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, `${url} returned no key.`);
      const base = body.base_url || "https://api.openai.com/v1";
      return { token, callsUrl: o.callsUrl || joinUrl(base, "/realtime/calls") };
    }
    let token;
    if (typeof o.getToken === "function") {
      try {
        token = await o.getToken({ session });
      } catch (err) {
        if (err instanceof RealtimeClientError) throw err;
        throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, `Could not get a session key: ${err && err.message}`, {
          cause: err,
        });
      }
      if (token && typeof token === "object") token = token.value ?? token.client_secret?.value;
    } else {
      const url = joinUrl(o.baseUrl, o.tokenUrl);
      const extra = o.tokenRequestInit || {};
      const response = await this._fetch(
        url,
        {
          method: "POST",
          ...extra,
          headers: { "Content-Type": "application/json", ...(extra.headers || {}) },
          body: JSON.stringify({ session }),
        },
        "token",
      );
      if (!response.ok) throw await httpError(response, "token", absoluteUrl(url));
      const body = await response.json();
      token = body.value ?? body.client_secret?.value;
    }
    if (!token) throw new RealtimeClientError(ErrorCode.TOKEN_FAILED, "The token URL returned no key (`value`).");
    return { token: String(token), callsUrl: o.callsUrl || joinUrl(o.baseUrl, "/v1/realtime/calls") };
  }

  async _call_(callsUrl, check) {
    const o = this.options;
    const pc = new RTCPeerConnection({ iceServers: o.iceServers || [] });
    this._pc = pc;
    const current = () => this._pc === pc;
    pc.addEventListener("track", (event) => current() && this._onTrack(event));
    pc.addEventListener("connectionstatechange", () => current() && this._onConnectionState());

    // The channel exists before the offer, so the offer has its m=application section.
    const channel = pc.createDataChannel("oai-events");
    this._channel = channel;
    const opened = new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
    channel.addEventListener("open", () => current() && this._onChannelOpen());
    channel.addEventListener("message", (event) => current() && this._onMessage(event.data));
    channel.addEventListener("close", () => current() && this._onChannelClose());

    this._micTrack = this._stream.getAudioTracks()[0];
    pc.addTrack(this._micTrack, this._stream);

    await pc.setLocalDescription(await pc.createOffer());
    await this._gathered(pc);
    check();

    const response = await this._fetch(
      callsUrl,
      {
        method: "POST",
        headers: { Authorization: `Bearer ${this._token}`, "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      },
      "offer",
    );
    check();
    if (response.status !== 201 && response.status !== 200) throw await httpError(response, "offer", absoluteUrl(callsUrl));
    const location = response.headers.get("Location");
    if (location) {
      this._callUrl = new URL(location, absoluteUrl(callsUrl)).href;
      this._set({ callId: location.split("/").filter(Boolean).pop() });
    }
    const answer = await response.text();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    check();

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new RealtimeClientError(
              ErrorCode.CONNECTION_FAILED,
              `The audio connection to the relay could not be established within ${Math.round(o.connectTimeoutMs / 1000)} s ` +
                `(ICE state: ${pc.iceConnectionState}). Your network may block UDP: ask your administrator for a ` +
                "TURN server (the iceServers option), then try again.",
            ),
          ),
        o.connectTimeoutMs,
      );
    });
    const failed = new Promise((_, reject) => {
      this._rejectSetup = reject;
    });
    try {
      await Promise.race([opened, timeout, failed]);
    } finally {
      clearTimeout(timer);
      this._rejectSetup = null;
    }
  }

  _gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onChange);
        resolve();
      };
      const onChange = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(done, this.options.iceGatheringTimeoutMs);
      pc.addEventListener("icegatheringstatechange", onChange);
    });
  }

  // ---- media ---------------------------------------------------------------------------------

  _startAudioGraph() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return;
    try {
      this._context = new Context();
      if (this._context.state === "suspended") this._context.resume().catch(() => {});
      this._micAnalyser = this._context.createAnalyser();
      this._micAnalyser.fftSize = 1024;
      this._context.createMediaStreamSource(this._stream).connect(this._micAnalyser);
    } catch (err) {
      console.warn("realtime-client: no level meter", err);
    }
  }

  _onTrack(event) {
    const stream = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
    if (!this._audio) {
      // No autoplay attribute: play() is called explicitly, so a refusal is seen and reported.
      this._audio = this.options.audioElement || document.createElement("audio");
      this._audio.setAttribute("playsinline", "");
    }
    // Chrome only decodes remote audio that is attached to a media element.
    this._audio.srcObject = stream;
    this._play();
    if (this._context && !this._outAnalyser) {
      try {
        this._outAnalyser = this._context.createAnalyser();
        this._outAnalyser.fftSize = 1024;
        this._context.createMediaStreamSource(stream).connect(this._outAnalyser);
      } catch (err) {
        console.warn("realtime-client: no output meter", err);
      }
    }
  }

  _play() {
    const audio = this._audio;
    if (!audio) return Promise.resolve(false);
    let result;
    try {
      result = audio.play();
    } catch (err) {
      result = Promise.reject(err);
    }
    return Promise.resolve(result).then(
      () => {
        if (this.state.audioBlocked) {
          const clear = this.state.error?.code === ErrorCode.AUTOPLAY_BLOCKED ? { error: null } : {};
          this._set({ audioBlocked: false, ...clear });
        }
        return true;
      },
      (err) => {
        if (err && err.name === "NotAllowedError" && audio.srcObject) {
          this._set({ audioBlocked: true });
          this._report(
            new RealtimeClientError(
              ErrorCode.AUTOPLAY_BLOCKED,
              "The browser blocked the agent's audio (autoplay). Press \u201cEnable audio\u201d to hear the agent.",
              { fatal: false, cause: err },
            ),
          );
        }
        return false;
      },
    );
  }

  /** Starts the agent's audio after an autoplay block; call it from a click or key handler. */
  async enableAudio() {
    if (this._context && this._context.state === "suspended") await this._context.resume().catch(() => {});
    return this._play();
  }

  _level(analyser) {
    if (!analyser) return 0;
    const data = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
    return Math.sqrt(sum / data.length);
  }

  /** RMS level (0..1) of the microphone as sent: 0 while muted. */
  getMicLevel() {
    return this.state.isRecording ? this._level(this._micAnalyser) : 0;
  }

  /** RMS level (0..1) of the agent's audio being played. */
  getOutputLevel() {
    return this._level(this._outAnalyser);
  }

  /** Mutes or unmutes the microphone (the relay then receives silence). Returns the new isRecording. */
  toggleRecording() {
    const track = this._micTrack;
    if (!track || !this.state.isConnected) return this.state.isRecording;
    track.enabled = !track.enabled;
    this._set({ isRecording: track.enabled, ...(track.enabled ? {} : { isSpeaking: false }) });
    return track.enabled;
  }

  // ---- events --------------------------------------------------------------------------------

  /** Sends one client event on `oai-events` (queued until the channel opens). */
  sendEvent(event) {
    const channel = this._channel;
    if (!channel) return false;
    const text = JSON.stringify(event);
    if (channel.readyState === "open") channel.send(text);
    else if (channel.readyState === "connecting") this._outbox.push(text);
    else return false;
    return true;
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
    this.sendEvent({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text: content }] },
    });
    this._localCounter += 1;
    this._upsertMessage(`local_${this._localCounter}`, { role: "user", text: content, final: true, source: "text" });
    this._requestResponse();
    return true;
  }

  /** Asks for a response, or queues the request behind the response in progress (OpenAI
   * refuses a second one with `conversation_already_has_active_response`). */
  _requestResponse() {
    const stale = this._pendingRequest && Date.now() - this._pendingSince > 15000;
    if (this._activeResponse || (this._pendingRequest && !stale)) {
      this._responseQueued = true;
      return;
    }
    this._requestCounter += 1;
    this._pendingSince = Date.now();
    this._pendingRequest = `client_response_create_${this._requestCounter}`;
    this.sendEvent({ type: "response.create", event_id: this._pendingRequest });
  }

  /** Empties `userTranscript`, `agentTranscript` and the conversation shown so far. */
  clearTranscripts() {
    this._messageIndex = new Map();
    this._set({ userTranscript: "", userTranscriptFinal: true, agentTranscript: "", messages: Object.freeze([]) });
  }

  _onChannelOpen() {
    const o = this.options;
    if (o.sessionUpdateOnOpen) {
      const session = this._sessionConfig();
      delete session.model; // the model is fixed by the key; GA refuses to change it
      const text = JSON.stringify({ type: "session.update", session });
      this._channel.send(text);
    }
    for (const text of this._outbox.splice(0)) this._channel.send(text);
  }

  _onChannelClose() {
    if (!this.state.isConnected || this._closing) return;
    this._endRemotely(
      new RealtimeClientError(
        ErrorCode.CALL_ENDED,
        this._lastServerError
          ? `The call was ended by the server: ${this._lastServerError}. Press Start to call again.`
          : "The call was ended by the server. Press Start to call again.",
      ),
    );
  }

  _onConnectionState() {
    const pc = this._pc;
    if (!pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this._graceTimer);
      this._graceTimer = null;
    } else if (state === "failed") {
      if (this._rejectSetup) {
        this._rejectSetup(
          new RealtimeClientError(
            ErrorCode.CONNECTION_FAILED,
            "The audio connection to the relay failed (ICE). Your network may block UDP: ask your administrator " +
              "for a TURN server (the iceServers option), then try again.",
          ),
        );
      } else if (this.state.isConnected) {
        this._endRemotely(
          new RealtimeClientError(
            ErrorCode.CONNECTION_LOST,
            "The connection to the relay was lost. Check your network, then press Start to call again.",
          ),
        );
      }
    } else if (state === "disconnected" && this.state.isConnected && !this._graceTimer) {
      // Give ICE a few seconds to recover, as OpenAI's own SDK does.
      this._graceTimer = setTimeout(() => {
        this._graceTimer = null;
        if (this._pc === pc && pc.connectionState !== "connected" && this.state.isConnected) {
          this._endRemotely(
            new RealtimeClientError(
              ErrorCode.CONNECTION_LOST,
              "The connection to the relay was lost. Check your network, then press Start to call again.",
            ),
          );
        }
      }, 5000);
    }
  }

  _endRemotely(error) {
    this._generation++;
    this._hangup({ keepalive: false });
    this._teardown();
    this._set({ ...this._idleFlags(), status: "error" });
    this._report(error);
  }

  _onMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      console.warn("realtime-client: ignored a non-JSON event");
      return;
    }
    if (!event || typeof event.type !== "string") return;
    this._call("onEvent", event);
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
    this._handle(event);
  }

  _handle(event) {
    const type = event.type;
    switch (type) {
      case "input_audio_buffer.speech_started":
        this._set({ isSpeaking: true });
        if (event.item_id) this._beginUserTurn(event.item_id);
        return;
      case "input_audio_buffer.speech_stopped":
        this._set({ isSpeaking: false });
        if (event.item_id) this._watchTranscription(event.item_id);
        return;
      case "input_audio_buffer.committed":
        if (event.item_id) {
          this._beginUserTurn(event.item_id);
          this._watchTranscription(event.item_id);
        }
        return;
      case "conversation.item.input_audio_transcription.delta": {
        const id = event.item_id;
        this._transcribed(id);
        const delta = event.delta || "";
        const text = (this._userText.get(id) || "") + delta;
        this._userText.set(id, text);
        this._upsertMessage(id, { role: "user", text, final: false, source: "voice" });
        this._transcriptItem = id;
        this._set({ userTranscript: text, userTranscriptFinal: false });
        this._call("onTranscriptDelta", delta, event);
        return;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const id = event.item_id;
        this._transcribed(id);
        const transcript = event.transcript ?? this._userText.get(id) ?? "";
        this._userText.set(id, transcript);
        this._userDone.add(id);
        this._upsertMessage(id, { role: "user", text: transcript, final: true, source: "voice" });
        // A late completion of an older turn does not replace a newer turn in progress.
        const current = this._transcriptItem;
        if (!current || current === id || this._userDone.has(current)) {
          this._transcriptItem = id;
          this._set({ userTranscript: transcript, userTranscriptFinal: true });
        }
        this._call("onTranscriptDone", transcript, event);
        return;
      }
      case "conversation.item.input_audio_transcription.failed": {
        const id = event.item_id;
        this._transcribed(id);
        this._upsertMessage(id, { role: "user", text: "", final: true, source: "voice", failed: true });
        const reason = event.error?.message || "unknown reason";
        this._report(
          new RealtimeClientError(
            ErrorCode.TRANSCRIPTION_FAILED,
            `Your last words could not be transcribed (${reason}). The agent may still have heard you; ` +
              "speak clearly and close to the microphone.",
            { fatal: false, detail: event.error ?? null },
          ),
        );
        return;
      }
      case "response.created":
        // (The pending request stays until response.done: this response may be one the server
        // started by itself, and then ours is refused with an error that names it.)
        this._activeResponse = event.response?.id || true;
        this._agentText = "";
        this._agentItem = null;
        this._set({ agentTranscript: "" });
        return;
      case "response.output_item.added":
        if (event.item?.role === "assistant" && event.item.id) this._agentItem = event.item.id;
        return;
      case "output_audio_buffer.started":
        this._set({ isAgentSpeaking: true });
        return;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        this._set({ isAgentSpeaking: false });
        return;
      case "response.done": {
        const response = event.response || {};
        const id = this._agentMessageId(event);
        const interrupted = response.status === "cancelled" || response.status === "incomplete";
        const text = this._agentText || this._responseText(response);
        if (text || interrupted) this._upsertMessage(id, { role: "assistant", text, final: true, interrupted });
        this._activeResponse = null;
        this._pendingRequest = null;
        this._call("onAgentResponse", text, response);
        if (this._responseQueued) {
          this._responseQueued = false;
          this._requestResponse();
        }
        return;
      }
      case "error": {
        const e = event.error || {};
        const ours = this._pendingRequest && (e.event_id === this._pendingRequest || !e.event_id);
        if (ours && e.code === "conversation_already_has_active_response") {
          // A response started on its own (server VAD) just before ours: ask again after it.
          this._pendingRequest = null;
          if (this._activeResponse) this._responseQueued = true;
          else this._requestResponse();
          return;
        }
        if (this._pendingRequest && e.event_id === this._pendingRequest) this._pendingRequest = null;
        this._lastServerError = e.message || e.code || "unknown error";
        this._report(
          new RealtimeClientError(ErrorCode.SERVER_ERROR, `The voice service reported an error: ${this._lastServerError}`, {
            fatal: false,
            detail: e,
          }),
        );
        return;
      }
      default:
        break;
    }
    if (AGENT_DELTA_EVENTS.has(type)) {
      this._agentText += event.delta || "";
      this._upsertMessage(this._agentMessageId(event), { role: "assistant", text: this._agentText, final: false });
      this._set({ agentTranscript: this._agentText });
    } else if (AGENT_DONE_EVENTS.has(type)) {
      const full = event[AGENT_DONE_EVENTS.get(type)];
      if (typeof full === "string" && full.length >= this._agentText.length) {
        this._agentText = full;
        this._upsertMessage(this._agentMessageId(event), { role: "assistant", text: full, final: false });
        this._set({ agentTranscript: full });
      }
    }
  }

  _agentMessageId(event) {
    return event.item_id || this._agentItem || `resp_${event.response_id || event.response?.id || "current"}`;
  }

  _responseText(response) {
    const parts = [];
    for (const item of response.output || []) {
      for (const c of item.content || []) parts.push(c.transcript || c.text || "");
    }
    return parts.join("");
  }

  _beginUserTurn(id) {
    if (!id || this._messageIndex.has(id)) return;
    this._upsertMessage(id, { role: "user", text: "", final: false, source: "voice" });
  }

  _watchTranscription(id) {
    const ms = this.options.transcriptionTimeoutMs;
    if (!ms || !this.options.transcriptionModel || this._transcriptionSeen.has(id) || this._watchdogs.has(id)) return;
    this._watchdogs.set(
      id,
      setTimeout(() => {
        this._watchdogs.delete(id);
        if (this._transcriptionSeen.has(id) || !this.state.isConnected) return;
        this._report(
          new RealtimeClientError(
            ErrorCode.TRANSCRIPTION_MISSING,
            `No transcript of your speech arrived within ${Math.round(ms / 1000)} s. The agent may still hear you; ` +
              "if it keeps happening, check that transcription is enabled for this session " +
              `(transcription model \u201c${this.options.transcriptionModel}\u201d).`,
            { fatal: false },
          ),
        );
      }, ms),
    );
  }

  _transcribed(id) {
    this._transcriptionSeen.add(id);
    const timer = this._watchdogs.get(id);
    if (timer) {
      clearTimeout(timer);
      this._watchdogs.delete(id);
    }
    if (this.state.error?.code === ErrorCode.TRANSCRIPTION_MISSING) this._set({ error: null });
  }

  _upsertMessage(id, fields) {
    const messages = [...this.state.messages];
    const index = this._messageIndex.get(id);
    if (index === undefined) {
      this._messageIndex.set(id, messages.length);
      messages.push(Object.freeze({ id, interrupted: false, ...fields }));
    } else {
      messages[index] = Object.freeze({ ...messages[index], ...fields });
    }
    this._set({ messages: Object.freeze(messages) });
  }

  // ---- disconnect ----------------------------------------------------------------------------

  /** Ends the call: hangs up on the relay, closes the connection and releases the microphone. */
  async disconnect() {
    this._generation++;
    if (this._abort) {
      const controller = this._abort;
      this._abort = null;
      controller.abort();
    }
    const hangup = this._hangup({ keepalive: false });
    const wasActive = this.state.isConnected || this.state.isConnecting;
    // The microphone and the agent's audio stop now; the connection closes once the relay
    // has the hang-up, so that it ends the call as a hang-up rather than a lost caller.
    const closeConnection = this._teardown({ deferClose: true });
    if (wasActive) this._set({ ...this._idleFlags(), status: "disconnected", error: null });
    await hangup;
    closeConnection();
  }

  _hangup({ keepalive }) {
    const url = this._callUrl;
    const token = this._token;
    this._callUrl = null;
    if (!url) return Promise.resolve(false);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    let done;
    try {
      done = fetch(`${url.replace(/\/+$/, "")}/hangup`, { method: "POST", headers, keepalive });
    } catch {
      return Promise.resolve(false);
    }
    return Promise.race([done.then((r) => r.ok, () => false), sleep(3000).then(() => false)]);
  }

  _idleFlags() {
    return { isConnecting: false, isConnected: false, isRecording: false, isSpeaking: false, isAgentSpeaking: false };
  }

  _resetCall() {
    this._pc = null;
    this._channel = null;
    this._stream = null;
    this._micTrack = null;
    this._token = null;
    this._callUrl = null;
    this._abort = null;
    this._outbox = [];
    this._transcriptItem = null;
    this._userText = new Map();
    this._userDone = new Set();
    this._agentText = "";
    this._agentItem = null;
    this._activeResponse = null;
    this._responseQueued = false;
    this._pendingRequest = null;
    this._requestCounter = this._requestCounter || 0;
    this._lastServerError = null;
    this._transcriptionSeen = new Set();
    this._watchdogs = new Map();
    this._graceTimer = null;
    this._rejectSetup = null;
    this._closing = false;
    this._localCounter = this._localCounter || 0;
    if (!this._messageIndex) this._messageIndex = new Map();
  }

  /** Releases the call's resources; the peer connection is closed now, or by the returned function. */
  _teardown({ deferClose = false } = {}) {
    this._closing = true;
    globalThis.removeEventListener?.("pagehide", this._onPageHide);
    clearTimeout(this._graceTimer);
    for (const timer of this._watchdogs?.values() ?? []) clearTimeout(timer);
    this._watchdogs = new Map();
    const channel = this._channel;
    const pc = this._pc;
    const close = () => {
      try {
        channel?.close();
      } catch {
        /* already closed */
      }
      try {
        pc?.close();
      } catch {
        /* already closed */
      }
    };
    for (const track of this._stream?.getTracks() ?? []) track.stop();
    if (this._audio) {
      this._audio.pause?.();
      this._audio.srcObject = null;
    }
    if (this._context) this._context.close().catch(() => {});
    this._context = null;
    this._micAnalyser = null;
    this._outAnalyser = null;
    this._pc = null;
    this._channel = null;
    this._stream = null;
    this._micTrack = null;
    if (!deferClose) close();
    return deferClose ? close : () => {};
  }
}

/** `createRealtimeClient(options)` is `new RealtimeVoiceClient(options)`. */
export function createRealtimeClient(options = {}) {
  return new RealtimeVoiceClient(options);
}

export default RealtimeVoiceClient;
