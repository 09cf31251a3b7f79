/**
 * check.js: the connectivity check page (`GET /check`).
 *
 * From this browser, on this network, it tests each way a call reaches the relay, with round-trip
 * times: HTTPS (the page and `GET /api/check`, the relay's ICE and TLS facts), a WebSocket
 * (`/api/check` opened as a WebSocket: an echo), WebRTC over UDP and over TCP (`POST /api/check/webrtc`: a data channel
 * that echoes; the answer's candidates are cut down to one protocol per test), WebRTC through the relay's TURN
 * server when it hands one out (`POST /api/turn_credentials?optional=1`; relayed candidates only), the microphone
 * permission and audio output. It ends with a verdict and advice a network administrator can act on.
 * It talks to this site only. `window.relayCheck.done` resolves to the results (for tests).
 */
import { MIC_CONSTRAINTS } from "./realtime-media.js";

const ECHOES = 5;
const STEP_TIMEOUT_MS = 6000;
const $ = (id) => document.getElementById(id);

const median = (values) => {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.floor(sorted.length / 2)]);
};

const within = (promise, ms, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms))]);

async function checkHttps() {
  const secure = location.protocol === "https:";
  const ok = secure || globalThis.isSecureContext;
  const times = [];
  let facts = null;
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    const response = await within(fetch("/api/check", { cache: "no-store" }), STEP_TIMEOUT_MS, "GET /api/check");
    facts = await response.json();
    times.push(performance.now() - started);
  }
  return {
    ok,
    rttMs: median(times),
    facts,
    detail: secure
      ? `the page is served over HTTPS; GET /api/check ${median(times)} ms`
      : ok
        ? `a local page (${location.host}): browsers allow the microphone; GET /api/check ${median(times)} ms`
        : "the page is not HTTPS: browsers give it no microphone",
  };
}

function echoSocket() {
  const url = new URL("/api/check", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.href);
    const times = [];
    let sentAt = 0;
    const next = () => {
      if (times.length >= ECHOES) {
        ws.close();
        resolve({ ok: true, rttMs: median(times), detail: `${ECHOES} echoes, median ${median(times)} ms` });
        return;
      }
      sentAt = performance.now();
      ws.send(String(times.length));
    };
    ws.onopen = next;
    ws.onmessage = () => {
      times.push(performance.now() - sentAt);
      next();
    };
    ws.onclose = (event) => {
      if (times.length < ECHOES) reject(new Error(`the WebSocket closed (code ${event.code}) before ${ECHOES} echoes`));
    };
  });
}

async function checkWebSocket() {
  return within(echoSocket(), STEP_TIMEOUT_MS, "WebSocket");
}

/** The answer with only the candidates of `protocol` ("udp" or "tcp"). */
function onlyCandidates(sdp, protocol) {
  return sdp
    .split(/\r\n/)
    .filter((line) => !line.startsWith("a=candidate:") || (line.split(" ")[2] || "").toLowerCase() === protocol)
    .join("\r\n");
}

function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function checkWebRtc(protocol, configuration = { iceServers: [] }) {
  if (typeof RTCPeerConnection === "undefined") return { ok: false, detail: "this browser has no WebRTC" };
  const pc = new RTCPeerConnection(configuration);
  try {
    const channel = pc.createDataChannel("check");
    pc.addTransceiver("audio", { direction: "recvonly" }); // the relay answers only offers with audio
    const opened = new Promise((resolve) => channel.addEventListener("open", resolve, { once: true }));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const response = await within(
      fetch("/api/check/webrtc", { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp }),
      STEP_TIMEOUT_MS,
      "POST /api/check/webrtc",
    );
    if (!response.ok) throw new Error(`the relay answered HTTP ${response.status}`);
    const answer = onlyCandidates(await response.text(), protocol);
    if (!answer.includes("a=candidate:")) return { ok: false, detail: `the relay offers no ${protocol.toUpperCase()} candidate` };
    const started = performance.now();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await within(opened, STEP_TIMEOUT_MS, `WebRTC over ${protocol.toUpperCase()} (ICE state ${pc.iceConnectionState})`);
    const connectMs = Math.round(performance.now() - started);
    const times = [];
    for (let i = 0; i < ECHOES; i++) {
      const sentAt = performance.now();
      const echoed = new Promise((resolve) => channel.addEventListener("message", resolve, { once: true }));
      channel.send(String(i));
      await within(echoed, STEP_TIMEOUT_MS, "data channel echo");
      times.push(performance.now() - sentAt);
    }
    const via = configuration.iceTransportPolicy === "relay" ? ` via TURN over ${(await relayProtocol(pc)) || "?"}` : "";
    return { ok: true, rttMs: median(times), connectMs, detail: `connected${via} in ${connectMs} ms; echo median ${median(times)} ms` };
  } finally {
    pc.close();
  }
}

/** How this browser reaches its TURN server on the selected pair ("udp", "tcp", "tls"). */
async function relayProtocol(pc) {
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") {
      return stats.get(report.localCandidateId)?.relayProtocol || null;
    }
  }
  return null;
}

/** WebRTC through the TURN server the relay hands its web client (relayed candidates only). */
async function checkTurn() {
  const response = await within(
    fetch("/api/turn_credentials?optional=1", { method: "POST", cache: "no-store" }),
    STEP_TIMEOUT_MS,
    "POST /api/turn_credentials",
  );
  if (response.status === 204) return { ok: false, skipped: true, detail: "this relay hands out no TURN server" };
  if (response.status === 401) return { ok: false, skipped: true, detail: "TURN credentials need a key (calls get them with theirs)" };
  if (!response.ok) throw new Error(`POST /api/turn_credentials: HTTP ${response.status}`);
  const { ice_servers: iceServers } = await response.json();
  const result = await checkWebRtc("udp", { iceServers, iceTransportPolicy: "relay" });
  return { ...result, servers: iceServers.flatMap((server) => server.urls) };
}

async function checkMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) return { ok: false, detail: "no getUserMedia (the page must be HTTPS)" };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { ...MIC_CONSTRAINTS } });
    const label = stream.getAudioTracks()[0]?.label || "a microphone";
    for (const track of stream.getTracks()) track.stop();
    return { ok: true, detail: `allowed (${label})` };
  } catch (err) {
    return { ok: false, detail: `${err.name}: ${err.message}` };
  }
}

async function checkOutput() {
  const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
  if (!Context) return { ok: false, detail: "no Web Audio" };
  const context = new Context();
  try {
    const devices = (await navigator.mediaDevices?.enumerateDevices?.()) || [];
    const outputs = devices.filter((d) => d.kind === "audiooutput").length;
    const state = context.state;
    return {
      ok: true,
      warn: state === "suspended",
      detail: `audio ${state === "suspended" ? "waits for a click (autoplay policy)" : "can play"}; ${outputs || "unknown number of"} output device(s). Use "Play a test tone".`,
    };
  } finally {
    context.close().catch(() => {});
  }
}

const CHECKS = [
  ["https", "HTTPS", checkHttps],
  ["websocket", "WebSocket", checkWebSocket],
  ["webrtc_udp", "WebRTC over UDP", () => checkWebRtc("udp")],
  ["webrtc_tcp", "WebRTC over TCP", () => checkWebRtc("tcp")],
  ["turn", "WebRTC through TURN", checkTurn],
  ["microphone", "Microphone permission", checkMicrophone],
  ["output", "Audio output", checkOutput],
];

/** The verdict and the advice, from the results. */
export function verdict(results, host) {
  const r = (key) => results[key] || { ok: false };
  const facts = r("https").facts || {};
  const ice = facts.ice || {};
  const address = (ice.announced_addresses && ice.announced_addresses[0]) || host;
  const udp = ice.udp_ports ? `UDP ports ${ice.udp_ports[0]}-${ice.udp_ports[1]}` : "UDP (any port above 1024)";
  const tcpPort = ice.tcp_port || location.port || (location.protocol === "https:" ? 443 : 80);
  const advice = [];
  let level = "ok";
  let text;
  if (r("webrtc_udp").ok) {
    text = "Calls work with the best quality: WebRTC over UDP.";
  } else if (r("webrtc_tcp").ok) {
    level = "warn";
    text = "Calls work over WebRTC on TCP: UDP does not get through, which may cost quality on a lossy network.";
    advice.push(`Allow ${udp} from browsers to ${address} for the best call quality.`);
  } else if (r("turn").ok) {
    level = "warn";
    text = "Calls work over WebRTC through the TURN server: the relay itself is out of reach for media, so each call takes a detour.";
    advice.push(`Allow ${udp}, or TCP port ${tcpPort}, from browsers to ${address} for a direct path.`);
  } else if (r("websocket").ok) {
    level = "warn";
    text = "Calls work over a WebSocket (HTTPS): WebRTC does not get through. Audio has a little more delay.";
    advice.push(`Allow ${udp} from browsers to ${address}, or at least TCP port ${tcpPort} to it without a proxy that inspects or re-encrypts the traffic.`);
  } else {
    level = "fail";
    text = "Calls cannot reach the relay from this network.";
    advice.push(`Allow WebSocket upgrades (HTTP "Upgrade: websocket") to ${location.host}: proxies that inspect HTTPS must pass them.`);
    advice.push(`Better: allow ${udp}, or TCP port ${tcpPort}, from browsers to ${address}.`);
  }
  if (!r("https").ok) {
    level = "fail";
    advice.push("Serve the page over HTTPS: browsers give the microphone only to secure pages.");
  }
  if (!r("microphone").ok) {
    if (level === "ok") level = "warn";
    advice.push("Allow this site to use the microphone (the browser's site settings, or a managed-browser policy).");
  }
  if (!ice.tcp && !r("webrtc_udp").ok) advice.push("The relay offers no ICE-TCP candidate (RELAY_ICE_TCP=0): its operator may turn it on.");
  return { level, text, advice };
}

function render(results, running) {
  const rows = CHECKS.map(([key, label]) => {
    const result = results[key];
    const state = !result ? "" : result.ok ? (result.warn ? "warn" : "ok") : result.skipped ? "" : "fail";
    const word = !result ? (running ? "checking…" : "") : result.ok ? "works" : result.skipped ? "not offered" : "fails";
    return `<tr data-check="${key}"><th scope="row">${label}</th><td class="result" data-state="${state}">${word}</td><td>${escape(result?.detail || "")}</td></tr>`;
  });
  $("results").innerHTML = rows.join("");
}

function escape(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function run() {
  const results = {};
  render(results, true);
  $("verdict").textContent = "Checking…";
  $("verdict").dataset.level = "";
  await Promise.all(
    CHECKS.map(async ([key, , check]) => {
      try {
        results[key] = await check();
      } catch (err) {
        results[key] = { ok: false, detail: err?.message || String(err) };
      }
      render(results, true);
    }),
  );
  const { level, text, advice } = verdict(results, location.hostname);
  $("verdict").textContent = text;
  $("verdict").dataset.level = level;
  $("advice").innerHTML = advice.length ? advice.map((a) => `<li>${escape(a)}</li>`).join("") : "<li>Nothing to change.</li>";
  $("report").textContent = JSON.stringify(
    { page: location.origin, userAgent: navigator.userAgent, time: new Date().toISOString(), verdict: text, results },
    null,
    2,
  );
  return { level, results };
}

function playTone() {
  const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
  const context = new Context();
  const oscillator = context.createOscillator();
  const gain = context.createGain();
  gain.gain.value = 0.2;
  oscillator.frequency.value = 440;
  oscillator.connect(gain).connect(context.destination);
  oscillator.start();
  oscillator.stop(context.currentTime + 0.6);
  oscillator.onended = () => context.close();
}

window.relayCheck = { done: run() };
$("run").addEventListener("click", () => {
  window.relayCheck.done = run();
});
$("tone").addEventListener("click", playTone);
