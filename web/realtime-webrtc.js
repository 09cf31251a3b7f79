/**
 * realtime-webrtc.js: the WebRTC transport of a call (the contract is in realtime-transport.js).
 *
 * The relay's TURN credentials, if it hands any out, are fetched first (realtime-session.js). The
 * `oai-events` data channel is created before the offer (so that the offer has its
 * m=application section) and the microphone's track is added; the client waits for ICE gathering
 * (bounded: the relay has no trickle ICE) and POSTs the SDP to the calls URL. A 201 brings the answer
 * and `Location`, the call's URL: `POST {Location}/hangup` ends the call. The agent's audio arrives
 * as a remote track; the server's events, and the client's, go over the data channel.
 *
 * Reconnect: the relay's 201 also brings the call's resume token (`X-Relay-Resume-Token`). When the
 * connection fails (ICE "failed", "disconnected" for RESUME_AFTER_MS, the data channel closed under
 * it), the transport reports `onReconnecting` and attaches a new peer connection to the same call:
 * its offer goes to `POST {Location}/resume` with the token, retried with a bounded backoff for
 * `reconnectTimeoutMs` (the relay keeps the call for RELAY_CALLER_GRACE_SECS). The relay then sends
 * the events it kept meanwhile, in order; `onReconnected` follows. A 401/404 means the call is over.
 * Events sent meanwhile wait in the outbox. Without a token (direct mode) a failure ends the call.
 */
import { Aborted, ErrorCode, RealtimeClientError, httpError } from "./realtime-errors.js";
import { absoluteUrl, callIceServers } from "./realtime-session.js";
import { parseServerEvent, retryUntil } from "./realtime-transport.js";

/** How long a hang-up may take before the connection is closed anyway. */
const HANGUP_TIMEOUT_MS = 3000;
/** How long ICE may stay "disconnected" before the call counts as lost (as OpenAI's own SDK does). */
const RECOVERY_GRACE_MS = 5000;
/** With a resume token: how long ICE may stay "disconnected" before a new leg is attached. */
const RESUME_AFTER_MS = 1500;
/** The relay's header that carries the call's resume token (to this caller only). */
const RESUME_HEADER = "X-Relay-Resume-Token";
const RESUME_REQUEST_TIMEOUT_MS = 3000;
/** Back online after being offline: if no agent audio arrives within this long, the old path is gone. */
const PATH_CHECK_MS = 1000;
/** Client events kept while the call reconnects (the oldest dropped beyond). */
const MAX_OUTBOX = 1000;
const TURN_ADVICE =
  "Your network may block UDP: ask your administrator for a TURN server (the iceServers option), then try again.";

/** @typedef {import("./realtime-transport.js").RealtimeTransport} RealtimeTransport */
/** @typedef {import("./realtime-transport.js").TransportStartOptions} TransportStartOptions */

/** Resolves once ICE gathering is complete, or after `timeoutMs`. */
function iceGathered(pc, timeoutMs) {
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
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

/** `POST {callUrl}/hangup`: resolves to whether the server took it (false after 3 s at most). */
function hangUp(callUrl, token, keepalive) {
  if (!callUrl) return Promise.resolve(false);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let done;
  try {
    done = fetch(`${callUrl.replace(/\/+$/, "")}/hangup`, { method: "POST", headers, keepalive });
  } catch {
    return Promise.resolve(false);
  }
  const timeout = new Promise((resolve) => setTimeout(() => resolve(false), HANGUP_TIMEOUT_MS));
  return Promise.race([done.then((r) => r.ok, () => false), timeout]);
}

/** Audio packets received on `pc` so far (0 when unknown). */
async function inboundPackets(pc) {
  let packets = 0;
  try {
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") packets = r.packetsReceived || 0;
    });
  } catch {
    /* closed meanwhile */
  }
  return packets;
}

function closeQuietly(closable) {
  try {
    closable?.close();
  } catch {
    /* already closed */
  }
}

/**
 * One call over WebRTC.
 *
 * @implements {RealtimeTransport}
 */
export class WebRTCTransport {
  constructor() {
    /** The RTCPeerConnection of the call (for getStats), or null before start() and after close(). */
    this.peerConnection = null;
    this._channel = null;
    this._opened = null;
    this._outbox = [];
    this._micTrack = null;
    this._token = null;
    this._callUrl = null;
    this._events = {};
    this._established = false;
    this._closed = false;
    this._closing = null;
    this._failSetup = null;
    this._recoveryTimer = null;
    this._opens = 0;
    this._resumeToken = null;
    this._resume = null; // {stream, iceServers, options}: what a new leg needs
    this._reconnecting = null;
    this._resumeAbort = null;
    // Offline then online again: the relay may have given the old path up meanwhile (ICE would
    // take seconds to say so): unless agent audio flows again at once, reconnect now.
    this._wentOffline = false;
    this._onOffline = () => {
      this._wentOffline = true;
    };
    this._onOnline = () => {
      if (this._wentOffline) this._checkPath();
      this._wentOffline = false;
    };
  }

  isSupported() {
    return typeof RTCPeerConnection !== "undefined";
  }

  /** @param {TransportStartOptions} options */
  async start(options) {
    try {
      await this._start(options);
    } catch (err) {
      throw this._closed ? new Aborted() : err;
    }
  }

  async _start({ url, token, stream, options, request, events }) {
    this._events = events;
    this._token = token;
    // The relay's TURN credentials (when it has a TURN server) join the client's own ICE servers.
    const iceServers = await callIceServers(options, url, token, request);
    this._throwIfClosed();
    this._resume = { stream, iceServers, options };
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    const pc = this._connect(stream, iceServers);
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, options.iceGatheringTimeoutMs);
    this._throwIfClosed();
    const answer = await this._postOffer(url, pc.localDescription.sdp, request);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    this._throwIfClosed();
    await this._channelOpen(pc, options.connectTimeoutMs);
    this._established = true;
  }

  _throwIfClosed() {
    if (this._closed) throw new Aborted();
  }

  /** The peer connection, with the `oai-events` channel and the microphone's track. */
  _connect(stream, iceServers) {
    const pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    this.peerConnection = pc;
    pc.addEventListener("track", (event) => {
      if (pc !== this.peerConnection) return;
      const remote = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
      this._emit("onRemoteAudio", remote);
    });
    pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc));

    const channel = pc.createDataChannel("oai-events");
    this._channel = channel;
    this._opened = new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
    channel.addEventListener("open", () => channel === this._channel && this._onChannelOpen());
    channel.addEventListener("message", (event) => {
      const parsed = parseServerEvent(event.data);
      if (parsed) this._emit("onEvent", parsed);
    });
    channel.addEventListener("close", () => {
      if (channel === this._channel && this._established) this._lost(ErrorCode.CALL_ENDED);
    });

    this._micTrack = stream.getAudioTracks()[0];
    pc.addTrack(this._micTrack, stream);
    return pc;
  }

  /** POSTs the offer; returns the answer's SDP and keeps the call's URL (`Location`) for hang-up. */
  async _postOffer(url, sdp, request) {
    const init = {
      method: "POST",
      headers: { Authorization: `Bearer ${this._token}`, "Content-Type": "application/sdp" },
      body: sdp,
    };
    const response = await request(url, init, "offer");
    const location = response.ok && response.headers.get("Location");
    if (location) this._callUrl = new URL(location, absoluteUrl(url)).href;
    this._resumeToken = (response.ok && response.headers.get(RESUME_HEADER)) || null;
    if (this._closed) {
      // Closed while the offer was on its way: the call exists now, so end it.
      hangUp(this._callUrl, this._token, false);
      throw new Aborted();
    }
    if (response.status !== 201 && response.status !== 200) throw await httpError(response, "offer", absoluteUrl(url));
    if (location) this._emit("onCallId", location.split("/").filter(Boolean).pop());
    return response.text();
  }

  /** Resolves when the data channel opens; rejects on ICE failure, on close(), or after `timeoutMs`. */
  _channelOpen(pc, timeoutMs) {
    let timer;
    const failed = new Promise((_, reject) => {
      this._failSetup = reject;
      timer = setTimeout(
        () =>
          reject(
            new RealtimeClientError(
              ErrorCode.CONNECTION_FAILED,
              `The audio connection to the relay could not be established within ${Math.round(timeoutMs / 1000)} s ` +
                `(ICE state: ${pc.iceConnectionState}). ${TURN_ADVICE}`,
            ),
          ),
        timeoutMs,
      );
    });
    return Promise.race([this._opened, failed]).finally(() => {
      clearTimeout(timer);
      this._failSetup = null;
    });
  }

  _onChannelOpen() {
    if (this._closed) return;
    if (this._opens++ === 0) this._emit("onOpen"); // a resumed call's session is already set
    for (const text of this._outbox.splice(0)) this._channel.send(text);
  }

  _onConnectionState(pc) {
    if (this._closed || pc !== this.peerConnection) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this._recoveryTimer);
      this._recoveryTimer = null;
    } else if (state === "failed") {
      this._onFailed();
    } else if (state === "disconnected" && this._established && !this._recoveryTimer) {
      this._recoveryTimer = setTimeout(
        () => {
          this._recoveryTimer = null;
          if (pc === this.peerConnection && pc.connectionState !== "connected") this._lost(ErrorCode.CONNECTION_LOST);
        },
        this._resumable() ? RESUME_AFTER_MS : RECOVERY_GRACE_MS,
      );
    }
  }

  _onFailed() {
    if (this._failSetup) {
      this._failSetup(
        new RealtimeClientError(
          ErrorCode.CONNECTION_FAILED,
          `The audio connection to the relay failed (ICE). ${TURN_ADVICE}`,
        ),
      );
    } else if (this._established) {
      this._lost(ErrorCode.CONNECTION_LOST);
    }
  }

  /** After a network change: the call is lost if no agent audio arrives within PATH_CHECK_MS. */
  async _checkPath() {
    const pc = this.peerConnection;
    if (!this._established || !pc || this._reconnecting) return;
    const before = await inboundPackets(pc);
    await new Promise((resolve) => setTimeout(resolve, PATH_CHECK_MS));
    if (this._closed || !this._established || this._reconnecting || pc !== this.peerConnection) return;
    if ((await inboundPackets(pc)) <= before) this._lost(ErrorCode.CONNECTION_LOST);
  }

  _resumable() {
    return Boolean(this._resumeToken && this._callUrl && this._resume?.options.reconnectTimeoutMs > 0);
  }

  /** The connection failed: reconnect to the same call if the relay gave a token, else end. */
  _lost(code) {
    if (this._closed || this._reconnecting) return;
    if (!this._resumable()) {
      this._emit("onEnd", code);
      return;
    }
    clearTimeout(this._recoveryTimer);
    this._recoveryTimer = null;
    this._established = false;
    this._reconnecting = this._reconnect(code);
  }

  /** New legs until one carries the call, the relay says it is over, or time is up. */
  async _reconnect(code) {
    this._emit("onReconnecting");
    const old = this.peerConnection;
    const deadline = Date.now() + this._resume.options.reconnectTimeoutMs;
    const outcome = await retryUntil(deadline, (until) => this._resumeOnce(until), () => this._closed);
    this._reconnecting = null;
    if (old !== this.peerConnection) closeQuietly(old); // the relay has retired its leg
    if (outcome === "resumed") {
      this._established = true;
      this._emit("onReconnected");
    } else {
      this._emit("onEnd", outcome === "gone" ? ErrorCode.CALL_ENDED : code);
    }
  }

  /** One new leg: "resumed", "gone" (the call is over: 401/404) or "retry". */
  async _resumeOnce(deadline) {
    const { stream, iceServers, options } = this._resume;
    const pc = this._connect(stream, iceServers);
    const abort = new AbortController();
    this._resumeAbort = abort;
    const timer = setTimeout(() => abort.abort(), RESUME_REQUEST_TIMEOUT_MS);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, options.iceGatheringTimeoutMs);
      if (this._closed) return "gone";
      if (!/^a=candidate:/m.test(pc.localDescription.sdp)) return "retry"; // no network yet
      const response = await fetch(`${this._callUrl.replace(/\/+$/, "")}/resume`, {
        method: "POST",
        headers: { [RESUME_HEADER]: this._resumeToken, "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
        signal: abort.signal,
      });
      clearTimeout(timer);
      if (response.status === 401 || response.status === 404) return "gone";
      if (response.status !== 201) return "retry";
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      const left = Math.max(1000, deadline - Date.now());
      await this._channelOpen(pc, Math.min(options.connectTimeoutMs || left, left));
      return "resumed";
    } catch {
      return this._closed ? "gone" : "retry";
    } finally {
      clearTimeout(timer);
      this._resumeAbort = null;
      if (pc !== this.peerConnection || this._channel?.readyState !== "open") closeQuietly(pc);
    }
  }

  _emit(name, ...args) {
    if (!this._closed) this._events[name]?.(...args);
  }

  send(event) {
    const channel = this._channel;
    if (!channel || this._closed) return false;
    const text = JSON.stringify(event);
    if (channel.readyState === "open") channel.send(text);
    else if (channel.readyState === "connecting" || this._reconnecting) {
      this._outbox.push(text);
      if (this._outbox.length > MAX_OUTBOX) this._outbox.shift();
    } else return false;
    return true;
  }

  setMuted(muted) {
    if (this._micTrack) this._micTrack.enabled = !muted;
  }

  async stats() {
    return this.peerConnection ? this.peerConnection.getStats() : null;
  }

  /**
   * Hangs up, then closes the connection once the server has the hang-up (so that it ends the
   * call as a hang-up, not as a lost caller). Stops every event at once.
   */
  close({ keepalive = false } = {}) {
    if (!this._closing) this._closing = this._close(keepalive);
    return this._closing;
  }

  async _close(keepalive) {
    this._closed = true;
    clearTimeout(this._recoveryTimer);
    this._resumeAbort?.abort();
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    this._failSetup?.(new Aborted());
    const pc = this.peerConnection;
    const channel = this._channel;
    const callUrl = this._callUrl;
    this.peerConnection = null;
    this._channel = null;
    this._micTrack = null;
    this._callUrl = null;
    await hangUp(callUrl, this._token, keepalive);
    closeQuietly(channel);
    closeQuietly(pc);
  }
}
