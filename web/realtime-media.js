/**
 * realtime-media.js: the audio of a call, whatever transport carries it: the microphone (captured
 * with the constraints the relay expects), the <audio> element that plays the agent (and what the
 * browser's autoplay policy says about it), and RMS level meters on both.
 */
import { insecureOrigin, micError, unsupportedBrowser } from "./realtime-errors.js";

/** The microphone constraints of every call (the relay expects speech-grade mono audio). */
export const MIC_CONSTRAINTS = Object.freeze({
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  sampleRate: 24000,
  channelCount: 1,
});

/** Throws the RealtimeClientError of a page that cannot call (`transportSupported`: the transport's check). */
export function checkBrowser(transportSupported) {
  if (globalThis.isSecureContext === false) throw insecureOrigin();
  if (!globalThis.navigator?.mediaDevices?.getUserMedia || !transportSupported) throw unsupportedBrowser();
}

/** The microphone, or a RealtimeClientError that says what to do. */
export async function openMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: { ...MIC_CONSTRAINTS } });
  } catch (err) {
    throw micError(err);
  }
}

export function stopTracks(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}

/** RMS (0..1) of what `analyser` hears now; 0 without one. */
function rms(analyser) {
  if (!analyser) return 0;
  const data = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(data);
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
  return Math.sqrt(sum / data.length);
}

/**
 * The audio side of the calls of one client: `attachMicrophone` and `playAgent` during a call,
 * `release()` after it. The <audio> element is chosen at the first call and kept.
 */
export class CallAudio {
  constructor() {
    /** The <audio> element that plays the agent, or null before the first call's audio. */
    this.element = null;
    /** The call's microphone stream, or null. */
    this.microphone = null;
    this._context = null;
    this._micMeter = null;
    this._outMeter = null;
  }

  /** Keeps the call's microphone (stopped by `release()`) and meters it. */
  attachMicrophone(stream) {
    this.microphone = stream;
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return;
    try {
      this._context = new Context();
      if (this._context.state === "suspended") this._context.resume().catch(() => {});
      this._micMeter = this._meter(stream);
    } catch (err) {
      console.warn("realtime-client: no level meter", err);
    }
  }

  _meter(stream) {
    const analyser = this._context.createAnalyser();
    analyser.fftSize = 1024;
    this._context.createMediaStreamSource(stream).connect(analyser);
    return analyser;
  }

  /**
   * Plays the agent's `stream` on the element (`element`, or a new one, at the first call); resolves
   * like `play()`.
   */
  playAgent(stream, element) {
    if (!this.element) {
      // No autoplay attribute: play() is called explicitly, so a refusal is seen and reported.
      this.element = element || document.createElement("audio");
      this.element.setAttribute("playsinline", "");
    }
    // Chrome only decodes remote audio that is attached to a media element.
    this.element.srcObject = stream;
    const played = this.play();
    if (this._context && !this._outMeter) {
      try {
        this._outMeter = this._meter(stream);
      } catch (err) {
        console.warn("realtime-client: no output meter", err);
      }
    }
    return played;
  }

  /**
   * (Re)starts the agent's audio. Resolves `{ok: true}`, or `{ok: false, refusal}` where `refusal`
   * is the browser's autoplay refusal (a NotAllowedError) when that is why, else null.
   */
  async play() {
    const audio = this.element;
    if (!audio) return { ok: false, refusal: null };
    try {
      await audio.play();
      return { ok: true, refusal: null };
    } catch (err) {
      const refused = err && err.name === "NotAllowedError" && audio.srcObject;
      return { ok: false, refusal: refused ? err : null };
    }
  }

  /** Resumes a suspended audio graph (from a click: browsers suspend it before any gesture). */
  async resume() {
    if (this._context && this._context.state === "suspended") await this._context.resume().catch(() => {});
  }

  micLevel() {
    return rms(this._micMeter);
  }

  outputLevel() {
    return rms(this._outMeter);
  }

  /** Stops the microphone and the agent's audio, and closes the meters. */
  release() {
    stopTracks(this.microphone);
    this.microphone = null;
    if (this.element) {
      this.element.pause?.();
      this.element.srcObject = null;
    }
    if (this._context) this._context.close().catch(() => {});
    this._context = null;
    this._micMeter = null;
    this._outMeter = null;
  }
}
