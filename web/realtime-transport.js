/**
 * realtime-transport.js: the contract between the call core (realtime-client.js) and what carries
 * a call to the server.
 *
 * The core owns all that does not depend on the wire: the state, the conversation, the key and the
 * endpoint, the microphone (captured before the key is fetched, so that a refused microphone is the
 * error shown) and the agent's playback. A transport carries one call: it takes the microphone and
 * the key, connects, sends client events, and hands back the server's events and the agent's audio.
 *
 * `WebRTCTransport` (realtime-webrtc.js) is the default. Another transport, for example over a
 * WebSocket (the microphone streamed on the socket, the agent's audio played from it, the
 * `oai-events` JSON on the same socket), implements the same contract and is plugged in with the
 * client's `transport` option: `new RealtimeVoiceClient({transport: () => new MyTransport()})`.
 * One transport object serves one call: the core asks the factory for a new one on each `connect()`.
 */

/**
 * What a transport reports to the core. None is called after `close()`.
 *
 * @typedef {object} TransportEvents
 * @property {() => void} onOpen  Events can flow: what `send()` sends now goes out at once. The core
 *   sends `session.update` here; the transport sends what it queued before open after this returns.
 * @property {(event: {type: string}) => void} onEvent  A server event, parsed (see `parseServerEvent`).
 * @property {(stream: MediaStream) => void} onRemoteAudio  The agent's audio, for the core to play.
 * @property {(callId: string) => void} onCallId  The server named the call.
 * @property {(code: string) => void} onEnd  After `start()` resolved, the call ended without `close()`:
 *   `ErrorCode.CALL_ENDED` (the server ended it) or `ErrorCode.CONNECTION_LOST`.
 * @property {() => void} [onReconnecting]  The connection failed and the transport is reconnecting to
 *   the same call (the relay keeps it for a grace period); `onReconnected` or `onEnd` follows.
 * @property {() => void} [onReconnected]  A new connection carries the same call; the server's events
 *   sent meanwhile follow, in order. `onOpen` is not called again.
 */

/**
 * What `start()` gets.
 *
 * @typedef {object} TransportStartOptions
 * @property {string} url  The endpoint: the relay's `/v1/realtime/calls`, or OpenAI's in direct mode.
 * @property {string} token  The client secret (`Authorization: Bearer ...`).
 * @property {MediaStream} stream  The microphone, captured with MIC_CONSTRAINTS; the core stops it.
 * @property {object} options  The client's options (iceServers, iceGatheringTimeoutMs, connectTimeoutMs, ...).
 * @property {(url: string, init: RequestInit, what: string) => Promise<Response>} request  `fetch`,
 *   bounded by `requestTimeoutMs` and cancelled by `disconnect()`: it rejects with a
 *   RealtimeClientError (`what` = "offer" picks the messages), or `Aborted`.
 * @property {TransportEvents} events
 */

/**
 * A transport: one call over one kind of connection.
 *
 * @typedef {object} RealtimeTransport
 * @property {() => boolean} isSupported  Whether this browser has what the transport needs.
 * @property {(options: TransportStartOptions) => Promise<void>} start  Connects. Resolves once events
 *   flow both ways (after `onOpen`); rejects with a RealtimeClientError, or with `Aborted` when
 *   `close()` was called meanwhile.
 * @property {(event: object) => boolean} send  Sends a client event (JSON), queued until open;
 *   false when it cannot be sent (not started, or closed).
 * @property {(muted: boolean) => void} setMuted  While muted the server receives silence.
 * @property {() => Promise<object | null>} stats  The transport's statistics (an RTCStatsReport for
 *   WebRTC), or null when there is no connection.
 * @property {(options?: {keepalive?: boolean}) => Promise<void>} close  Hangs up and releases the
 *   connection (not the microphone); `keepalive` when the page is going away. Safe to call twice.
 * @property {RTCPeerConnection | null} [peerConnection]  WebRTC only: the connection, or null.
 */

/** Reconnect attempts (realtime-webrtc.js, realtime-websocket.js): the first wait between two,
 * doubled up to the max, cut short when the browser comes back online. */
export const RESUME_BACKOFF_MS = 250;
export const RESUME_BACKOFF_MAX_MS = 1000;

export /** Resolves after `ms`, or as soon as the browser says it is back online. */
function sleepUnlessOnline(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      globalThis.removeEventListener?.("online", done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    globalThis.addEventListener?.("online", done);
  });
}

/**
 * Reconnect attempts until one says "resumed" or "gone", `stopped()`, or `deadline` (ms since the
 * epoch) passes: `attempt(deadline)` resolves to "resumed", "gone" or "retry". Resolves to the last.
 */
export async function retryUntil(deadline, attempt, stopped) {
  let wait = RESUME_BACKOFF_MS;
  let outcome = "retry";
  while (!stopped() && Date.now() < deadline) {
    outcome = await attempt(deadline);
    if (outcome !== "retry") break;
    await sleepUnlessOnline(Math.min(wait, deadline - Date.now()));
    wait = Math.min(wait * 2, RESUME_BACKOFF_MAX_MS);
  }
  return outcome;
}

/** A server event from its JSON text; null (with a warning) when it is not one. */
export function parseServerEvent(data) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    console.warn("realtime-client: ignored a non-JSON event");
    return null;
  }
  return event && typeof event.type === "string" ? event : null;
}
