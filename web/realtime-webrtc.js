/**
 * realtime-webrtc.js: the WebRTC transport of a call (the contract is in realtime-transport.js).
 *
 * The relay's TURN credentials, if it hands any out, are fetched first (realtime-session.js). The
 * `oai-events` data channel is created before the offer (so that the offer has its
 * m=application section) and the microphone's track is added; the client waits for ICE gathering
 * (bounded: the relay has no trickle ICE) and POSTs the SDP to the calls URL. A 201 brings the answer
 * and `Location`, the call's URL: `POST {Location}/hangup` ends the call. The agent's audio arrives
 * as a remote track; the server's events, and the client's, go over the data channel.
 */
import { Aborted, ErrorCode, RealtimeClientError, httpError } from "./realtime-errors.js";
import { absoluteUrl, callIceServers } from "./realtime-session.js";
import { parseServerEvent } from "./realtime-transport.js";

/** How long a hang-up may take before the connection is closed anyway. */
const HANGUP_TIMEOUT_MS = 3000;
/** How long ICE may stay "disconnected" before the call counts as lost (as OpenAI's own SDK does). */
const RECOVERY_GRACE_MS = 5000;
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
      const remote = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
      this._emit("onRemoteAudio", remote);
    });
    pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc));

    const channel = pc.createDataChannel("oai-events");
    this._channel = channel;
    this._opened = new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
    channel.addEventListener("open", () => this._onChannelOpen());
    channel.addEventListener("message", (event) => {
      const parsed = parseServerEvent(event.data);
      if (parsed) this._emit("onEvent", parsed);
    });
    channel.addEventListener("close", () => this._established && this._emit("onEnd", ErrorCode.CALL_ENDED));

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
    this._emit("onOpen");
    for (const text of this._outbox.splice(0)) this._channel.send(text);
  }

  _onConnectionState(pc) {
    if (this._closed) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this._recoveryTimer);
      this._recoveryTimer = null;
    } else if (state === "failed") {
      this._onFailed();
    } else if (state === "disconnected" && this._established && !this._recoveryTimer) {
      this._recoveryTimer = setTimeout(() => {
        this._recoveryTimer = null;
        if (pc.connectionState !== "connected") this._emit("onEnd", ErrorCode.CONNECTION_LOST);
      }, RECOVERY_GRACE_MS);
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
      this._emit("onEnd", ErrorCode.CONNECTION_LOST);
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
    else if (channel.readyState === "connecting") this._outbox.push(text);
    else return false;
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
