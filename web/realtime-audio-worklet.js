/**
 * realtime-audio-worklet.js: the AudioWorklet processors of the WebSocket transport
 * (realtime-websocket.js). Loaded with `audioWorklet.addModule()`; no imports.
 *
 * The wire format both ways is PCM16 little-endian, 24 kHz mono, 20 ms (480 samples) a frame.
 * The audio context may run at another rate (the browser's choice): both processors resample
 * linearly between it and 24 kHz.
 *
 * - "relay-capture": the microphone -> 480-sample Int16 frames, posted to the port (muted: zeros,
 *   so the relay keeps hearing a live caller).
 * - "relay-playback": Int16 frames from the port -> the output, through a small adaptive playout
 *   buffer: it starts once `targetMs` is buffered, re-buffers after running dry, and drops the
 *   oldest audio when more than `maxMs` piles up (latency stays bounded). `{type: "clear"}` empties
 *   it (barge-in). It posts `{type: "position", index, played, buffered, underruns, dropped, cleared}`
 *   (24 kHz samples; `index`: how much of the stream was consumed, played or not) about every
 *   100 ms, and at each clear (`cleared: true`, with the position before it).
 */

const WIRE_RATE = 24000;
const FRAME = 480;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = WIRE_RATE / sampleRate; // output samples per input sample
    this.phase = 0; // position of the next output sample, in input samples from `last`
    this.last = 0;
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.muted = false;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "mute") this.muted = Boolean(event.data.muted);
    };
  }

  push(sample) {
    const clipped = Math.max(-1, Math.min(1, this.muted ? 0 : sample));
    this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === FRAME) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    if (sampleRate === WIRE_RATE) {
      for (let i = 0; i < input.length; i++) this.push(input[i]);
      return true;
    }
    // Linear interpolation between the previous sample and the current ones.
    const inc = 1 / this.step;
    let pos = this.phase;
    while (pos < input.length) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i === 0 ? this.last : input[i - 1];
      const b = input[i];
      this.push(a + (b - a) * frac);
      pos += inc;
    }
    this.phase = pos - input.length;
    this.last = input[input.length - 1];
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.target = Math.round(((o.targetMs || 80) / 1000) * WIRE_RATE);
    this.max = Math.round(((o.maxMs || 300) / 1000) * WIRE_RATE);
    this.frames = []; // Int16Array frames at 24 kHz
    this.offset = 0; // read position in frames[0]
    this.buffered = 0; // samples queued (24 kHz)
    this.playing = false;
    this.played = 0; // 24 kHz samples played since the start
    this.index = 0; // samples of the stream consumed: played, dropped or cleared
    this.underruns = 0;
    this.dropped = 0;
    this.step = WIRE_RATE / sampleRate; // 24 kHz samples per output sample
    this.pos = 0; // fractional read position between `prev` and the next sample
    this.prev = 0;
    this.next = 0;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(data) {
    if (data instanceof ArrayBuffer) {
      const frame = new Int16Array(data);
      this.frames.push(frame);
      this.buffered += frame.length;
      while (this.buffered > this.max && this.frames.length > 1) {
        const oldest = this.frames.shift();
        this.buffered -= oldest.length - this.offset;
        this.dropped += oldest.length - this.offset;
        this.index += oldest.length - this.offset;
        this.offset = 0;
      }
    } else if (data && data.type === "clear") {
      this.report(true); // where the stream was when it was cut
      this.index += this.buffered;
      this.frames = [];
      this.offset = 0;
      this.buffered = 0;
      this.playing = false;
    }
  }

  /** The next 24 kHz sample as a float, or null when the buffer is empty. */
  take() {
    while (this.frames.length && this.offset >= this.frames[0].length) {
      this.frames.shift();
      this.offset = 0;
    }
    if (!this.frames.length) return null;
    const value = this.frames[0][this.offset++] / 0x8000;
    this.buffered--;
    this.played++;
    this.index++;
    return value;
  }

  report(cleared = false) {
    this.sinceReport = 0;
    this.port.postMessage({
      type: "position",
      cleared,
      index: this.index,
      played: this.played,
      buffered: this.buffered,
      underruns: this.underruns,
      dropped: this.dropped,
    });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered >= this.target) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (!this.playing) {
        out[i] = 0;
        continue;
      }
      this.pos += this.step;
      while (this.pos >= 1) {
        const sample = this.take();
        if (sample === null) {
          this.playing = false; // ran dry: wait for `target` again
          this.underruns++;
          break;
        }
        this.prev = this.next;
        this.next = sample;
        this.pos -= 1;
      }
      out[i] = this.playing ? this.prev + (this.next - this.prev) * this.pos : 0;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) this.report();
    return true;
  }
}

registerProcessor("relay-capture", CaptureProcessor);
registerProcessor("relay-playback", PlaybackProcessor);
