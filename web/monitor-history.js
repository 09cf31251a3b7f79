// The console's history: recordings found by transcript words, date and outcome
// (GET /api/recordings, paged), and one recording played with its waveform and its
// transcript in step (the line being spoken is highlighted; a click on a line seeks).

import {
  $,
  api,
  apiBlob,
  element,
  formatDuration,
  formatTime,
  probe,
  setStatus,
} from "./monitor-common.js";

const PAGE = 20;
const WAVE_POINTS = 600;
const SEEK_STEP_SECS = 5;
const SEEK_SLACK_SECS = 0.02; // a seek lands on a sample: just before the line still shows it
const SVG_NS = "http://www.w3.org/2000/svg";

const history = {
  started: false,
  params: null,
  nextOffset: null,
  recording: null, // metadata of the one in the player
  lines: [], // [{start, end, role, text, li}]
  audioUrl: null,
};

export function startHistory() {
  if (history.started) return;
  history.started = true;
  search();
}

function localDay(value, plusDays = 0) {
  if (!value) return null;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).getTime() / 1000;
}

function searchParams() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  const q = $("history-q").value.trim();
  const outcome = $("history-outcome").value.trim();
  const since = localDay($("history-since").value);
  const until = localDay($("history-until").value, 1); // the whole "until" day
  if (q) params.set("q", q);
  if (outcome) params.set("outcome", outcome);
  if (since != null) params.set("since", String(since));
  if (until != null) params.set("until", String(until));
  return params;
}

async function search(more = false) {
  if (!more) {
    history.params = searchParams();
    history.nextOffset = 0;
    $("recordings").replaceChildren();
  }
  const params = new URLSearchParams(history.params);
  params.set("offset", String(history.nextOffset || 0));
  try {
    const page = await api(`/api/recordings?${params}`);
    probe.history.searches += 1;
    probe.history.results = [...(more ? probe.history.results : []), ...page.data.map((r) => r.call_id)];
    $("recordings").append(...page.data.map(resultRow));
    history.nextOffset = page.next_offset;
    $("history-more").hidden = !page.has_more;
    const count = $("recordings").children.length;
    $("history-summary").textContent =
      `${count} recording${count === 1 ? "" : "s"}${page.has_more ? " so far" : ""}` +
      (page.truncated ? " (search stopped early: narrow the dates to look further back)" : "");
    for (const r of page.data) addOutcome(r.outcome);
  } catch (error) {
    setStatus(`Cannot search recordings: ${error.message}`, true);
  }
}

function addOutcome(outcome) {
  const list = $("outcomes");
  if (!outcome || [...list.options].some((o) => o.value === outcome)) return;
  list.append(element("option", { value: outcome }));
}

function resultRow(recording) {
  const match = recording.matches?.[0]?.text || "";
  const button = element(
    "button",
    { type: "button", class: "console-result", "data-call-id": recording.call_id },
    element("span", { class: "console-result-when", text: formatTime(recording.started_at) }),
    element("span", {
      class: "console-result-meta",
      text: `${formatDuration(recording.duration_secs || 0)} · ${recording.outcome || recording.status || ""}`,
    }),
    element("span", { class: "console-result-id", text: recording.call_id }),
    element("span", { class: "console-result-match", text: match }),
  );
  button.addEventListener("click", () => openRecording(recording));
  return element("li", {}, button);
}

// -- the player ----------------------------------------------------------------------------

async function openRecording(recording) {
  const id = encodeURIComponent(recording.call_id);
  history.recording = recording;
  for (const b of document.querySelectorAll(".console-result")) {
    b.setAttribute("aria-current", String(b.dataset.callId === recording.call_id));
  }
  $("player").hidden = false;
  $("player-title").textContent = `Recording ${recording.call_id}`;
  $("player-meta").textContent =
    `${formatTime(recording.started_at)} · ${formatDuration(recording.duration_secs || 0)} · ` +
    `${recording.outcome || recording.status || ""} · ${recording.model || ""}`;
  try {
    const [blob, wave, transcript] = await Promise.all([
      apiBlob(`/api/recordings/${id}/audio.wav`),
      api(`/api/recordings/${id}/waveform?points=${WAVE_POINTS}`),
      apiBlob(`/api/recordings/${id}/transcript.jsonl`).then((b) => b.text()),
    ]);
    if (history.recording !== recording) return; // another one was chosen meanwhile
    if (history.audioUrl) URL.revokeObjectURL(history.audioUrl);
    history.audioUrl = URL.createObjectURL(blob);
    $("player-audio").src = history.audioUrl;
    drawWaveform(wave);
    showTranscript(recording, transcript);
  } catch (error) {
    setStatus(`Cannot open the recording: ${error.message}`, true);
  }
}

function drawWaveform(wave) {
  const svg = $("waveform");
  const n = Math.max(1, wave.caller.length);
  svg.setAttribute("viewBox", `0 0 ${n} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  // Scaled to the loudest peak of either side, so a quiet call is still readable.
  const scale = 48 / Math.max(0.05, ...wave.caller, ...wave.agent);
  const path = (values, mid, sign) =>
    values.map((v, i) => `M${i + 0.5},${mid}v${(sign * Math.max(0.5, v * scale)).toFixed(1)}`).join("");
  const shape = (cls, d) => {
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("class", cls);
    p.setAttribute("d", d);
    return p;
  };
  const head = document.createElementNS(SVG_NS, "line");
  head.id = "playhead";
  head.setAttribute("y1", "0");
  head.setAttribute("y2", "100");
  svg.replaceChildren(
    shape("wave-caller", path(wave.caller, 50, -1)),
    shape("wave-agent", path(wave.agent, 50, 1)),
    head,
  );
  updatePlayhead();
}

function showTranscript(recording, text) {
  const t0 = recording.started_at || 0;
  const entries = [];
  for (const line of text.split("\n")) {
    try {
      const entry = JSON.parse(line);
      if (typeof entry.text === "string" && typeof entry.t === "number") entries.push(entry);
    } catch {
      // an empty or torn line (a crash cut it): not a turn
    }
  }
  // A line is said before its completion time (t): it is active from the previous line's
  // completion to its own.
  history.lines = entries.map((e, i) => {
    const end = Math.max(0, e.t - t0);
    const start = i === 0 ? 0 : Math.max(0, entries[i - 1].t - t0);
    const button = element(
      "button",
      { type: "button", class: "console-line" },
      element("span", { class: "console-line-time", text: formatDuration(start) }),
      element("span", { class: "monitor-role", text: e.role === "user" ? "Caller" : "Assistant" }),
      element("span", { text: e.text }),
    );
    const li = element("li", { "data-role": e.role }, button);
    button.addEventListener("click", () => seek(start));
    return { start, end, role: e.role, text: e.text, li };
  });
  $("player-transcript").replaceChildren(...history.lines.map((l) => l.li));
  probe.history.lines = history.lines.map(({ start, end, text }) => ({ start, end, text }));
  highlight();
}

function seek(secs) {
  const audio = $("player-audio");
  audio.currentTime = Math.max(0, Math.min(secs, audio.duration || secs));
  highlight();
  updatePlayhead();
}

function highlight() {
  const t = $("player-audio").currentTime;
  let active = -1;
  history.lines.forEach((line, i) => {
    if (line.start <= t + SEEK_SLACK_SECS) active = i;
  });
  history.lines.forEach((line, i) => line.li.toggleAttribute("data-active", i === active));
  if (active !== probe.history.activeLine && active >= 0) {
    history.lines[active].li.scrollIntoView({ block: "nearest" });
  }
  probe.history.activeLine = active;
}

function updatePlayhead() {
  const audio = $("player-audio");
  const svg = $("waveform");
  const n = Number(svg.getAttribute("viewBox")?.split(" ")[2] || 1);
  const duration = audio.duration || history.recording?.duration_secs || 0;
  const x = duration > 0 ? (audio.currentTime / duration) * n : 0;
  const head = $("playhead");
  if (head) {
    head.setAttribute("x1", String(x));
    head.setAttribute("x2", String(x));
  }
  svg.setAttribute("aria-valuemax", String(Math.round(duration)));
  svg.setAttribute("aria-valuenow", String(Math.round(audio.currentTime)));
  svg.setAttribute("aria-valuetext", `${formatDuration(audio.currentTime)} of ${formatDuration(duration)}`);
}

async function download(name) {
  const recording = history.recording;
  if (!recording) return;
  try {
    const blob = await apiBlob(`/api/recordings/${encodeURIComponent(recording.call_id)}/${name}`);
    const url = URL.createObjectURL(blob);
    const link = element("a", { href: url, download: `${recording.call_id}-${name}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    setStatus(`Cannot download ${name}: ${error.message}`, true);
  }
}

// -- wiring --------------------------------------------------------------------------------

$("history-form").addEventListener("submit", (e) => {
  e.preventDefault();
  search();
});
$("history-more").addEventListener("click", () => search(true));
for (const button of document.querySelectorAll("[data-download]")) {
  button.addEventListener("click", () => download(button.dataset.download));
}
const audio = $("player-audio");
for (const type of ["timeupdate", "seeked", "loadedmetadata"]) {
  audio.addEventListener(type, () => {
    highlight();
    updatePlayhead();
  });
}
$("waveform").addEventListener("click", (e) => {
  const box = e.currentTarget.getBoundingClientRect();
  const duration = audio.duration || 0;
  if (duration > 0 && box.width > 0) seek(((e.clientX - box.left) / box.width) * duration);
});
$("waveform").addEventListener("keydown", (e) => {
  const step = { ArrowRight: SEEK_STEP_SECS, ArrowLeft: -SEEK_STEP_SECS }[e.key];
  if (step) {
    e.preventDefault();
    seek(audio.currentTime + step);
  } else if (e.key === "Home" || e.key === "End") {
    e.preventDefault();
    seek(e.key === "Home" ? 0 : audio.duration || 0);
  }
});
