/**
 * realtime-websocket.js: the WebSocket transport of a call (the contract is in realtime-transport.js),
 * for networks where WebRTC does not get through (only HTTPS, through a proxy).
 *
 * One socket to the relay's `/v1/realtime/ws` carries the whole call, authorised like OpenAI's own
 * browser WebSocket: the subprotocols `realtime` and `openai-insecure-api-key.<client secret>`.
 *
 * - The microphone (captured by the core with the same constraints, so the browser's echo
 *   cancellation still applies) goes through an AudioWorklet (realtime-audio-worklet.js) that makes
 *   binary frames of PCM16, 24 kHz mono, 20 ms; muted, it sends silence.
 * - The agent arrives as the same frames, paced by the relay; an AudioWorklet plays them through a
 *   small adaptive playout buffer (80 ms, at most 300 ms) into a MediaStream that the core plays.
 * - `oai-events` JSON goes both ways as text frames. The relay says `relay.call` once the call is
 *   up: `start()` resolves then.
 * - Barge-in: when OpenAI clears its output, the queued agent audio is dropped here too, and the
 *   agent's item is truncated to what this browser actually played (`conversation.item.truncate`),
 *   when that is less than what OpenAI assumed.
 * - Closing the socket is the hang-up.
 * - Reconnect: `relay.call` brings the call's resume token. A socket that dies without a close from
 *   the relay (code other than 1000/1001) is replaced by a new one on `/v1/realtime/calls/{id}/resume`
 *   (subprotocol `relay-resume.<token>`), retried with a bounded backoff for `reconnectTimeoutMs`; the
 *   audio graph stays, the relay sends `relay.call` then the events it kept meanwhile.
 */
import { Aborted, ErrorCode, RealtimeClientError } from "./realtime-errors.js";
import { absoluteUrl } from "./realtime-session.js";
import { parseServerEvent, retryUntil } from "./realtime-transport.js";

const WIRE_RATE = 24000;
const WORKLET_URL = new URL("./realtime-audio-worklet.js", import.meta.url).href;
/** Playout buffer: start playing once this much is buffered; drop the oldest beyond the max. */
const PLAYOUT_TARGET_MS = 80;
const PLAYOUT_MAX_MS = 300;
/** After OpenAI cleared its output, how long to wait for its own truncation before sending ours. */
const TRUNCATE_WAIT_MS = 1000;
const RESUME_ATTEMPT_MS = 3000;
const MAX_OUTBOX = 1000;
const PROXY_ADVICE =
  "A proxy or firewall may block WebSockets to the relay: ask your administrator to allow " +
  "WebSocket (Upgrade) requests to this site, or open /check for a full diagnosis.";

/** `/v1/realtime/calls` (http[s]) -> `/v1/realtime/ws` (ws[s]). */
export function socketUrl(callsUrl, override) {
  const url = new URL(override || callsUrl.replace(/\/calls\/?$/, "/ws"), absoluteUrl(callsUrl));
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

/** `/v1/realtime/calls` -> `/v1/realtime/calls/{callId}/resume` (ws[s]). */
export function resumeSocketUrl(callsUrl, callId) {
  const url = new URL(`${callsUrl.replace(/\/+$/, "")}/${encodeURIComponent(callId)}/resume`, absoluteUrl(callsUrl));
  url.protocol = url.protocol === "http:" ? "ws:" : url.protocol === "https:" ? "wss:" : url.protocol;
  return url.href;
}

/** The RealtimeClientError of a relay `error` event that ended the set-up. */
function setupFailure(event) {
  const error = event?.error || {};
  const code = {
    upstream_error: ErrorCode.UPSTREAM_UNREACHABLE,
    upstream_auth_failed: ErrorCode.UPSTREAM_UNREACHABLE,
    upstream_timeout: ErrorCode.UPSTREAM_TIMEOUT,
    relay_overloaded: ErrorCode.RELAY_BUSY,
  }[error.code] || ErrorCode.RELAY_ERROR;
  return new RealtimeClientError(code, `The relay could not set the call up: ${error.message || "unknown error"}`, {
    detail: error,
  });
}

/**
 * One call over a WebSocket.
 *
 * @implements {import("./realtime-transport.js").RealtimeTransport}
 */
export class WebSocketTransport {
  constructor() {
    /** No RTCPeerConnection on this transport. */
    this.peerConnection = null;
    /** The transport's name, as `call.snapshot()["transport"]` says it. */
    this.kind = "websocket";
    this._ws = null;
    this._context = null;
    this._capture = null;
    this._playback = null;
    this._events = {};
    this._outbox = [];
    this._early = [];
    this._open = false;
    this._closed = false;
    this._closing = null;
    this._failSetup = null;
    this._muted = false;
    this._counters = { framesSent: 0, framesReceived: 0, samplesReceived: 0 };
    this._position = { index: 0, played: 0, buffered: 0, underruns: 0, dropped: 0 };
    this._agentItem = null; // {id, start: stream index of its first sample, playedMs}
    this._truncateTimer = null;
    this._remote = null;
    this._setUp = null;
    this._lastError = null;
    this._resume = null; // {callsUrl, callId, token, timeoutMs}
    this._reconnecting = null;
  }

  isSupported() {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    return typeof WebSocket !== "undefined" && Boolean(Context) && typeof AudioWorkletNode !== "undefined";
  }

  /** @param {import("./realtime-transport.js").TransportStartOptions} options */
  async start(options) {
    try {
      await this._start(options);
    } catch (err) {
      throw this._closed ? new Aborted() : err;
    }
  }

  async _start({ url, token, stream, options, events }) {
    this._events = events;
    this._resume = { callsUrl: url, callId: null, token: null, timeoutMs: options.reconnectTimeoutMs || 0 };
    await this._startAudio(stream);
    this._throwIfClosed();
    const protocols = ["realtime", ...(token ? [`openai-insecure-api-key.${token}`] : [])];
    const ws = new WebSocket(socketUrl(url, options.websocketUrl), protocols);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    await this._callUp(ws, options.connectTimeoutMs || 15000);
  }

  _throwIfClosed() {
    if (this._closed) throw new Aborted();
  }

  /** The audio graph: microphone -> capture worklet -> socket; socket -> playback worklet -> stream. */
  async _startAudio(stream) {
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    let context;
    try {
      context = new Context({ sampleRate: WIRE_RATE, latencyHint: "interactive" });
    } catch {
      context = new Context({ latencyHint: "interactive" }); // the worklets resample
    }
    this._context = context;
    await context.audioWorklet.addModule(WORKLET_URL);
    if (context.state === "suspended") context.resume().catch(() => {});
    const capture = new AudioWorkletNode(context, "relay-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
    capture.port.onmessage = (event) => this._sendAudio(event.data);
    context.createMediaStreamSource(stream).connect(capture);
    // Connected (silently) to the speakers, so that every browser keeps pulling it.
    const silent = context.createGain();
    silent.gain.value = 0;
    capture.connect(silent).connect(context.destination);
    this._capture = capture;
    const playback = new AudioWorkletNode(context, "relay-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetMs: PLAYOUT_TARGET_MS, maxMs: PLAYOUT_MAX_MS },
    });
    playback.port.onmessage = (event) => this._onPosition(event.data);
    const destination = context.createMediaStreamDestination();
    playback.connect(destination);
    this._playback = playback;
    this._remote = destination.stream;
  }

  /** Resolves on `relay.call`; rejects on a set-up error, a socket that fails, or after `timeoutMs`. */
  _callUp(ws, timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new RealtimeClientError(
              ErrorCode.CONNECTION_FAILED,
              `The WebSocket call to the relay did not come up within ${Math.round(timeoutMs / 1000)} s. ${PROXY_ADVICE}`,
            ),
          ),
        timeoutMs,
      );
      this._failSetup = (err) => {
        clearTimeout(timer);
        this._failSetup = null;
        reject(err);
      };
      this._setUp = () => {
        clearTimeout(timer);
        this._failSetup = null;
        resolve();
      };
      ws.addEventListener("message", (event) => this._onMessage(event.data));
      ws.addEventListener("close", (event) => ws === this._ws && this._onClose(event));
      ws.addEventListener("error", () => {}); // a close event follows
    });
  }

  _onMessage(data) {
    if (this._closed) return;
    if (data instanceof ArrayBuffer) {
      this._counters.framesReceived++;
      this._counters.samplesReceived += data.byteLength / 2;
      this._playback?.port.postMessage(data, [data]);
      return;
    }
    const event = parseServerEvent(data);
    if (!event) return;
    if (!this._open) {
      this._beforeOpen(event);
      return;
    }
    this._onServerEvent(event);
  }

  /** Until `relay.call`, server events wait (the core hears `onOpen` first), and an error ends the set-up. */
  _beforeOpen(event) {
    if (event.type === "relay.call") {
      this._open = true;
      this._resume.callId = event.call_id || null;
      this._resume.token = event.resume_token || null;
      if (event.call_id) this._emit("onCallId", event.call_id);
      this._emit("onRemoteAudio", this._remote);
      this._emit("onOpen");
      for (const text of this._outbox.splice(0)) this._ws.send(text);
      for (const early of this._early.splice(0)) this._onServerEvent(early);
      this._setUp?.();
    } else if (event.type === "error" && this._failSetup) {
      this._lastError = event;
      this._early.push(event);
    } else {
      this._early.push(event);
    }
  }

  _onServerEvent(event) {
    if (event.type === "relay.call") return;
    this._followAgent(event);
    this._emit("onEvent", event);
  }

  _onClose(event) {
    if (this._closed) return;
    if (this._failSetup) {
      this._failSetup(
        this._lastError
          ? setupFailure(this._lastError)
          : new RealtimeClientError(
              ErrorCode.CONNECTION_FAILED,
              `The WebSocket to the relay closed before the call was up (code ${event.code}). ${PROXY_ADVICE}`,
            ),
      );
      return;
    }
    const clean = event.code === 1000 || event.code === 1001;
    if (!clean && this._resume.token && this._resume.callId && this._resume.timeoutMs > 0) {
      this._reconnecting = this._reconnect();
      return;
    }
    this._emit("onEnd", clean ? ErrorCode.CALL_ENDED : ErrorCode.CONNECTION_LOST);
  }

  /** New sockets on the same call until one carries it, or `reconnectTimeoutMs` is over. */
  async _reconnect() {
    this._emit("onReconnecting");
    const deadline = Date.now() + this._resume.timeoutMs;
    const attempt = async (until) =>
      (await this._resumeOnce(Math.min(RESUME_ATTEMPT_MS, until - Date.now()))) ? "resumed" : "retry";
    const outcome = await retryUntil(deadline, attempt, () => this._closed);
    this._reconnecting = null;
    if (outcome === "resumed") {
      for (const text of this._outbox.splice(0)) this._ws.send(text);
      this._emit("onReconnected");
    } else {
      this._emit("onEnd", ErrorCode.CONNECTION_LOST);
    }
  }

  /** One new socket: resolves true once the relay's `relay.call` says it carries the call. */
  _resumeOnce(timeoutMs) {
    const { callsUrl, callId, token } = this._resume;
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(resumeSocketUrl(callsUrl, callId), ["realtime", `relay-resume.${token}`]);
      } catch {
        resolve(false);
        return;
      }
      ws.binaryType = "arraybuffer";
      const done = (ok) => {
        clearTimeout(timer);
        if (!ok && ws !== this._ws) ws.close();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      ws.addEventListener("message", (event) => {
        if (ws === this._ws) return this._onMessage(event.data);
        const first = typeof event.data === "string" ? parseServerEvent(event.data) : null;
        if (first?.type === "relay.call" && !this._closed) {
          this._ws = ws;
          done(true);
        } else done(false);
      });
      ws.addEventListener("close", (event) => (ws === this._ws ? this._onClose(event) : done(false)));
      ws.addEventListener("error", () => {}); // a close event follows
    });
  }

  _sendAudio(buffer) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this._closed || this._reconnecting) return;
    // A socket that cannot keep up (more than ~1 s queued) loses microphone audio, not latency.
    if (ws.bufferedAmount > WIRE_RATE * 2) return;
    ws.send(buffer);
    this._counters.framesSent++;
  }

  // ---- the agent's turn: barge-in and truncation ---------------------------------------------

  _followAgent(event) {
    if (event.type === "response.output_item.added" && event.item?.role === "assistant") {
      this._agentItem = { id: event.item.id, start: null, playedMs: null };
    } else if (event.type === "output_audio_buffer.started" && this._agentItem) {
      this._agentItem.start = this._counters.samplesReceived; // its audio follows
    } else if (event.type === "output_audio_buffer.cleared") {
      this._playback?.port.postMessage({ type: "clear" });
    } else if (event.type === "conversation.item.truncated" && event.item_id === this._agentItem?.id) {
      this._truncate(event.audio_end_ms);
    }
  }

  _onPosition(position) {
    if (!position || position.type !== "position") return;
    this._position = position;
    const item = this._agentItem;
    if (position.cleared && item && item.start !== null && item.playedMs === null) {
      item.playedMs = Math.max(0, Math.round(((position.index - item.start) / WIRE_RATE) * 1000));
      clearTimeout(this._truncateTimer);
      this._truncateTimer = setTimeout(() => this._truncate(null), TRUNCATE_WAIT_MS);
    }
  }

  /** Truncates the agent's item to what was played here, when OpenAI assumed more (`serverMs`). */
  _truncate(serverMs) {
    const item = this._agentItem;
    if (!item || item.playedMs === null || item.truncated) return;
    if (serverMs !== null && serverMs !== undefined && serverMs <= item.playedMs + 20) return;
    item.truncated = true;
    clearTimeout(this._truncateTimer);
    this.send({ type: "conversation.item.truncate", item_id: item.id, content_index: 0, audio_end_ms: item.playedMs });
  }

  _emit(name, ...args) {
    if (!this._closed) this._events[name]?.(...args);
  }

  // ---- the contract ----------------------------------------------------------------------------

  send(event) {
    const ws = this._ws;
    if (this._closed) return false;
    const text = JSON.stringify(event);
    if (ws && this._open && !this._reconnecting && ws.readyState === WebSocket.OPEN) ws.send(text);
    else if (
      !ws ||
      this._reconnecting ||
      ws.readyState === WebSocket.CONNECTING ||
      (!this._open && ws.readyState === WebSocket.OPEN)
    ) {
      this._outbox.push(text);
      if (this._outbox.length > MAX_OUTBOX) this._outbox.shift();
    } else return false;
    return true;
  }

  setMuted(muted) {
    this._muted = Boolean(muted);
    this._capture?.port.postMessage({ type: "mute", muted: this._muted });
  }

  /** Buffer depth and counters (there is no RTCStatsReport on this transport). */
  async stats() {
    if (!this._ws) return null;
    const p = this._position;
    return {
      type: "websocket",
      bufferedAmount: this._ws.bufferedAmount,
      playoutBufferMs: Math.round((p.buffered / WIRE_RATE) * 1000),
      playedMs: Math.round((p.played / WIRE_RATE) * 1000),
      underruns: p.underruns,
      droppedMs: Math.round((p.dropped / WIRE_RATE) * 1000),
      framesSent: this._counters.framesSent,
      framesReceived: this._counters.framesReceived,
      sampleRate: this._context?.sampleRate ?? null,
    };
  }

  /** Closes the socket (the relay ends the call) and the audio graph. Safe to call twice. */
  close() {
    if (!this._closing) this._closing = this._close();
    return this._closing;
  }

  async _close() {
    this._closed = true;
    clearTimeout(this._truncateTimer);
    this._failSetup?.(new Aborted());
    const ws = this._ws;
    this._ws = null;
    try {
      ws?.close(1000, "hangup");
    } catch {
      /* already closed */
    }
    try {
      this._capture?.disconnect();
      this._playback?.disconnect();
    } catch {
      /* already disconnected */
    }
    const context = this._context;
    this._context = null;
    if (context) await context.close().catch(() => {});
  }
}
