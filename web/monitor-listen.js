// Listen-in: PCM16 24 kHz over the call's listen WebSocket, played with WebAudio.

import { $, openSocket, probe } from "./monitor-common.js";

const RATE = 24000;
const LISTEN_LEAD_SECS = 0.08; // scheduling headroom against network jitter
const LISTEN_MAX_AHEAD_SECS = 0.5; // beyond this, drop audio rather than lag behind

let current = null; // { socket, context, analyser, nextTime }

export const isListening = () => current !== null;

export async function startListening(callId, track) {
  const context = new AudioContext({ sampleRate: RATE });
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.connect(context.destination);
  const socket = openSocket(
    `/api/calls/${encodeURIComponent(callId)}/listen?track=${track}&format=pcm16`,
  );
  socket.binaryType = "arraybuffer";
  const listen = { socket, context, analyser, nextTime: 0 };
  current = listen;
  socket.addEventListener("message", (e) => play(listen, e.data));
  socket.addEventListener("close", () => current === listen && stopListening());
  $("listen").setAttribute("aria-pressed", "true");
  $("listen").textContent = "Stop listening";
}

function play(listen, data) {
  const pcm = new Int16Array(data);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  const { context } = listen;
  const buffer = context.createBuffer(1, samples.length, RATE);
  buffer.copyToChannel(samples, 0);
  const now = context.currentTime;
  if (listen.nextTime - now > LISTEN_MAX_AHEAD_SECS) return; // catch up: drop this frame
  const at = Math.max(now + LISTEN_LEAD_SECS, listen.nextTime);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(listen.analyser);
  source.start(at);
  listen.nextTime = at + buffer.duration;
  probe.listenBytes += data.byteLength;
  probe.scheduledSecs += buffer.duration;
}

probe.listenLevel = () => {
  const analyser = current?.analyser;
  if (!analyser) return null;
  const samples = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(samples);
  const meanSquare = samples.reduce((sum, x) => sum + x * x, 0) / samples.length;
  return meanSquare > 0 ? 10 * Math.log10(meanSquare) : -100;
};

export function stopListening() {
  const listen = current;
  current = null;
  if (listen) {
    listen.socket.close();
    listen.context.close();
  }
  $("listen").setAttribute("aria-pressed", "false");
  $("listen").textContent = "Listen";
}
